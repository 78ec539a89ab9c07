"""Retention: finished messages move to the monthly archive; old months are dropped whole.

outbox.message keeps what is being delivered and what finished within the archive delay;
outbox.message_archive (partitioned by month of archiving) keeps the rest until the
retention drops its partition (migration 0016). Rows are never deleted one by one from a
large table, so neither table bloats: the hot table reuses the space the moves leave, and a
dropped partition leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from outbox import sql
from outbox.store import Store, _translated

logger = logging.getLogger(__name__)

#: Rows moved per statement: big enough that a day's traffic moves in few round trips,
#: small enough that one move holds its row locks for well under a second.
ARCHIVE_BATCH = 5000
PURGE_BATCH = 1000


@dataclass(frozen=True)
class PurgeResult:
    """What one retention pass removed."""

    messages: int
    events: int
    partitions: tuple[str, ...]
    keys: int


class Retention:
    """The archive's queries; the reaper and ``outboxd purge`` drive them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def archive_batch(
        self, finished_before_seconds: float, limit: int = ARCHIVE_BATCH
    ) -> int:
        """Move one batch of messages finished longer ago than the delay; how many moved."""
        async with _translated("archive"):
            moved = await self.pool.fetchval(
                sql.get("archive_messages"), float(finished_before_seconds), limit
            )
        return int(moved or 0)

    async def archive(
        self,
        finished_before_seconds: float,
        *,
        stopping: asyncio.Event | None = None,
        limit: int = ARCHIVE_BATCH,
    ) -> int:
        """Move every message finished longer ago than the delay, batch by batch."""
        total = 0
        while stopping is None or not stopping.is_set():
            moved = await self.archive_batch(finished_before_seconds, limit)
            total += moved
            if moved < limit:
                break
            await asyncio.sleep(0)  # let the claim path in between batches
        return total

    async def drop_partitions(self, older_than_seconds: float) -> list[str]:
        """Drop the archive partitions whose month ended before the cutoff; their names."""
        async with _translated("drop archive partitions"):
            rows = await self.pool.fetch(
                sql.get("archive_drop_partitions"), float(older_than_seconds)
            )
        return [row["name"] for row in rows]

    async def forget_keys(self, older_than_seconds: float, limit: int = PURGE_BATCH) -> int:
        """Forget one batch of idempotency keys archived before the horizon."""
        async with _translated("purge idempotency keys"):
            result = await self.pool.execute(
                sql.get("purge_message_keys"), float(older_than_seconds), limit
            )
        return int(result.rsplit(" ", 1)[-1])

    async def purge(
        self,
        older_than_seconds: float,
        *,
        idempotency_seconds: float | None = None,
        stopping: asyncio.Event | None = None,
    ) -> PurgeResult:
        """Apply the retention: whole archive partitions, then whatever finished rows are
        still in the hot table past the cutoff (archiving off or behind) and old events,
        in small batches; then idempotency keys past their horizon."""
        store = Store(self.pool)
        partitions = await self.drop_partitions(older_than_seconds)
        messages = events = keys = 0
        while stopping is None or not stopping.is_set():
            m, e = await store.purge(older_than_seconds, PURGE_BATCH)
            messages, events = messages + m, events + e
            if m < PURGE_BATCH and e < PURGE_BATCH:
                break
            await asyncio.sleep(0.05)
        if idempotency_seconds is not None:
            while stopping is None or not stopping.is_set():
                n = await self.forget_keys(idempotency_seconds)
                keys += n
                if n < PURGE_BATCH:
                    break
        return PurgeResult(messages, events, tuple(partitions), keys)


#: The named queries this module uses (tests/unit/test_sql.py checks them).
QUERY_NAMES = ("archive_messages", "archive_drop_partitions", "purge_message_keys")
