"""Delivers one claimed message: checks, render, send, and the decision about the result.

Every outcome, including bugs in a provider, becomes a :class:`~outbox.store.Completion`;
nothing raised here can stop the daemon or another message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from daemon import addresses, metrics
from daemon.delivery import retry
from daemon.delivery.brands import BrandBook
from daemon.delivery.render import Renderer, valid_locale
from daemon.delivery.render_threads import RenderOverrun, RenderThreads
from daemon.providers.base import Provider
from daemon.settings import WorkerSettings
from outbox import errors
from outbox.models import Channel, Message, Rendered, Status
from outbox.store import MAX_CONTEXT_BYTES, Completion

logger = logging.getLogger(__name__)


#: Builds the extra template context and email headers for a message (unsubscribe links).
LinkBuilder = Callable[[Message], tuple[Mapping[str, Any], Mapping[str, str]]]
#: Changes a rendered message before it is sent (open and click tracking).
Finisher = Callable[[Message, Rendered], Rendered]


def _no_links(message: Message) -> tuple[Mapping[str, Any], Mapping[str, str]]:
    return {}, {}


_VALIDATORS: dict[str, Callable[[str], str]] = {
    Channel.EMAIL.value: addresses.validate_email,
    Channel.SMS.value: addresses.validate_phone,
    # An in-app row's recipient is a person's key, checked by the claim (the person must
    # still exist): nothing to validate here.
    Channel.INAPP.value: str,
}


class Dispatcher:
    """Turns a claimed :class:`Message` into a :class:`Completion`."""

    def __init__(
        self,
        *,
        renderer: Renderer,
        providers: Mapping[str, Provider],
        worker: WorkerSettings,
        links: LinkBuilder = _no_links,
        finish: Finisher | None = None,
        brands: BrandBook | None = None,
        on_paused: Callable[[str, str], None] | None = None,
        on_throttled: Callable[[str], None] | None = None,
        render_threads: RenderThreads | None = None,
    ) -> None:
        self.renderer = renderer
        #: Where messages are prepared (off the event loop, within the render budget);
        #: None prepares them inline (unit tests).
        self.render_threads = render_threads
        self.providers = providers
        self.worker = worker
        self.links = links
        self.finish = finish
        self.brands = brands
        self.on_paused = on_paused
        self.on_throttled = on_throttled
        # Labelled children looked up once: a lookup takes a lock and costs microseconds.
        self._sent = {
            channel: (
                metrics.SENT.labels(channel, provider.name),
                metrics.SEND_SECONDS.labels(channel, provider.name),
            )
            for channel, provider in providers.items()
        }

    async def deliver(self, message: Message) -> Completion:
        """Run every step for one message and decide what happens to it.

        The caller bounds it by the channel's send timeout, and asks :meth:`timed_out` for
        the completion of a send it cut off.
        """
        provider = self.providers[message.channel]
        try:
            rendered = await self._prepare(message)
            started = time.perf_counter()
            # No timeout here: the caller enforces the send timeout (see daemon.delivery.deadlines).
            receipt = await provider.send(message, rendered)
            sent, send_seconds = self._sent[message.channel]
            send_seconds.observe(time.perf_counter() - started)
        except _Finished as done:
            return done.completion
        except errors.OutboxError as exc:
            return self._failed(message, provider.name, exc)
        except Exception as exc:  # a provider bug must not take the daemon down
            logger.exception(
                "unexpected error from provider",
                extra={"action": "send", "message_id": message.id, "provider": provider.name},
            )
            return self._failed(
                message,
                provider.name,
                errors.TransientError(f"unexpected {type(exc).__name__}: {exc}"),
            )
        sent.inc()
        return Completion(
            message.id,
            message.attempts,
            Status.SENT,
            provider=receipt.provider,
            provider_message_id=receipt.provider_message_id,
            inbox=receipt.item,
        )

    async def _prepare(self, message: Message) -> Rendered:
        threads = self.render_threads
        if threads is None:
            return self.prepare(message)
        try:
            # What a template's record of quick renders is kept under (render_trust), as
            # a log line names it.
            key = f"{message.channel} template {message.template!r}"
            if message.brand is not None:
                key += f" of brand {message.brand!r}"
            return await threads.run(self.prepare, message, key)
        except RenderOverrun:
            raise errors.TemplateError(
                f"template {message.template!r}: rendering took longer than its "
                f"{threads.budget:g}s budget (OUTBOXD_WORKER__RENDER_TIMEOUT); not sent"
            ) from None

    def timed_out(self, message: Message, after: float) -> Completion:
        """The completion for a send cut off after ``after`` seconds (retried with backoff)."""
        name = self.providers[message.channel].name
        reason = f"{name}: no answer within {after:g}s"
        return self._failed(message, name, errors.TransientError(reason))

    def prepare(self, message: Message) -> Rendered:
        """Checks before sending, then render; raises _Finished or an OutboxError."""
        if message.expires_at is not None and message.expires_at <= datetime.now(UTC):
            metrics.EXPIRED.labels(message.channel).inc()
            raise _Finished(
                Completion(
                    message.id,
                    message.attempts,
                    Status.EXPIRED,
                    error=f"expired at {message.expires_at.isoformat()} before it could be sent",
                )
            )
        if message.suppressed_reason is not None:
            metrics.SUPPRESSED.labels(message.channel).inc()
            raise _Finished(
                Completion(
                    message.id, message.attempts, Status.SUPPRESSED, error=message.suppressed_reason
                )
            )
        if message.context_bytes > MAX_CONTEXT_BYTES:
            raise errors.PermanentError(
                f"context is {message.context_bytes} bytes decoded, more than the "
                f"{MAX_CONTEXT_BYTES // 1024} KiB limit"
            )
        _VALIDATORS[message.channel](message.recipient)
        extra_context, headers = self.links(message)
        context = {
            **message.context,
            **extra_context,
            "recipient": message.recipient,
            "message_id": message.id,
        }
        locale = message.locale
        person = message.person
        if person is not None:
            context["person"] = person
            locale = _person_locale(message, person)
        # Brands: the one place the dispatcher looks at them (daemon.delivery.brands).
        branding = self.brands.of(message) if self.brands is not None else None
        rendered = self.renderer.render(
            channel=message.channel,
            template=message.template,
            context=context,
            locale=locale,
            brand=branding.template if branding is not None else None,
        )
        if branding is not None:
            rendered = rendered._replace(sender=branding.sender)
        if headers:
            rendered = rendered._replace(headers={**rendered.headers, **headers})
        if self.finish is not None:
            rendered = self.finish(message, rendered)
        return rendered

    def _failed(self, message: Message, provider: str, exc: errors.OutboxError) -> Completion:
        verdict = retry.decide(exc, message.attempts, self.worker)
        log_extra = {
            "action": "send",
            "message_id": message.id,
            "provider": provider,
            "channel": message.channel,
            "error": verdict.error,
        }
        if verdict.status is Status.PENDING:
            metrics.RETRIED.labels(message.channel, provider, verdict.kind).inc()
            if verdict.kind == "transient":
                logger.info(
                    "transient failure, retrying in %.1fs", verdict.retry_delay, extra=log_extra
                )
        else:
            metrics.FAILED.labels(message.channel, provider, verdict.kind).inc()
            logger.warning("failed for good (%s)", verdict.kind, extra=log_extra)
        if isinstance(exc, errors.ChannelPaused) and self.on_paused is not None:
            self.on_paused(message.channel, verdict.error)
        if isinstance(exc, errors.Throttled) and self.on_throttled is not None:
            self.on_throttled(message.channel)
        return Completion(
            message.id, message.attempts, verdict.status, error=verdict.error, provider=provider,
            retry_delay=verdict.retry_delay, refund=verdict.refund,
        )  # fmt: skip


def _person_locale(message: Message, person: Mapping[str, Any]) -> str | None:
    """The locale of a person's message: its own (notify copies the person's), else the
    person's current one. Either came from the person's profile, which nothing checks for
    spelling: one that cannot name a template variant means the plain parts, not a
    failure of every message to that person."""
    locale = message.locale or person.get("locale")
    if locale is not None and not valid_locale(locale):
        logger.warning(
            "locale %r of person %r is not a locale: using the plain template parts",
            locale, message.recipient_key,
            extra={"action": "render", "message_id": message.id},
        )  # fmt: skip
        return None
    return locale


class _Finished(Exception):
    """Delivery ended before sending (expired, suppressed) with this completion."""

    def __init__(self, completion: Completion) -> None:
        super().__init__(completion.status)
        self.completion = completion
