"""The claim loop of one channel: claims only as many rows as it has free send slots.

It sleeps until a NOTIFY arrives, a retry or scheduled message becomes due, or the
(jittered) poll interval passes; it never holds a row lock while a send runs: the claim
commits the lease, sends run as tasks, and the completer writes the results.

Each claim resumes its index scan where the previous one stopped (per priority). While a
long transaction anywhere in the database holds back cleanup, the index entries of rows
already claimed stay in the way, and a scan from the head would walk all of them every
time. A row can still become due behind that position (a lease returned by the reaper, an
insert committed late by a long transaction), so the lane scans from the head again
regularly: as often as keeps those scans under a tenth of its claim time, and at least
once per poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime

from daemon import metrics
from daemon.delivery.breaker import CircuitBreaker
from daemon.delivery.completer import Completer
from daemon.delivery.deadlines import Deadlines
from daemon.delivery.dispatch import Dispatcher
from daemon.delivery.ratelimit import RateLimiter
from daemon.delivery.send_queue import DestinationOf, SendQueue
from daemon.settings import WorkerSettings
from outbox import errors
from outbox.models import Message, Status
from outbox.store import ClaimPosition, Completion, Store

logger = logging.getLogger(__name__)
#: Our own generator: jitter never disturbs (or depends on) the global random state.
_jitter = random.Random()

#: Claim nothing while this many results per slot wait to be written (backpressure).
_COMPLETER_BACKLOG_PER_SLOT = 4
#: A scan from the head may come again after this many times its own duration.
_HEAD_SCAN_SPACING = 10.0


class Lane:
    """Claims and delivers the messages of one channel."""

    def __init__(
        self,
        channel: str,
        *,
        store: Store,
        dispatcher: Dispatcher,
        completer: Completer,
        worker: WorkerSettings,
        worker_id: str,
        send_timeout: float,
        render_timeout: float = 0.0,
        limiter: RateLimiter | None = None,
        concurrency: int | None = None,
        destination: DestinationOf | None = None,
        per_destination: int | None = None,
    ) -> None:
        self.channel = channel
        #: Sends in flight at most: the setting, or less when the provider takes fewer.
        self.concurrency = min(worker.concurrency, concurrency or worker.concurrency)
        self.store = store
        self.dispatcher = dispatcher
        self.completer = completer
        self.worker = worker
        self.worker_id = worker_id
        self.limiter = limiter
        #: Sends in flight, and claimed messages waiting for one, per destination when the
        #: provider has several (see daemon.delivery.send_queue). No row waits longer than
        #: half a send timeout before its own send, which ends within the render and send
        #: timeouts: with the lease longer than twice the send timeout plus the render
        #: timeout (a settings rule), no lease runs out.
        self.send_queue = SendQueue(
            concurrency=self.concurrency,
            # A backstop: the provider's own deadline and the render budget end it first.
            deadlines=Deadlines(send_timeout + render_timeout),
            # Half a timeout: the rest of the lease's margin is for writing the result.
            wait_limit=send_timeout / 2,
            send=dispatcher.deliver,
            timed_out=lambda message: dispatcher.timed_out(message, send_timeout + render_timeout),
            finished=self._finished,
            destination=destination,
            per_destination=per_destination,
        )
        self._in_flight_gauge = metrics.IN_FLIGHT.labels(channel)
        # A write by the completer can end backpressure as much as a finished send can.
        completer.listeners.append(lambda _written: self._slot_freed.set())
        # _event interrupts a sleep; _woken says whether to claim (True) or only to
        # recompute the sleep because a nearer retry was scheduled (False).
        self._event = asyncio.Event()
        self._woken = False
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._wake_at: float | None = None
        #: Monotonic time of the last successful claim query (readiness, watchdog).
        self.heartbeat = time.monotonic()
        #: Sends that neither finish nor fail for this long mean no progress (readiness).
        self.progress_bound = max(2 * (send_timeout + render_timeout), 5.0)
        # The first claim since a message last reached an end (sent, failed, ...): a
        # tarpit keeps sends in flight and this ever older.
        self._busy_since: float | None = None
        self.breaker = CircuitBreaker(channel, worker.pause_seconds)
        #: Per priority, where the next claim's scan starts; empty: from the head.
        self._after: dict[int, ClaimPosition] = {}
        self._head_scan_due = 0.0
        #: Why an operator paused the channel (outbox.channel_pause); None while not held.
        self.hold_reason: str | None = None

    # -- signals from outside ---------------------------------------------------------
    def wake(self) -> None:
        """New rows may be due (NOTIFY arrived, or a reconnect may have missed one)."""
        self._woken = True
        self._event.set()

    def rescan(self) -> None:
        """Rows may have become due behind the claim position (leases returned)."""
        self._head_scan_due = 0.0
        self.wake()

    def wake_in(self, seconds: float) -> None:
        """Make sure the loop looks again after ``seconds`` (a retry becomes due)."""
        at = time.monotonic() + max(seconds, 0.0)
        if self._wake_at is None or at < self._wake_at:
            self._wake_at = at
            self._event.set()

    def pause(self, reason: str) -> None:
        """The provider refuses every send: stop claiming, probe after the cool-down."""
        self.breaker.open(reason)
        self.send_queue.release()  # they would only meet the same refusal

    def hold(self, reason: str) -> None:
        """An operator paused the channel: claim nothing until :meth:`release_hold`."""
        if self.hold_reason is None:
            logger.warning(
                "%s channel held by an operator: %s", self.channel, reason,
                extra={"action": "pause", "channel": self.channel},
            )  # fmt: skip
            self.send_queue.release()
        self.hold_reason = reason

    def release_hold(self) -> None:
        """The operator's pause was lifted: claim again now."""
        if self.hold_reason is not None:
            self.hold_reason = None
            logger.warning("%s channel released", self.channel, extra={"action": "resume"})
            self.wake()

    @property
    def pause_reason(self) -> str | None:
        """Why the channel is paused; None while it is not."""
        return self.breaker.reason

    def stop(self) -> None:
        """Stop claiming; in-flight sends go on (see :meth:`drain`)."""
        self._stopping.set()
        self.send_queue.stop()
        self.wake()
        self._slot_freed.set()
        if self.limiter is not None:
            self.limiter.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the loop ----------------------------------------------------------------------
    async def run(self, *, until_empty: bool = False) -> None:
        """Claim and dispatch until stopped (or, with ``until_empty``, until drained)."""
        concurrency = self.concurrency
        batch_size = self.worker.batch_size
        # After a full claim, wait for a worthwhile number of free places instead of
        # claiming one row per round trip.
        refill = max(1, min(batch_size, concurrency) // 4)
        backlog = False
        db_failures = 0
        while not self.stopping:
            free = 2 * concurrency - self.send_queue.busy - self.send_queue.waiting
            if free <= 0 or (backlog and free < refill) or self._completer_congested():
                await self._wait_for_slot()
                continue
            if self.hold_reason is not None:
                if until_empty:
                    return
                self.heartbeat = time.monotonic()  # held on purpose: healthy
                await self._sleep_until(time.monotonic() + self.worker.poll_interval)
                self._woken = False
                continue
            want = min(free, batch_size)
            until_probe = self.breaker.until_probe()
            if until_probe is not None:
                if until_probe > 0:
                    await self._sleep_until(time.monotonic() + until_probe)
                    self._woken = False  # NOTIFY does not lift a pause
                    continue
                want = 1  # one probe per cool-down
                self.breaker.probe_claimed()
            if self.limiter is not None:
                want = await self.limiter.acquire(want)
                if not want:
                    break
            self._woken = False
            started = time.perf_counter()
            try:
                messages, from_head = await self._claim(want)
            except errors.DatabaseError as exc:
                if self.limiter is not None:
                    await self._give_back(want)
                db_failures += 1
                delay = min(0.2 * 2**db_failures, 10.0)
                logger.warning(
                    "claim failed, retrying in %.1fs: %s", delay, exc,
                    extra={"action": "claim", "channel": self.channel},
                )  # fmt: skip
                await self._sleep_until(time.monotonic() + delay)
                continue
            db_failures = 0
            self.heartbeat = time.monotonic()
            metrics.CLAIM_SECONDS.labels(self.channel).observe(time.perf_counter() - started)
            if self.limiter is not None and len(messages) < want:
                await self._give_back(want - len(messages))
            if messages:
                metrics.CLAIMED.labels(self.channel).inc(len(messages))
                if self._busy_since is None:
                    self._busy_since = time.monotonic()
                self.send_queue.add(messages)
            backlog = len(messages) == want
            if backlog:
                continue
            if until_empty:
                if not from_head:
                    self._head_scan_due = 0.0  # "empty" only counts from the head
                    continue
                if await self._drained():
                    return
                continue
            await self._wait_for_work()

    async def _claim(self, want: int) -> tuple[list[Message], bool]:
        """Claim up to ``want`` messages; also says whether the scan started at the head."""
        now = time.monotonic()
        from_head = now >= self._head_scan_due
        if from_head:
            self._after.clear()
        messages = await self.store.claim(
            self.channel, want, self.worker_id, self.worker.lease_seconds, self._after
        )
        if from_head:
            spacing = (time.monotonic() - now) * _HEAD_SCAN_SPACING
            self._head_scan_due = now + min(spacing, self.worker.poll_interval)
        for message in messages:  # in claim order: the last of each priority wins
            if message.not_before is not None:
                self._after[message.priority] = (message.not_before, message.id)
        return messages, from_head

    async def _drained(self) -> bool:
        """Drain mode: true once nothing is in flight, written or due soon."""
        if self.send_queue.busy or self.send_queue.waiting:
            await self._wait_for_slot()
            return False
        await self.completer.wait_idle()
        due = await self._next_due_delay()
        if due is None or due > self.worker.poll_interval:
            return True
        await self._sleep_until(time.monotonic() + due)
        return False

    async def _wait_for_slot(self) -> None:
        self._in_flight_gauge.set(self.send_queue.busy)
        self._slot_freed.clear()
        try:
            async with asyncio.timeout(self.worker.poll_interval):
                await self._slot_freed.wait()
        except TimeoutError:
            # All slots busy with slow sends is healthy: the loop itself is alive.
            self.heartbeat = time.monotonic()

    async def _give_back(self, unused: int) -> None:
        assert self.limiter is not None
        with contextlib.suppress(errors.DatabaseError):  # tokens refill with time anyway
            await self.limiter.release(unused)

    def _completer_congested(self) -> bool:
        return self.completer.backlog > self.concurrency * _COMPLETER_BACKLOG_PER_SLOT

    def stalled_for(self) -> float | None:
        """While sends are in flight: seconds since the first claim after a message last
        reached an end, when longer than :attr:`progress_bound`; else None."""
        if self._busy_since is None or not self.send_queue.busy:
            return None
        age = time.monotonic() - self._busy_since
        return age if age > self.progress_bound else None

    def _finished(self, completion: Completion) -> None:
        if completion.status is not Status.PENDING:
            self._busy_since = None
        if completion.status is Status.PENDING:
            self.wake_in(completion.retry_delay + 0.05)
        elif completion.status is Status.SENT:
            if self.breaker.reason is not None:
                self.wake()  # a probe went through: resume now, not after the cool-down
            self.breaker.close()
        self.completer.add(completion)
        self._slot_freed.set()

    async def _next_due_delay(self) -> float | None:
        try:
            due = await self.store.next_due(self.channel)
        except errors.DatabaseError:
            return self.worker.poll_interval
        if due is None:
            return None
        return max((due - datetime.now(UTC)).total_seconds(), 0.0)

    async def _wait_for_work(self) -> None:
        # Poll with jitter so that several daemons do not query in lockstep.
        timeout = self.worker.poll_interval * _jitter.uniform(0.8, 1.2)
        due = await self._next_due_delay()
        if due is not None:
            timeout = min(timeout, due + 0.01)
        await self._sleep_until(time.monotonic() + timeout, honour_retries=True)

    async def _sleep_until(self, deadline: float, *, honour_retries: bool = False) -> None:
        """Sleep until ``deadline``, or earlier for NOTIFY, stop or a nearer retry."""
        while not self._woken:
            now = time.monotonic()
            until = deadline
            if honour_retries and self._wake_at is not None:
                until = min(until, self._wake_at)
            if until <= now:
                break
            self._event.clear()
            try:
                async with asyncio.timeout(until - now):
                    await self._event.wait()
            except TimeoutError:
                break
        if self._wake_at is not None and self._wake_at <= time.monotonic():
            self._wake_at = None

    async def drain(self, grace_seconds: float) -> int:
        """Give back unstarted messages; wait up to ``grace_seconds`` for in-flight sends,
        then cancel the rest.

        Returns how many sends were cancelled (their rows go back to pending).
        """
        cancelled = await self.send_queue.drain(grace_seconds)
        self._in_flight_gauge.set(0)
        return cancelled
