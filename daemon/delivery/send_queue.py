"""The sends of one lane: claimed messages wait in line; at most ``concurrency`` are sent at
once, each within the lane's send timeout.

Sends run in sender tasks that take one message after another, rather than a task per
message: a task costs about as much as everything else outboxd does for a message but
rendering (callgrind: ~50k instructions to create, schedule and finish one). A sender
that is about to send starts another sender if messages are still waiting, so a slow
provider gets up to ``concurrency`` sends in flight, while a fast one (null, file) is
served by one or two senders that hand the event loop back every couple of
milliseconds, so that claims and result writes go on meanwhile.
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

#: A sender that has not waited for this long hands the event loop back.
_MAX_RUN_SECONDS = 0.002


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
    ) -> None:
        self.concurrency = concurrency
        self.deadlines = deadlines
        self._send = send
        self._timed_out = timed_out
        self._finished = finished
        #: Claimed messages waiting for a sender.
        self.waiting: collections.deque[Message] = collections.deque()
        #: Messages being sent now.
        self.busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._stopped = False

    def add(self, messages: list[Message]) -> None:
        """Queue claimed messages; they start as senders become free.

        Once stopped, nothing starts: messages claimed meanwhile go straight back.
        """
        self.waiting.extend(messages)
        if self._stopped:
            self.release()
            return
        if not self._starting:
            self._start_one()

    def release(self) -> None:
        """Give back the waiting messages: never started, so no attempt is used."""
        while self.waiting:
            self._finished(_pending_again(self.waiting.popleft(), _NOT_STARTED, refund=True))

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
        waiting = self.waiting
        while waiting and not self._stopped:
            message = waiting.popleft()
            if waiting and not self._starting:
                self._start_one()  # someone for the next message, should this send wait
            self.busy += 1
            self.deadlines.watch(task)
            try:
                completion = await self._send(message)
            except asyncio.CancelledError:
                if not self.deadlines.expired(task):
                    self._finished(_pending_again(message, _INTERRUPTED, refund=False))
                    raise
                task.uncancel()  # our own deadline, not a shutdown: this send failed
                completion = self._timed_out(message)
            finally:
                self.deadlines.forget(task)
                self.busy -= 1
            self._finished(completion)
            now = time.monotonic()
            if now - since > _MAX_RUN_SECONDS:
                await asyncio.sleep(0)
                since = time.monotonic()


def _pending_again(message: Message, reason: str, *, refund: bool) -> Completion:
    """Back to pending, due at once: ``refund`` when the send never started."""
    return Completion(message.id, message.attempts, Status.PENDING, error=reason, refund=refund)
