"""How :mod:`daemon.main` assembles the delivery path: providers, dispatcher, rate limiters,
lanes. Apart from the lifecycle so that each reads in one sitting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack

from daemon import providers
from daemon.campaigns.links import ConfirmLinks
from daemon.delivery.brands import BrandBook
from daemon.delivery.completer import Completer
from daemon.delivery.dispatch import Dispatcher, Finisher, LinkBuilder
from daemon.delivery.lane import Lane
from daemon.delivery.person_links import PersonLinks
from daemon.delivery.ratelimit import RateLimiter
from daemon.delivery.render import Renderer
from daemon.delivery.render_threads import RenderThreads
from daemon.providers.base import Provider
from daemon.providers.inapp import InappProvider
from daemon.settings import Settings
from outbox import errors
from outbox.models import Channel
from outbox.store import Store

logger = logging.getLogger(__name__)


def build_providers(settings: Settings, overrides: Mapping[str, Provider]) -> dict[str, Provider]:
    """Each channel's provider: a test's override, else the configured one (not opened yet,
    so that a wrapper such as the SMS spend cap can still take its place)."""
    return {
        Channel.EMAIL.value: overrides.get("email") or providers.build_email(settings),
        Channel.SMS.value: overrides.get("sms") or providers.build_sms(settings),
        Channel.INAPP.value: overrides.get("inapp") or InappProvider(),
    }


async def open_providers(channel_providers: Mapping[str, Provider], stack: AsyncExitStack) -> None:
    """Open every provider; ``stack`` closes them."""
    for provider in channel_providers.values():
        await provider.open()
        stack.push_async_callback(provider.close)


def dispatcher(
    settings: Settings,
    channel_providers: Mapping[str, Provider],
    *,
    links: LinkBuilder,
    keys: Sequence[bytes],
    finish: Finisher | None,
    render_threads: RenderThreads,
    brands: BrandBook,
    on_paused: Callable[[str, str], None],
    on_throttled: Callable[[str], None],
) -> Dispatcher:
    """The dispatcher of every channel, with the links messages carry."""
    return Dispatcher(
        renderer=Renderer.from_settings(settings),
        providers=channel_providers,
        worker=settings.worker,
        on_paused=on_paused,
        on_throttled=on_throttled,
        links=ConfirmLinks(
            PersonLinks(
                links,
                public_url=settings.links_base_url,
                keys=keys,
                mailto=settings.email.list_unsubscribe_mailto,
            ),
            public_url=settings.links_base_url,
            keys=keys,
            ttl_seconds=settings.campaigns.confirm_token_days * 86400,
        ),
        finish=finish,
        render_threads=render_threads,
        brands=brands,
    )


async def limiter(
    settings: Settings, store: Store, channel: str, provider: Provider
) -> RateLimiter | None:
    """The channel's cluster-wide limiter: the configured rate, else the provider's.
    In-app items are rows in our own database: no limit but the completer's pace."""
    rates = {"email": settings.email.rate, "sms": settings.sms.rate}
    rate = rates.get(channel, 0.0)
    if not rate:
        account_rate = getattr(provider, "max_send_rate", None)
        if account_rate is not None:
            rate = await account_rate() or 0.0
            if rate:
                logger.info("%s: using the account's max send rate %.1f/s", channel, rate)
    if not rate:
        return None
    rate_limiter = RateLimiter(store, channel, rate)
    await rate_limiter.start()
    return rate_limiter


def lane(
    settings: Settings,
    channel: str,
    provider: Provider,
    *,
    store: Store,
    dispatcher: Dispatcher,
    completer: Completer,
    worker_id: str,
    limiter: RateLimiter | None,
) -> Lane:
    """The claim loop of ``channel``, shaped by what its provider can take."""
    return Lane(
        channel,
        store=store,
        dispatcher=dispatcher,
        completer=completer,
        worker=settings.worker,
        worker_id=worker_id,
        send_timeout=settings.send_timeout(channel),
        render_timeout=settings.worker.render_timeout,
        limiter=limiter,
        concurrency=getattr(provider, "max_in_flight", None),
        destination=getattr(provider, "destination", None),
        per_destination=getattr(provider, "per_destination", None),
    )


class Throttles:
    """Records a provider's throttling in the channel's limiter, in the background; the
    writes still running at shutdown are awaited (a bounded time), not abandoned."""

    def __init__(self, limiters: Mapping[str, RateLimiter]) -> None:
        self.limiters = limiters
        self._tasks: set[asyncio.Task[None]] = set()

    def on_throttled(self, channel: str) -> None:
        rate_limiter = self.limiters.get(channel)
        if rate_limiter is None:
            return
        task = asyncio.create_task(self._back_off(rate_limiter), name=f"throttle-{channel}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, grace: float) -> None:
        """Let the back-offs still being written finish (cancelled after ``grace`` s)."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    @staticmethod
    async def _back_off(rate_limiter: RateLimiter) -> None:
        try:
            await rate_limiter.throttled()
        except errors.DatabaseError as exc:
            logger.warning("could not record throttling: %s", exc)
