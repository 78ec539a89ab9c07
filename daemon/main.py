"""The daemon's lifecycle: one AsyncExitStack owns resources, one TaskGroup owns loops.

Shutdown is by event, not cancellation: stop claiming, let in-flight sends finish within
the grace period (then cancel them), write every result, close resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from daemon import db, keys, metrics, sdnotify, wiring
from daemon.campaigns import loops as campaign_loops
from daemon.campaigns.tracking import Tracker
from daemon.delivery.brands import BrandBook
from daemon.delivery.completer import Completer
from daemon.delivery.dispatch import Finisher, LinkBuilder
from daemon.delivery.holds import Holds
from daemon.delivery.lane import Lane
from daemon.delivery.links import Links
from daemon.delivery.ratelimit import RateLimiter
from daemon.delivery.reaper import Reaper
from daemon.delivery.render_threads import RenderThreads
from daemon.delivery.wakeup import WakeupListener
from daemon.feedback import sms_receipts
from daemon.hooks import loops as hook_loops
from daemon.http import app as http_app
from daemon.http.state import ServiceState
from daemon.people import loops as people_loops
from daemon.people.profiles import PeopleStore
from daemon.providers.base import Provider
from daemon.settings import Settings
from outbox import errors
from outbox.store import Completion, Store

logger = logging.getLogger(__name__)


def make_worker_id() -> str:
    """Unique per process: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Daemon:
    """One outboxd process: claim loops per channel, completer, reaper, listener, HTTP."""

    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str,
        worker_id: str | None = None,
        provider_overrides: Mapping[str, Provider] | None = None,
        links: LinkBuilder | None = None,
    ) -> None:
        self.settings = settings
        self.dsn = dsn
        self.worker_id = worker_id or make_worker_id()
        self.provider_overrides = dict(provider_overrides or {})
        self.signing_keys = keys.signing_keys(settings)
        self.brands = BrandBook(settings.brand)
        self.links: LinkBuilder = links or Links(
            public_url=settings.links_base_url,
            keys=self.signing_keys,
            mailto=settings.email.list_unsubscribe_mailto,
            brand_url=self.brands.unsubscribe_base_url,
        )
        # SES counts opens and clicks itself; the mail we build ourselves gets our links.
        self.tracker: Finisher | None = (
            Tracker(base_url=settings.links_base_url, keys=self.signing_keys)
            if settings.tracking.enabled and settings.email.provider in ("smtp", "file")
            else None
        )
        self.lanes: dict[str, Lane] = {}
        self.completer: Completer | None = None
        self.store: Store | None = None
        self.listener: WakeupListener | None = None
        self.limiters: dict[str, RateLimiter] = {}
        #: Rate back-offs recorded in the background (awaited at shutdown).
        self.throttles = wiring.Throttles(self.limiters)
        #: The side loop that failed, if one did (the daemon then stops and exits non-zero).
        self.crashed: str | None = None
        #: The supervised loops (liveness: none may end before the daemon stops).
        self._loops: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()
        self.stopping = asyncio.Event()
        self.completion_listeners: list[Callable[[Sequence[Completion]], None]] = []
        self.http_port: int | None = None
        #: The admin server's port (metrics, health details).
        self.admin_port: int | None = None

    def request_stop(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        if not self.stopping.is_set():
            logger.info(
                "stopping: no new claims, finishing in-flight sends", extra={"action": "stop"}
            )
            sdnotify.stopping()
            self.stopping.set()

    def heartbeat_age(self) -> float:
        """Seconds since the slowest claim loop last completed a cycle."""
        if not self.lanes:
            return float("inf")
        oldest = min(lane.heartbeat for lane in self.lanes.values())
        return time.monotonic() - oldest

    def _service_state(self, store: Store) -> ServiceState:
        return ServiceState(
            settings=self.settings,
            store=store,
            signing_keys=self.signing_keys,
            stopping=self.stopping,
            heartbeat_age=self.heartbeat_age,
            paused=lambda: self.paused,
            dsn=self.settings.listen_dsn(self.dsn),
            listen=self.settings.listen_dsn(self.dsn) is not None,
            stalled_channels=self.stalled_channels,
            liveness=self.liveness_problems,
        )

    def stalled_channels(self) -> dict[str, float]:
        """Channels with sends in flight and no message reaching an end for long."""
        stalled = {c: lane.stalled_for() for c, lane in self.lanes.items()}
        return {c: age for c, age in stalled.items() if age is not None}

    def liveness_problems(self) -> list[str]:
        """A supervised loop that has ended, or results that have waited long unwritten."""
        reasons = [
            f"loop {task.get_name()} has stopped"
            for task in self._loops
            if task.done() and not self.stopping.is_set()
        ]
        limit = max(self.settings.worker.poll_interval * 6, 60.0)
        unwritten = self.completer.unwritten_for() if self.completer is not None else 0.0
        if unwritten > limit:
            reasons.append(f"results waiting unwritten for {unwritten:.0f}s")
        return reasons

    def _on_paused(self, channel: str, reason: str) -> None:
        self.lanes[channel].pause(reason)

    @property
    def paused(self) -> dict[str, str]:
        """Channels whose circuit is open, with the provider's reason."""
        return {c: lane.pause_reason for c, lane in self.lanes.items() if lane.pause_reason}

    def _wake_all(self) -> None:
        for lane in self.lanes.values():
            lane.wake()

    def _rescan_all(self) -> None:
        for lane in self.lanes.values():
            lane.rescan()

    async def run(self, *, until_empty: bool = False) -> None:
        """Run until :meth:`request_stop` (or, with ``until_empty``, until drained)."""
        settings = self.settings
        async with AsyncExitStack() as stack:
            pool = await db.create_pool(
                self.dsn,
                min_size=2,
                max_size=8,
                transaction_pooling=settings.transaction_pooling,
            )
            stack.push_async_callback(pool.close)
            listen_dsn = settings.listen_dsn(self.dsn)
            await db.ensure_schema(
                pool,
                migrate=settings.migrate_on_start,
                direct_dsn=settings.direct_dsn,
                transaction_pooling=settings.transaction_pooling,
            )
            self.store = store = Store(pool)
            await self.brands.load(pool)
            if await PeopleStore(pool).write_settings(hourly_cap=settings.people.hourly_cap):
                cap = settings.people.hourly_cap
                logger.info(
                    "per-person hourly cap is now %s", cap if cap is not None else "off",
                    extra={"action": "start"},
                )  # fmt: skip

            channel_providers = wiring.build_providers(settings, self.provider_overrides)
            # Before they open: the SMS spend cap wraps the SMS provider, and its opening
            # reads the month's spend so far.
            receipt_loops = sms_receipts.build(pool, settings, channel_providers)
            await wiring.open_providers(channel_providers, stack)
            render_threads = RenderThreads(settings.worker.render_timeout)
            stack.callback(render_threads.close)
            self.completer = completer = Completer(store, self.worker_id)
            completer.listeners.extend(self.completion_listeners)
            dispatcher = wiring.dispatcher(
                settings, channel_providers, links=self.links, keys=self.signing_keys,
                finish=self.tracker, render_threads=render_threads, brands=self.brands,
                on_paused=self._on_paused, on_throttled=self.throttles.on_throttled,
            )  # fmt: skip
            for channel, provider in channel_providers.items():
                limiter = await wiring.limiter(settings, store, channel, provider)
                if limiter is not None:
                    self.limiters[channel] = limiter
                self.lanes[channel] = wiring.lane(
                    settings, channel, provider, store=store, dispatcher=dispatcher,
                    completer=completer, worker_id=self.worker_id, limiter=limiter,
                )  # fmt: skip
            reaper = Reaper(
                store, settings.worker, gauges=settings.http.enabled and not until_empty
            )
            reaper.on_reaped.append(self._rescan_all)
            self.listener = listener = WakeupListener(listen_dsn, self._wake_all)
            holds = Holds(pool, self.lanes, settings.console.holds_interval)
            await holds.refresh()  # a channel paused by an operator claims nothing from the start
            if listen_dsn is None:
                logger.warning(
                    "behind a transaction pooler without OUTBOXD_DATABASE__LISTEN_URL: new "
                    "messages are found by polling every %gs, and in-app live streams are off",
                    settings.worker.poll_interval,
                    extra={"action": "listen"},
                )

            if settings.http.enabled and not until_empty:
                ports = await http_app.start(stack, self._service_state(store))
                self.http_port, self.admin_port = ports.public, ports.admin

            metrics.BUILD_INFO.info({"version": _version(), "worker": self.worker_id})
            logger.info(
                "outboxd running: email via %s, sms via %s",
                channel_providers["email"].name,
                channel_providers["sms"].name,
                extra={"action": "start"},
            )
            sdnotify.ready()
            self.started.set()
            try:
                async with asyncio.TaskGroup() as group:
                    loops = self._loops
                    loops.append(group.create_task(completer.run(), name="completer"))
                    side_loops: dict[str, Coroutine[Any, Any, None]] = {
                        "reaper": reaper.run(),
                        "listener": listener.run(),
                        "watchdog": self._watchdog(),
                        "holds": holds.run(self.stopping),
                    }
                    for name, loop in {
                        **receipt_loops,
                        **people_loops.build(pool, settings),
                        **campaign_loops.build(pool, settings),
                        "brands": self.brands.run,
                        **hook_loops.build(
                            pool, settings, dsn=listen_dsn, worker_id=self.worker_id
                        ),
                    }.items():
                        side_loops[name] = loop(self.stopping)
                    for name, coroutine in side_loops.items():
                        task = group.create_task(self._supervised(name, coroutine), name=name)
                        loops.append(task)
                    lane_tasks = [
                        group.create_task(lane.run(until_empty=until_empty), name=f"lane-{name}")
                        for name, lane in self.lanes.items()
                    ]
                    if not until_empty:
                        loops.extend(lane_tasks)
                    group.create_task(
                        self._shutdown(lane_tasks, reaper, until_empty), name="shutdown"
                    )
            finally:
                self.stopping.set()
        if self.crashed is not None:
            raise errors.OutboxError(f"the {self.crashed} loop failed; stopped after draining")

    async def _supervised(self, name: str, loop: Coroutine[Any, Any, None]) -> None:
        """Run a side loop; should it fail, stop the daemon the graceful way (sends in
        flight finish and their results are written) rather than cancel everything, and
        exit non-zero afterwards."""
        try:
            await loop
        except Exception:
            logger.exception("the %s loop failed: stopping", name, extra={"action": "stop"})
            self.crashed = self.crashed or name
            self.request_stop()

    async def _shutdown(
        self, lane_tasks: list[asyncio.Task[None]], reaper: Reaper, until_empty: bool
    ) -> None:
        if until_empty:
            lanes_done: asyncio.Future[Any] = asyncio.gather(*lane_tasks, return_exceptions=True)
            stop_requested: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait({lanes_done, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            stop_requested.cancel()
        else:
            await self.stopping.wait()
        self.stopping.set()
        stop_began = time.monotonic()
        for lane in self.lanes.values():
            lane.stop()
        grace = self.settings.worker.grace_seconds
        # A claim in flight when the stop came still hands its rows to the send queue: let
        # the claim loops return first, so that the drain gives those rows back too.
        if lane_tasks:
            await asyncio.wait(lane_tasks, timeout=grace)
        cancelled = await asyncio.gather(*(lane.drain(grace) for lane in self.lanes.values()))
        if sum(cancelled):
            logger.warning(
                "cancelled %d sends still running after the %.0fs grace period; "
                "they will be retried",
                sum(cancelled),
                grace,
                extra={"action": "stop"},
            )
        await self.throttles.wait(grace=2.0)
        assert self.completer is not None
        # Bounded: with the database down, the results left are the reaper's to return.
        self.completer.stop(give_up_after=max(stop_began + grace - time.monotonic(), 5.0))
        reaper.stop()
        assert self.listener is not None
        self.listener.stop()

    async def _watchdog(self) -> None:
        """Tell systemd we are alive only while the claim loops are."""
        interval = sdnotify.watchdog_interval()
        limit = max(self.settings.worker.poll_interval * 3, 30.0)
        while not self.stopping.is_set():
            age = self.heartbeat_age()
            metrics.HEARTBEAT.set(time.time() - age)
            if interval is not None and age < limit:
                sdnotify.watchdog()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout((interval or 10.0) / 2):
                    await self.stopping.wait()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("outboxd")
    except PackageNotFoundError:
        return "unknown"
