"""The sends of one lane: claimed messages wait in line; at most ``concurrency`` are sent at
once, each within the lane's send timeout.

Sends run in sender tasks that take one message after another, rather than a task per
message: a task costs about as much as everything else outboxd does for a message but
rendering (callgrind: ~50k instructions to create, schedule and finish one). A sender
that is about to send starts another sender if messages are still waiting, so a slow
provider gets up to ``concurrency`` sends in flight, while a fast one (null, file) is
served by one or two senders that hand the event loop back every couple of
milliseconds, so that claims and result writes go on meanwhile.

Destinations: a provider that talks to several servers (SMTP: one per recipient domain)
names each message's destination and how many sends one destination may have in flight.
Waiting messages are then queued per destination and taken round-robin from the
destinations below their limit, so one slow destination holds its own slots, never the
senders of the others. A destination keeps waiting only what its recent sends can start
within half the wait limit (at least its limit: one round); what is claimed beyond that
goes back to pending without using an attempt, and is claimed again later. A message that
has waited the whole wait limit anyway goes back too, before it is sent: its lease must
outlast the send it would start.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

from daemon.delivery.deadlines import Deadlines
from outbox.models import Message, Status
from outbox.store import Completion

#: Why a message goes back to pending without a result of its own.
_NOT_STARTED = "claimed but not started (shutdown or paused channel); not sent"
_INTERRUPTED = "interrupted by shutdown while sending; it may have been sent"
_BUSY_DESTINATION = "its destination {key} had every slot busy; claimed again later, not sent"
_WAITED_TOO_LONG = "waited too long for its destination; claimed again later, not sent"
#: Weight of the newest send in a destination's estimated send time.
_EWMA_WEIGHT = 0.2
#: Destinations whose send time is remembered (a bound on memory, not a working limit).
_MAX_REMEMBERED = 10_000

#: A sender that has not waited for this long hands the event loop back.
_MAX_RUN_SECONDS = 0.002

#: The destination key of a message (one per server or domain).
DestinationOf = Callable[[Message], str]


def _one_destination(message: Message) -> str:
    return ""


class SendQueue:
    """Runs ``send`` for queued messages and reports each outcome to ``finished``."""

    def __init__(
        self,
        *,
        concurrency: int,
        deadlines: Deadlines,
        send: Callable[[Message], Awaitable[Completion]],
        timed_out: Callable[[Message], Completion],
        finished: Callable[[Completion], None],
        destination: DestinationOf | None = None,
        per_destination: int | None = None,
        busy_retry_seconds: float = 1.0,
        wait_limit: float | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.deadlines = deadlines
        self._send = send
        self._timed_out = timed_out
        self._finished = finished
        self._destination = destination or _one_destination
        self.per_destination = min(per_destination or concurrency, concurrency)
        self._busy_retry = busy_retry_seconds
        #: A message that waited this long goes back to pending rather than being sent.
        self.wait_limit = wait_limit if wait_limit is not None else deadlines.timeout
        #: Claimed messages waiting for a sender, per destination.
        self._queues: dict[str, collections.deque[tuple[Message, float]]] = {}
        #: Estimated seconds per send, per destination (moving average).
        self._send_seconds: dict[str, float] = {}
        #: Destinations with messages waiting and a free slot, in round-robin order.
        self._ready: collections.deque[str] = collections.deque()
        self._in_ready: set[str] = set()
        self._busy_by: collections.Counter[str] = collections.Counter()
        #: Messages waiting for a sender (all destinations).
        self.waiting = 0
        #: Messages being sent now.
        self.busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._stopped = False

    def add(self, messages: list[Message]) -> None:
        """Queue claimed messages; they start as senders become free.

        Once stopped, nothing starts: messages claimed meanwhile go straight back.
        """
        if self._stopped:
            for message in messages:
                self._finished(_pending_again(message, _NOT_STARTED, refund=True))
            return
        now = time.monotonic()
        for message in messages:
            key = self._destination(message)
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = collections.deque()
            if len(queue) >= self._room(key):
                self._finished(self._later(message, _BUSY_DESTINATION.format(key=key or "-")))
                continue
            queue.append((message, now))
            self.waiting += 1
            self._mark_ready(key)
        if self._ready and not self._starting:
            self._start_one()

    def release(self) -> None:
        """Give back the waiting messages: never started, so no attempt is used."""
        queues, self._queues = self._queues, {}
        self._ready.clear()
        self._in_ready.clear()
        self.waiting = 0
        for queue in queues.values():
            for message, _ in queue:
                self._finished(_pending_again(message, _NOT_STARTED, refund=True))

    def stop(self) -> None:
        """Start nothing more; sends in flight go on."""
        self._stopped = True

    async def drain(self, grace_seconds: float) -> int:
        """Release the waiting, give sends in flight ``grace_seconds``, then cancel them.

        Returns how many sends were cancelled (their rows go back to pending).
        """
        self.stop()
        self.release()
        still_running: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, still_running = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in still_running:
            task.cancel()
        if still_running:
            await asyncio.gather(*still_running, return_exceptions=True)
        self.deadlines.close()
        return len(still_running)

    def _mark_ready(self, key: str) -> None:
        if key not in self._in_ready and self._busy_by[key] < self.per_destination:
            queue = self._queues.get(key)
            if queue:
                self._ready.append(key)
                self._in_ready.add(key)

    def _room(self, key: str) -> int:
        """How many messages ``key`` may keep waiting: what starts within half a timeout."""
        limit = self.per_destination
        seconds = self._send_seconds.get(key)
        if seconds is None:
            return 2 * self.concurrency  # unknown yet: the lane's own bound
        rounds = self.wait_limit / 2 / max(seconds, 1e-6)
        return int(min(max(limit * rounds, limit), 2 * self.concurrency))

    def _later(self, message: Message, reason: str) -> Completion:
        delay = max(self._busy_retry, self._send_seconds.get(self._destination(message), 0.0))
        return Completion(
            message.id, message.attempts, Status.PENDING, error=reason, retry_delay=delay,
            refund=True,
        )  # fmt: skip

    def _take(self) -> tuple[str, Message] | None:
        """The next message, round-robin over destinations with a free slot."""
        while self._ready:
            key = self._ready.popleft()
            self._in_ready.discard(key)
            queue = self._queues.get(key)
            if not queue:
                continue
            message, since = queue.popleft()
            self.waiting -= 1
            if not queue:
                del self._queues[key]
            if time.monotonic() - since > self.wait_limit:
                self._finished(self._later(message, _WAITED_TOO_LONG))
                if key in self._queues:  # still its turn
                    self._ready.appendleft(key)
                    self._in_ready.add(key)
                continue
            self._busy_by[key] += 1
            self._mark_ready(key)
            return key, message
        return None

    def _start_one(self) -> None:
        if self._stopped or len(self._tasks) >= self.concurrency:
            return
        self._starting += 1
        self._tasks.add(asyncio.create_task(self._run(), name="sender"))

    async def _run(self) -> None:
        self._starting -= 1
        task = asyncio.current_task()
        assert task is not None
        try:
            await self._take_turns(task)
        finally:
            # Here, not in a done callback: a sender that saw nothing waiting must not
            # count as running when the next messages are added.
            self._tasks.discard(task)

    async def _take_turns(self, task: asyncio.Task[None]) -> None:
        since = time.monotonic()
        while not self._stopped:
            taken = self._take()
            if taken is None:
                return
            key, message = taken
            if self._ready and not self._starting:
                self._start_one()  # someone for the next message, should this send wait
            self.busy += 1
            self.deadlines.watch(task)
            started = time.monotonic()
            try:
                completion = await self._send(message)
            except asyncio.CancelledError:
                if not self.deadlines.expired(task):
                    self._done(key)
                    self._finished(_pending_again(message, _INTERRUPTED, refund=False))
                    raise
                task.uncancel()  # our own deadline, not a shutdown: this send failed
                completion = self._timed_out(message)
            finally:
                self.deadlines.forget(task)
            self._observe(key, time.monotonic() - started)
            self._done(key)
            self._finished(completion)
            now = time.monotonic()
            if now - since > _MAX_RUN_SECONDS:
                await asyncio.sleep(0)
                since = time.monotonic()

    def _observe(self, key: str, seconds: float) -> None:
        known = self._send_seconds.get(key)
        if known is None and len(self._send_seconds) >= _MAX_REMEMBERED:
            self._send_seconds.clear()
        self._send_seconds[key] = (
            seconds if known is None else known + _EWMA_WEIGHT * (seconds - known)
        )

    def _done(self, key: str) -> None:
        self.busy -= 1
        self._busy_by[key] -= 1
        if not self._busy_by[key]:
            del self._busy_by[key]
        self._mark_ready(key)


def _pending_again(message: Message, reason: str, *, refund: bool) -> Completion:
    """Back to pending, due at once: ``refund`` when the send never started."""
    return Completion(message.id, message.attempts, Status.PENDING, error=reason, refund=refund)
