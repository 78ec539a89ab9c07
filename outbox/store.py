"""The daemon's access to the outbox tables: the only module that knows query names.

Driver errors are translated at this boundary into :class:`outbox.errors.DatabaseError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from outbox import errors, sql
from outbox.models import InboxItem, Message, Priority, Status
from outbox.text import db_json, db_text

#: Where a claim scan of one priority stopped: (not_before, id) of the last row it took.
ClaimPosition = tuple[datetime, int]
#: A template context larger than this (decoded) is a bug in the application, not a
#: message: the claim does not even fetch it, and the daemon fails its row.
MAX_CONTEXT_BYTES = 256 * 1024
#: Claim order: highest priority first.
_PRIORITIES = sorted((int(p) for p in Priority), reverse=True)

#: Everything asyncpg raises when the server or the connection misbehaves, including the
#: client-side family (protocol errors, a restarted server's surprises).
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
#: SQLSTATE classes of values the database refuses: data exceptions, integrity violations.
_REFUSED = ("22", "23")


@contextlib.asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    try:
        yield
    except DRIVER_ERRORS as exc:
        reason = f"{action}: {type(exc).__name__}: {exc}"
        if isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in _REFUSED:
            raise errors.StatementRefused(reason) from exc
        raise errors.DatabaseError(reason) from exc


def _clean_json(data: str) -> str | None:
    # JSON text for a jsonb argument: escapes (\u0000, \udcff) are what jsonb refuses.
    if "\\u" in data:
        return json.dumps(db_json(json.loads(data)), ensure_ascii=False)
    return db_text(data, None)


class Completion(NamedTuple):
    """The outcome of one delivery attempt, to be written by the completer.

    A NamedTuple for the reason given in :mod:`outbox.models`.
    """

    message_id: int
    #: The attempt number the claim assigned; part of the lease guard.
    attempts: int
    status: Status
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    #: For status ``pending``: seconds until the retry becomes due.
    retry_delay: float = 0.0
    #: True when this attempt must not count (throttled, paused channel).
    refund: bool = False
    #: In-app deliveries: the item written into ``outbox.inbox`` with the result.
    inbox: InboxItem | None = None
    #: When the outcome was decided, on the event loop's clock (``time.monotonic`` in a
    #: standard loop); 0: when it is written. A result written later (the completer
    #: batches them) still records the send's own time as ``sent_at``, and a retry is due
    #: ``retry_delay`` after the failure, not after the write.
    finished_at: float = 0.0


class Store:
    """Named queries over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(
        self,
        channel: str,
        limit: int,
        worker: str,
        lease_seconds: float,
        after: Mapping[int, ClaimPosition] | None = None,
    ) -> list[Message]:
        """Lease up to ``limit`` due messages of ``channel`` to ``worker``.

        Highest priority first. ``after`` maps a priority to the position where the scan of
        that priority starts (exclusive); a priority missing from it is scanned from the
        head. Rows behind a position are not claimed by this call.
        """
        after = after or {}
        positions = [after.get(priority) for priority in _PRIORITIES]
        async with _translated("claim"):
            rows = await self.pool.fetch(
                sql.get("claim_batch"),
                channel,
                limit,
                worker,
                float(lease_seconds),
                _PRIORITIES,
                [p[0] if p else None for p in positions],
                [p[1] if p else None for p in positions],
                MAX_CONTEXT_BYTES,
            )
        messages = [Message.from_record(row) for row in rows]
        if any(m.recipient_key is not None for m in messages):
            # Should this fail, the rows stay leased until the reaper returns them.
            return await self.with_people(messages)
        return messages

    async def with_people(self, messages: list[Message]) -> list[Message]:
        """The claimed rows of people with their person, and suppressed when the person
        is gone or has switched the row's channel off for its category since notify."""
        rows = [m for m in messages if m.recipient_key is not None]
        async with _translated("claim people"):
            found = await self.pool.fetch(
                sql.get("claim_people"),
                [m.recipient_key for m in rows],
                [m.channel for m in rows],
                [m.category for m in rows],
            )
        people = {}
        for message, record in zip(rows, found, strict=True):
            person = record["person"]
            reason = message.suppressed_reason
            if reason is None and person is None:
                reason = f"person {message.recipient_key!r} is no longer in outbox.recipient"
            elif reason is None and record["switched_off"]:
                reason = f"person opted out of {message.channel} for category {message.category!r}"
            people[message.id] = message._replace(
                person=None if person is None else json.loads(person), suppressed_reason=reason
            )
        return [people.get(m.id, m) for m in messages]

    async def complete_many(self, completions: Sequence[Completion], worker: str) -> int:
        """Write results in one statement; returns how many rows still held our lease.

        In-app deliveries (results carrying an inbox item) take a statement of their own;
        with other results beside them, both run in one transaction, so that a failed
        write leaves nothing half written for the retry to trip over.
        """
        if not completions:
            return 0
        items = [c for c in completions if c.inbox is not None]
        if not items:
            async with _translated("complete"):
                return await self._complete(self.pool, completions, worker)
        if len(items) == len(completions):
            async with _translated("complete in-app"):
                return await self._complete_inbox(self.pool, items, worker)
        others = [c for c in completions if c.inbox is None]
        async with _translated("complete"), self.pool.acquire() as conn, conn.transaction():
            written = await self._complete_inbox(conn, items, worker)
            return written + await self._complete(conn, others, worker)

    @staticmethod
    async def _complete(
        db: asyncpg.Pool | asyncpg.Connection, completions: Sequence[Completion], worker: str
    ) -> int:
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
        ids, attempts, statuses, errs, providers, provider_ids, delays, refunds, ages = columns
        now = asyncio.get_running_loop().time()
        for c in completions:
            ids.append(c.message_id)
            attempts.append(c.attempts)
            statuses.append(c.status.value)
            errs.append(db_text(c.error))
            providers.append(db_text(c.provider))
            provider_ids.append(db_text(c.provider_message_id))
            delays.append(c.retry_delay)
            refunds.append(1 if c.refund else 0)
            # Seconds since the outcome: the database's clock minus this is the send's time.
            ages.append(max(now - c.finished_at, 0.0) if c.finished_at else 0.0)
        result = await db.execute(sql.get("complete_many"), *columns, worker)
        return int(result.rsplit(" ", 1)[-1])

    @staticmethod
    async def _complete_inbox(
        db: asyncpg.Pool | asyncpg.Connection, completions: Sequence[Completion], worker: str
    ) -> int:
        """In-app deliveries: their items and their 'sent' in one statement."""
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [])
        ids, attempts, keys, notifications, categories, priorities = columns[:6]
        titles, bodies, urls, data = columns[6:]
        for c in completions:
            item = c.inbox
            assert item is not None
            ids.append(c.message_id)
            attempts.append(c.attempts)
            keys.append(item.recipient_key)
            notifications.append(item.notification_id)
            categories.append(item.category)
            priorities.append(item.priority)
            titles.append(db_text(item.title, None))
            bodies.append(db_text(item.body, None))
            urls.append(db_text(item.url, None))
            data.append(item.data if item.data is None else _clean_json(item.data))
        row = await db.fetchrow(sql.get("complete_inbox"), ids, attempts, worker, *columns[2:])
        assert row is not None
        return int(row["written"])

    async def next_due(self, channel: str) -> datetime | None:
        """When the earliest pending message of ``channel`` becomes due."""
        async with _translated("next_due"):
            due: datetime | None = await self.pool.fetchval(sql.get("next_due"), channel)
        return due

    async def reap_expired_leases(self, max_attempts: int, limit: int = 1000) -> list[Any]:
        """Return messages whose lease expired to ``pending`` (or ``failed``)."""
        async with _translated("reap"):
            return list(await self.pool.fetch(sql.get("reap_expired_leases"), max_attempts, limit))

    async def purge(self, older_than_seconds: float, limit: int = 1000) -> tuple[int, int]:
        """Delete one batch of finished messages and old events; returns both counts."""
        async with _translated("purge"):
            messages = await self.pool.execute(
                sql.get("purge_messages"), float(older_than_seconds), limit
            )
            events = await self.pool.execute(
                sql.get("purge_events"), float(older_than_seconds), limit
            )
            await self.pool.execute(sql.get("purge_payloads"), float(older_than_seconds), limit)
        return int(messages.rsplit(" ", 1)[-1]), int(events.rsplit(" ", 1)[-1])

    async def purge_inbox(self, older_than_seconds: float, limit: int = 1000) -> int:
        """Delete one batch of in-app items read or archived before the cutoff."""
        async with _translated("purge inbox"):
            result = await self.pool.execute(
                sql.get("purge_inbox"), float(older_than_seconds), limit
            )
        return int(result.rsplit(" ", 1)[-1])

    async def requeue_ids(self, ids: Sequence[int]) -> list[int]:
        async with _translated("requeue"), self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(sql.get("requeue_ids"), list(ids))
            await conn.execute(sql.get("wake"))
        return [row["id"] for row in rows]

    async def requeue_matching(
        self,
        statuses: Sequence[str],
        *,
        error_like: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
        dry_run: bool = False,
    ) -> tuple[int, int]:
        """Send matching dead letters again; returns (matched, requeued)."""
        async with _translated("requeue"), self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                sql.get("requeue_matching"),
                list(statuses), error_like, since, until, limit, dry_run,
            )  # fmt: skip
            if not dry_run:
                await conn.execute(sql.get("wake"))
        assert row is not None
        return int(row["matched"]), int(row["moved"])

    async def counts_by_status(self) -> list[asyncpg.Record]:
        async with _translated("stats"):
            return list(await self.pool.fetch(sql.get("counts_by_status")))

    async def unfinished_counts(self) -> list[asyncpg.Record]:
        """(channel, status, n) for pending and sending rows."""
        async with _translated("stats"):
            return list(await self.pool.fetch(sql.get("unfinished_counts")))

    async def oldest_pending(self) -> dict[str, float]:
        async with _translated("stats"):
            rows = await self.pool.fetch(sql.get("oldest_pending"))
        return {row["channel"]: row["age_seconds"] for row in rows}

    async def recent_activity(self, window_seconds: float) -> list[asyncpg.Record]:
        async with _translated("stats"):
            return list(await self.pool.fetch(sql.get("recent_activity"), float(window_seconds)))

    async def feedback_rates(self, window_seconds: float) -> list[asyncpg.Record]:
        async with _translated("stats"):
            return list(await self.pool.fetch(sql.get("feedback_rates"), float(window_seconds)))

    async def pending_templates(self, limit: int = 100) -> list[asyncpg.Record]:
        async with _translated("pending templates"):
            return list(await self.pool.fetch(sql.get("pending_templates"), limit))

    async def statuses(self, ids: Sequence[int]) -> dict[int, str]:
        """The status of each of ``ids`` that exists."""
        async with _translated("statuses"):
            rows = await self.pool.fetch(sql.get("statuses_of"), list(ids))
        return {row["id"]: row["status"] for row in rows}

    async def message(self, message_id: int) -> asyncpg.Record | None:
        async with _translated("message"):
            row: asyncpg.Record | None = await self.pool.fetchrow(
                sql.get("message_by_id"), message_id
            )
        return row

    async def rate_init(self, channel: str, burst: float) -> None:
        async with _translated("rate limit"):
            await self.pool.execute(sql.get("rate_init"), channel, float(burst))

    async def rate_take(
        self, channel: str, want: int, rate: float, burst: float, recovery: float
    ) -> tuple[int, float, float]:
        """(granted tokens, tokens left over, effective rate)."""
        async with _translated("rate limit"):
            row = await self.pool.fetchrow(
                sql.get("rate_take"), channel, want, float(rate), float(burst), float(recovery)
            )
        if row is None:
            raise errors.DatabaseError(f"rate limit: no bucket for channel {channel!r}")
        return int(row["granted"]), float(row["left_over"]), float(row["effective_rate"])

    async def rate_give_back(self, channel: str, tokens: int, burst: float) -> None:
        async with _translated("rate limit"):
            await self.pool.execute(sql.get("rate_give_back"), channel, tokens, float(burst))

    async def rate_backoff(self, channel: str, recovery: float, floor: float) -> float | None:
        """Halve the channel's rate factor (at most once a second); the new factor or None."""
        async with _translated("rate limit"):
            factor: float | None = await self.pool.fetchval(
                sql.get("rate_backoff"), channel, float(recovery), float(floor)
            )
        return factor

    async def schema_versions(self) -> list[int]:
        async with _translated("schema version"):
            rows = await self.pool.fetch(sql.get("schema_versions"))
        return [row["version"] for row in rows]


#: Every query name the store uses; a unit test checks each exists in queries.sql.
QUERY_NAMES = (
    "claim_batch",
    "claim_people",
    "complete_many",
    "complete_inbox",
    "next_due",
    "reap_expired_leases",
    "purge_messages",
    "purge_events",
    "purge_payloads",
    "purge_inbox",
    "requeue_ids",
    "requeue_matching",
    "wake",
    "counts_by_status",
    "unfinished_counts",
    "oldest_pending",
    "recent_activity",
    "feedback_rates",
    "pending_templates",
    "message_by_id",
    "statuses_of",
    "schema_versions",
    "rate_init",
    "rate_take",
    "rate_give_back",
    "rate_backoff",
)
