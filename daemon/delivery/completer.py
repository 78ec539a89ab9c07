"""Writes delivery results in batches ("group commit").

Results accumulate while a write is in flight; the next write takes all of them (up to
``max_batch``) in one ``UPDATE ... FROM unnest(...)``. While results keep coming (a write
ended less than ``flush_interval`` ago), fewer than ``min_batch`` also wait until the
oldest of them is ``flush_interval`` old: a slow provider (SMTP) finishes its sends one by
one, and without the wait every write would carry the few that finished during the one
before. Each result carries the time of its send, which is what the row records as
``sent_at``. An idle daemon still writes a result at once, and so is an in-app delivery
(a person may be looking at the inbox), and stopping writes everything left without
waiting. A write that met the database down
keeps its results and retries: results are only ever lost with the process (then the
lease expires and the row is retried - the documented crash window). A write whose
values the database refused is split in halves until the one refused result is alone;
that one is dropped (its row is retried when its lease expires), never retried for ever
in front of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from daemon import metrics
from outbox import errors
from outbox.store import Completion, Store

logger = logging.getLogger(__name__)

#: Called after each successful write with the completions written.
OnWritten = Callable[[Sequence[Completion]], None]


class Completer:
    """Collects delivery results and writes them in batches, guarded by the lease."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        max_batch: int = 1000,
        min_batch: int = 100,
        flush_interval: float = 0.05,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.max_batch = max_batch
        #: Results that are written at once while results keep coming; fewer wait.
        self.min_batch = min(min_batch, max_batch)
        #: How long a result may wait for others (seconds); 0: never waits.
        self.flush_interval = flush_interval
        self._pending: list[Completion] = []
        # Loop time of the end of the last successful write; None: none yet.
        self._written_at: float | None = None
        # An in-app delivery waits: write now.
        self._urgent = False
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.listeners: list[OnWritten] = []
        #: Lease guard misses: results for rows another worker had reclaimed.
        self.lost = 0
        # Since when the oldest result waiting was added, or the last write that left
        # some waiting ended: how long results have waited with no write (liveness).
        self._waiting_since: float | None = None
        #: Once stopping: when to give up writing (the database is down); None: never.
        self._give_up_at: float | None = None

    @property
    def backlog(self) -> int:
        """Results waiting to be written."""
        return len(self._pending)

    def add(self, completion: Completion) -> None:
        """Queue a result for writing; stamps it with the time of its outcome (now)."""
        pending = self._pending
        if not pending:
            self._waiting_since = time.monotonic()
        if not completion.finished_at:
            completion = completion._replace(finished_at=asyncio.get_running_loop().time())
        pending.append(completion)
        self._idle.clear()
        if completion.inbox is not None:
            self._urgent = True
            self._wakeup.set()
        elif len(pending) == 1 or len(pending) >= self.min_batch:
            self._wakeup.set()  # in between, a waiting run() has nothing new to decide

    async def run(self) -> None:
        """Write results until :meth:`stop` is called and everything is written."""
        failures = 0
        limit = self.max_batch
        while True:
            if not self._pending:
                self._idle.set()
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            linger = self._linger()
            if linger > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(linger):
                        await self._wakeup.wait()
                continue
            batch = self._pending[:limit]
            if self._gave_up():
                return
            try:
                # Shielded: a cancelled daemon still finishes the write it started.
                async with asyncio.timeout(self._time_left()):
                    written = await asyncio.shield(self.store.complete_many(batch, self.worker_id))
            except errors.StatementRefused as exc:
                if len(batch) > 1:
                    limit = len(batch) // 2
                    continue
                del self._pending[:1]
                self._waiting_since = time.monotonic() if self._pending else None
                logger.error(
                    "dropped the result of message %d: the database refused it (%s); the "
                    "row is retried when its lease expires", batch[0].message_id, exc,
                    extra={"action": "complete", "message_id": batch[0].message_id},
                )  # fmt: skip
                limit = self.max_batch
                continue
            except (errors.DatabaseError, TimeoutError) as exc:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                logger.warning(
                    "could not write %d results, retrying in %.1fs: %s",
                    len(batch), delay, exc, extra={"action": "complete"},
                )  # fmt: skip
                await asyncio.sleep(min(delay, self._time_left() or delay))
                continue
            failures = 0
            limit = self.max_batch
            del self._pending[: len(batch)]
            self._waiting_since = time.monotonic() if self._pending else None
            self._written_at = asyncio.get_running_loop().time()
            self._urgent = any(c.inbox is not None for c in self._pending)
            metrics.COMPLETE_BATCH_SIZE.observe(len(batch))
            if written < len(batch):
                self.lost += len(batch) - written
                logger.warning(
                    "%d results not written: their lease had expired and the rows were reclaimed",
                    len(batch) - written,
                    extra={"action": "complete"},
                )
            for listener in self.listeners:
                try:
                    listener(batch)
                except Exception:  # a listener's bug must not stop the results being written
                    logger.exception("a listener of written results failed")

    def _linger(self) -> float:
        """How long to wait for more results before writing those pending (0: write now)."""
        pending = self._pending
        if (
            self._stopping
            or self._urgent
            or len(pending) >= self.min_batch
            or self._written_at is None
            or self.flush_interval <= 0
        ):
            return 0.0
        now = asyncio.get_running_loop().time()
        if now - self._written_at >= self.flush_interval:
            return 0.0  # results come seldom: no reason to hold this one back
        linger = pending[0].finished_at + self.flush_interval - now
        # Under a millisecond: not worth a wait (and a clock that counts in steps of one
        # may never get past it).
        return linger if linger >= 0.001 else 0.0

    def unwritten_for(self) -> float:
        """Seconds results have been waiting with no successful write (0: none wait)."""
        since = self._waiting_since
        return 0.0 if since is None or not self._pending else time.monotonic() - since

    def stop(self, give_up_after: float | None = None) -> None:
        """Finish writing what is pending, then return from :meth:`run`; with
        ``give_up_after``, return after that many seconds even if the database is down
        (the rows not written keep their lease, and the reaper returns them)."""
        self._stopping = True
        if give_up_after is not None:
            self._give_up_at = time.monotonic() + give_up_after
        self._wakeup.set()

    def _time_left(self) -> float | None:
        if self._give_up_at is None:
            return None
        return max(self._give_up_at - time.monotonic(), 0.01)

    def _gave_up(self) -> bool:
        if self._give_up_at is None or time.monotonic() < self._give_up_at:
            return False
        logger.error(
            "stopping without writing %d results: the database did not answer in time; "
            "their rows are retried when their leases expire",
            len(self._pending), extra={"action": "complete"},
        )  # fmt: skip
        self._pending.clear()
        self._idle.set()
        return True

    async def wait_idle(self) -> None:
        """Wait until every result added so far has been written."""
        await self._idle.wait()
