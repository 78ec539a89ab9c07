"""The named queries of outbound webhooks (``sql/queries.sql``); the only place in the
daemon that knows them. Driver errors become :class:`outbox.errors.DatabaseError`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from outbox import sql
from outbox.store import _translated

QUERY_NAMES = (
    "hook_endpoints",
    "hook_claim",
    "hook_complete",
    "hook_reap",
    "hook_add",
    "hook_remove",
    "hook_list",
    "hook_replay",
    "hook_wake",
    "hook_counts",
    "hook_purge",
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one endpoint (one attempt)."""

    id: int
    event_id: str
    endpoint_id: int
    type: str
    data: dict[str, Any]
    created_at: datetime
    attempts: int

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> Delivery:
        return cls(
            id=row["id"],
            event_id=str(row["event_id"]),
            endpoint_id=row["endpoint_id"],
            type=row["type"],
            data=json.loads(row["data"]),
            created_at=row["created_at"],
            attempts=row["attempts"],
        )


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt came to, for :meth:`HookStore.complete`."""

    delivery_id: int
    attempts: int
    delivered: bool
    error: str | None = None
    http_status: int | None = None
    retry_delay: float = 0.0


class HookStore:
    """Webhook queries over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def endpoints(self) -> list[Endpoint]:
        async with _translated("read webhook endpoints"):
            rows = await self.pool.fetch(sql.get("hook_endpoints"))
        return [Endpoint(row["id"], row["url"], row["secret"]) for row in rows]

    async def claim(
        self, worker: str, lease_seconds: float, slots: dict[int, int]
    ) -> list[Delivery]:
        """Up to ``slots[endpoint]`` due deliveries of each endpoint, leased to ``worker``."""
        wanted = {endpoint: n for endpoint, n in slots.items() if n > 0}
        if not wanted:
            return []
        async with _translated("claim webhook deliveries"):
            rows = await self.pool.fetch(
                sql.get("hook_claim"), worker, lease_seconds, list(wanted), list(wanted.values())
            )
        return [Delivery.from_record(row) for row in rows]

    async def complete(
        self, results: Sequence[Result], worker: str, window_seconds: float
    ) -> dict[int, str]:
        """Writes results; returns each written delivery's new status."""
        if not results:
            return {}
        async with _translated("write webhook results"):
            rows = await self.pool.fetch(
                sql.get("hook_complete"),
                [r.delivery_id for r in results],
                [r.attempts for r in results],
                [r.delivered for r in results],
                [_clean(r.error) for r in results],
                [r.http_status for r in results],
                [r.retry_delay for r in results],
                worker,
                window_seconds,
            )
        return {row["id"]: row["status"] for row in rows}

    async def reap(self, limit: int = 1000) -> int:
        async with _translated("reap webhook leases"):
            return len(await self.pool.fetch(sql.get("hook_reap"), limit))

    async def purge(self, older_than_seconds: float, limit: int = 5000) -> int:
        """Deletes up to ``limit`` finished deliveries older than the retention."""
        async with _translated("purge webhook deliveries"):
            done = await self.pool.execute(sql.get("hook_purge"), older_than_seconds, limit)
        return int(done.split()[-1])

    async def counts(self) -> dict[str, int]:
        async with _translated("count webhook deliveries"):
            row = await self.pool.fetchrow(sql.get("hook_counts"))
        assert row is not None
        return dict(row)

    # -- the command line ---------------------------------------------------------------
    async def add(
        self, url: str, secret: str, events: Sequence[str], description: str | None
    ) -> int:
        async with _translated("add webhook endpoint"):
            endpoint_id: int = await self.pool.fetchval(
                sql.get("hook_add"), url, secret, list(events), description
            )
        return endpoint_id

    async def remove(self, endpoint_id: int) -> bool:
        async with _translated("remove webhook endpoint"):
            return await self.pool.fetchval(sql.get("hook_remove"), endpoint_id) is not None

    async def listing(self) -> list[asyncpg.Record]:
        async with _translated("list webhook endpoints"):
            return list(await self.pool.fetch(sql.get("hook_list")))

    async def replay(
        self,
        *,
        ids: Sequence[int] | None,
        endpoint_id: int | None,
        since: datetime | None,
        limit: int,
        dry_run: bool,
    ) -> tuple[int, int]:
        """(matched, replayed) failed deliveries; replayed ones are due now."""
        async with (
            _translated("replay webhook deliveries"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            row = await conn.fetchrow(
                sql.get("hook_replay"), list(ids) if ids else None, endpoint_id, since, limit,
                dry_run,
            )  # fmt: skip
            assert row is not None
            if row["replayed"]:
                await conn.execute(sql.get("hook_wake"))
        return row["matched"], row["replayed"]


def _clean(text: str | None) -> str | None:
    """An error as PostgreSQL text can hold it: no NUL, no lone surrogate, bounded."""
    if text is None:
        return None
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:1000]
