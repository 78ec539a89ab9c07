"""Maintenance: returns expired leases, purges old rows, refreshes queue gauges."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from daemon import metrics
from daemon.delivery.retention import Retention
from daemon.settings import WorkerSettings
from outbox import errors
from outbox.store import Store

logger = logging.getLogger(__name__)
#: Our own generator: jitter never disturbs (or depends on) the global random state.
_jitter = random.Random()

_GAUGE_INTERVAL_SECONDS = 15.0
#: The archive delay is hours: moving rows once a minute keeps up, and costs the claim path
#: nothing between passes (sweeps come every OUTBOXD_WORKER__REAP_INTERVAL).
_ARCHIVE_INTERVAL_SECONDS = 60.0
_PURGE_BATCH = 1000


class Reaper:
    def __init__(self, store: Store, worker: WorkerSettings, *, gauges: bool = True) -> None:
        self.store = store
        self.worker = worker
        self.retention = Retention(store.pool)
        #: Whether to refresh the queue gauges: only a process serving /metrics shows them.
        self.gauges = gauges
        self._stopping = asyncio.Event()
        self._gauges_at = 0.0
        self._archived_at: float | None = None
        #: Called when rows went back to pending, so the claimers look at once.
        self.on_reaped: list[Callable[[], None]] = []

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except errors.DatabaseError as exc:
                logger.warning("maintenance sweep failed: %s", exc, extra={"action": "reap"})
            interval = self.worker.reap_interval * _jitter.uniform(0.8, 1.2)
            try:
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    async def sweep(self) -> int:
        """One pass; returns how many leases were reaped."""
        reaped = await self.reap_leases()
        if self.worker.archive_after_hours is not None and (
            self._archived_at is None
            or time.monotonic() - self._archived_at >= _ARCHIVE_INTERVAL_SECONDS
        ):
            self._archived_at = time.monotonic()
            await self.archive(self.worker.archive_after_hours * 3600)
        if self.worker.retention_days is not None:
            await self.purge(self.worker.retention_days * 86400)
        if self.gauges and time.monotonic() - self._gauges_at >= _GAUGE_INTERVAL_SECONDS:
            await self.refresh_gauges()
        return reaped

    async def reap_leases(self) -> int:
        total = 0
        while True:
            rows = await self.store.reap_expired_leases(self.worker.max_attempts)
            total += len(rows)
            if len(rows) < 1000:
                break
        if total:
            metrics.LEASES_REAPED.inc(total)
            logger.warning(
                "returned %d messages whose lease expired (a worker was lost)",
                total,
                extra={"action": "reap", "count": total},
            )
            for callback in self.on_reaped:
                callback()
        return total

    async def archive(self, finished_before_seconds: float) -> int:
        """Move messages finished before the archive delay out of the hot table."""
        moved = await self.retention.archive(finished_before_seconds, stopping=self._stopping)
        forgotten = 0
        while not self._stopping.is_set():
            n = await self.retention.forget_keys(self.worker.idempotency_days * 86400)
            forgotten += n
            if n < _PURGE_BATCH:
                break
        if moved or forgotten:
            logger.info(
                "archived %d finished messages; forgot %d idempotency keys past the horizon",
                moved, forgotten, extra={"action": "archive", "count": moved},
            )  # fmt: skip
        return moved

    async def purge(self, older_than_seconds: float) -> tuple[int, int]:
        """Drop archive partitions past the retention, delete finished rows still in the hot
        table and read or archived in-app items in small batches, yielding between them."""
        result = await self.retention.purge(older_than_seconds, stopping=self._stopping)
        items = 0
        while not self._stopping.is_set():
            i = await self.store.purge_inbox(older_than_seconds, _PURGE_BATCH)
            items += i
            if i < _PURGE_BATCH:
                break
            await asyncio.sleep(0.05)
        if result.messages or result.events or items or result.partitions:
            logger.info(
                "purged %d messages, %d events and %d read or archived in-app items; "
                "dropped archive partitions: %s",
                result.messages, result.events, items, ", ".join(result.partitions) or "none",
                extra={"action": "purge"},
            )  # fmt: skip
        return result.messages, result.events

    async def refresh_gauges(self) -> None:
        self._gauges_at = time.monotonic()
        depth: dict[tuple[str, str], int] = {}
        for row in await self.store.unfinished_counts():
            key = (row["channel"], row["status"])
            depth[key] = depth.get(key, 0) + row["n"]
        metrics.QUEUE_DEPTH.clear()
        for (channel, status), n in depth.items():
            metrics.QUEUE_DEPTH.labels(channel, status).set(n)
        metrics.OLDEST_PENDING.clear()
        for channel, age in (await self.store.oldest_pending()).items():
            metrics.OLDEST_PENDING.labels(channel).set(age)
