"""The webhook lane: claims due deliveries (SKIP LOCKED, per endpoint), posts them signed,
and writes the results in batches.

Each endpoint has its own slots (OUTBOXD_HOOKS__CONCURRENCY) and its own circuit breaker:
after OUTBOXD_HOOKS__BREAKER_FAILURES failures in a row it gets one probe per
OUTBOXD_HOOKS__BREAKER_SECONDS and nothing else, so a dead or slow endpoint never takes
another's turn. A failed POST is retried with exponential backoff and full jitter until
the retry window (24 h) is over; then the delivery is ``failed`` and kept for replay.
Deliveries of a daemon that died mid-POST are returned to pending when their lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from daemon.delivery.breaker import CircuitBreaker
from daemon.delivery.retry import backoff_delay
from daemon.feedback import outbound
from daemon.hooks import metrics, sender
from daemon.hooks.store import Delivery, Endpoint, HookStore, Result
from daemon.settings.hooks import HookSettings
from outbox import errors

logger = logging.getLogger(__name__)

#: Results are written at most this long after their POST ended, or sooner in batches.
FLUSH_SECONDS = 0.05
FLUSH_BATCH = 200


class HookLane:
    """Posts the events of ``outbox.webhook_delivery`` until stopped."""

    def __init__(
        self,
        store: HookStore,
        settings: HookSettings,
        *,
        worker_id: str,
        grace_seconds: float = 30.0,
        retention_seconds: float | None = None,
        session_factory: Callable[[outbound.Allowlist], aiohttp.ClientSession] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.grace_seconds = grace_seconds
        self.retention_seconds = retention_seconds
        self.allow = outbound.Allowlist.parse(settings.allow_private)
        self._session_factory = session_factory or sender.open_session
        self._in_flight: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        self._breakers: dict[int, CircuitBreaker] = {}
        #: Endpoints whose last claim filled every free slot: a freed slot claims again.
        self._saturated: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[Result] = []
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        #: Test signal: set whenever results were written.
        self.written = asyncio.Event()

    def wake(self) -> None:
        """New deliveries were committed (NOTIFY outbox_webhook) or were replayed."""
        self._wake.set()

    def breaker(self, endpoint_id: int) -> CircuitBreaker:
        if endpoint_id not in self._breakers:
            self._breakers[endpoint_id] = CircuitBreaker(
                f"webhook-{endpoint_id}", self.settings.breaker_seconds
            )
        return self._breakers[endpoint_id]

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim and post until ``stopping`` is set; then let in-flight POSTs finish within
        the grace period and write every result."""
        session = self._session_factory(self.allow)
        flusher = asyncio.create_task(self._flush_loop(), name="hooks-flush")
        try:
            await self._claim_loop(session, stopping)
            await self._drain()
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._flush()
            await session.close()

    # -- claiming ------------------------------------------------------------------------
    async def _claim_loop(self, session: aiohttp.ClientSession, stopping: asyncio.Event) -> None:
        failures = 0
        next_reap = 0.0
        while not stopping.is_set():
            self._wake.clear()
            delay = self.settings.poll_interval
            try:
                if time.monotonic() >= next_reap:
                    await self._maintain()
                    next_reap = time.monotonic() + max(self.settings.lease_seconds / 4, 1.0)
                claimed = await self._claim_once(session)
                failures = 0
                if claimed:
                    delay = 0.0 if self._saturated else delay
            except errors.DatabaseError as exc:
                failures += 1
                delay = min(self.settings.poll_interval, 0.5 * 2**failures)
                logger.warning("webhook lane: %s", exc, extra={"action": "webhook"})
            if delay:
                await _first(stopping, self._wake, delay)

    async def _claim_once(self, session: aiohttp.ClientSession) -> int:
        endpoints = {e.id: e for e in await self.store.endpoints()}
        slots = {e: self._free_slots(e) for e in endpoints}
        deliveries = await self.store.claim(
            self.worker_id, self.settings.lease_seconds, _capped(slots, self.settings.batch_size)
        )
        claimed: dict[int, int] = {}
        for delivery in deliveries:
            claimed[delivery.endpoint_id] = claimed.get(delivery.endpoint_id, 0) + 1
            self._start(session, endpoints[delivery.endpoint_id], delivery)
        self._saturated = {e for e, n in claimed.items() if n >= slots.get(e, 0)}
        return len(deliveries)

    async def _maintain(self) -> None:
        """Leases of lost workers, the gauges, retention."""
        if reaped := await self.store.reap():
            logger.warning(
                "%d webhook deliveries of a lost worker will be retried", reaped,
                extra={"action": "reap"},
            )  # fmt: skip
        for status, count in (await self.store.counts()).items():
            metrics.DELIVERIES.labels(status).set(count)
        if self.retention_seconds is not None:
            await self.store.purge(self.retention_seconds)

    def _free_slots(self, endpoint_id: int) -> int:
        busy = self._in_flight.get(endpoint_id, 0)
        breaker = self.breaker(endpoint_id)
        until_probe = breaker.until_probe()
        if until_probe is None:
            return max(self.settings.concurrency - busy, 0)
        if until_probe == 0 and busy == 0:
            breaker.probe_claimed()
            return 1
        return 0

    def _start(self, session: aiohttp.ClientSession, endpoint: Endpoint, item: Delivery) -> None:
        self._in_flight[endpoint.id] = self._in_flight.get(endpoint.id, 0) + 1
        metrics.IN_FLIGHT.inc()
        task = asyncio.create_task(self._deliver(session, endpoint, item), name=f"hook-{item.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- posting -------------------------------------------------------------------------
    async def _deliver(
        self, session: aiohttp.ClientSession, endpoint: Endpoint, item: Delivery
    ) -> None:
        started = time.monotonic()
        try:
            answer = await sender.post(
                session,
                endpoint,
                item,
                allow=self.allow,
                seconds=self.settings.timeout,
                max_body_bytes=self.settings.max_body_bytes,
            )
        finally:
            self._in_flight[endpoint.id] -= 1
            metrics.IN_FLIGHT.dec()
            # Claim again once half the slots of a busy endpoint are free: a claim per
            # finished POST would cost the database more than the POSTs.
            free = self.settings.concurrency - self._in_flight[endpoint.id]
            if endpoint.id in self._saturated and free >= max(self.settings.concurrency // 2, 1):
                self._wake.set()
        metrics.POST_SECONDS.observe(time.monotonic() - started)
        self._record(endpoint, item, answer)

    def _record(self, endpoint: Endpoint, item: Delivery, answer: sender.Answer) -> None:
        breaker = self.breaker(endpoint.id)
        window = self.settings.retry_window_seconds
        if answer.delivered:
            self._failures[endpoint.id] = 0
            breaker.close()
            delay = 0.0
        elif answer.refused:
            delay = window + 1.0  # past the window: failed now, kept for replay
        else:
            self._failures[endpoint.id] = failures = self._failures.get(endpoint.id, 0) + 1
            if failures >= self.settings.breaker_failures:
                breaker.open(f"{failures} failures in a row, last: {answer.error}")
            delay = backoff_delay(
                item.attempts,
                base=self.settings.retry_base_seconds,
                cap=self.settings.retry_max_seconds,
            )
        if not answer.delivered:
            logger.info(
                "webhook %s to endpoint %d failed (attempt %d): %s",
                item.type, endpoint.id, item.attempts, answer.error,
                extra={"action": "webhook", "endpoint_id": endpoint.id},
            )  # fmt: skip
        result = Result(
            item.id, item.attempts, answer.delivered, answer.error, answer.http_status, delay
        )
        self._results.append(result)
        if len(self._results) >= FLUSH_BATCH:
            self._flush_now.set()

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            # Their leases end and the reaper retries them: at least once, never lost.
            logger.warning(
                "cancelled %d webhook POSTs still running after the grace period", len(pending),
                extra={"action": "stop"},
            )  # fmt: skip
            await asyncio.wait(pending)

    # -- writing results -----------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await _first(self._flush_now, None, FLUSH_SECONDS)
            self._flush_now.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            written = await asyncio.shield(
                self.store.complete(batch, self.worker_id, self.settings.retry_window_seconds)
            )
        except errors.DatabaseError as exc:
            # Kept for the next flush; should the lease end first, the delivery is retried.
            logger.warning("writing webhook results: %s", exc, extra={"action": "webhook"})
            self._results[:0] = batch
            await asyncio.sleep(0.5)
            return
        for status in written.values():
            metrics.ATTEMPTS.labels("retry" if status == "pending" else status).inc()
        self.written.set()


def _capped(slots: dict[int, int], total: int) -> dict[int, int]:
    """At most ``total`` slots, shared out in turn so every endpoint gets some."""
    capped = dict.fromkeys(slots, 0)
    left = total
    while left > 0 and any(capped[e] < n for e, n in slots.items()):
        for endpoint, wanted in slots.items():
            if left and capped[endpoint] < wanted:
                capped[endpoint] += 1
                left -= 1
    return capped


async def _first(event: asyncio.Event, other: asyncio.Event | None, seconds: float) -> None:
    """Wait until ``event`` (or ``other``) is set, or ``seconds`` pass."""
    waits = [asyncio.ensure_future(event.wait())]
    if other is not None:
        waits.append(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
