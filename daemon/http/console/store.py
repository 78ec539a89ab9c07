"""The console's reads and writes on the database (the SQL is in :mod:`.queries`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from daemon.http.console import queries
from daemon.http.console.queries import Filters

#: A console page waits this long for a query at most (a search without a usable index
#: at millions of rows is a sequential scan: docs/CONSOLE.md).
TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Overview:
    depth: list[asyncpg.Record]
    finished: list[asyncpg.Record]
    send_rate: list[asyncpg.Record]
    feedback: list[asyncpg.Record]
    pauses: list[asyncpg.Record]


@dataclass(frozen=True, slots=True)
class MessageDetail:
    message: asyncpg.Record
    events: list[asyncpg.Record]
    person: dict[str, Any] | None
    #: Its webhook deliveries (outbox.webhook_delivery), without the endpoints' secrets.
    webhooks: list[dict[str, Any]]


class ConsoleStore:
    """What the console pages read and what its actions change."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def overview(self) -> Overview:
        async with self.pool.acquire() as conn:
            return Overview(
                depth=await conn.fetch(queries.DEPTH, timeout=TIMEOUT),
                finished=await conn.fetch(queries.FINISHED, timeout=TIMEOUT),
                send_rate=await conn.fetch(queries.SEND_RATE, timeout=TIMEOUT),
                feedback=await conn.fetch(queries.FEEDBACK, timeout=TIMEOUT),
                pauses=await conn.fetch(queries.PAUSES, timeout=TIMEOUT),
            )

    async def search(
        self, filters: Filters, *, before: int | None, limit: int
    ) -> tuple[list[asyncpg.Record], int | None]:
        """A page of matches and the id the next page starts below (None: last page)."""
        text, args = queries.search(filters, before=before, limit=limit)
        rows = await self.pool.fetch(text, *args, timeout=TIMEOUT)
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1]["id"]
        return rows, None

    async def message(self, message_id: int) -> MessageDetail | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(queries.MESSAGE, message_id, timeout=TIMEOUT)
            if row is None:
                return None
            events = await conn.fetch(queries.EVENTS, message_id, timeout=TIMEOUT)
            person = None
            if row["recipient_key"] is not None:
                raw = await conn.fetchval(queries.PERSON, row["recipient_key"], timeout=TIMEOUT)
                person = json.loads(raw) if raw is not None else None
            rows = await conn.fetch(queries.WEBHOOKS, message_id, timeout=TIMEOUT)
            webhooks = [dict(r) for r in rows]
            return MessageDetail(row, list(events), person, webhooks)

    async def count_for_action(self, filters: Filters, action: str, cap: int) -> int:
        text, args = queries.count_for_action(filters, action, cap)
        return int(await self.pool.fetchval(text, *args, timeout=TIMEOUT))

    async def act_on_search(self, filters: Filters, action: str, *, batch: int, cap: int) -> int:
        """``action`` on the rows of the search, newest first, one transaction per batch,
        at most ``cap`` rows; returns how many changed."""
        changed = 0
        below = 2**63 - 1
        while changed < cap:
            text, args = queries.act_batch(
                filters, action, below=below, batch=min(batch, cap - changed)
            )
            async with self.pool.acquire() as conn, conn.transaction():
                ids = [r["id"] for r in await conn.fetch(text, *args, timeout=TIMEOUT)]
                if ids and action != "cancel":
                    await conn.execute(queries.WAKE)
            if not ids:
                break
            changed += len(ids)
            below = min(ids)
        return changed

    async def act_on_ids(self, action: str, ids: list[int]) -> list[int]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(queries.act_ids(action), ids, timeout=TIMEOUT)
            if rows and action != "cancel":
                await conn.execute(queries.WAKE)
        return [r["id"] for r in rows]

    async def pauses(self) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(queries.PAUSES, timeout=TIMEOUT))

    async def pause(self, channel: str, reason: str, by: str | None) -> None:
        await self.pool.execute(queries.PAUSE, channel, reason, by, timeout=TIMEOUT)

    async def resume(self, channel: str) -> bool:
        return await self.pool.fetchval(queries.RESUME, channel, timeout=TIMEOUT) is not None

    async def suppressions(self, recipient: str | None, limit: int) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(queries.SUPPRESSIONS, recipient, limit, timeout=TIMEOUT))

    async def suppress(self, channel: str, recipient: str, detail: str | None) -> str | None:
        """Adds a manual suppression; returns None when a stronger one (bounce,
        complaint, unsubscribe) is already there and was kept."""
        reason = await self.pool.fetchval(
            queries.SUPPRESS, channel, recipient, detail, timeout=TIMEOUT
        )
        return str(reason) if reason is not None else None

    async def unsuppress(self, channel: str, recipient: str) -> str | None:
        """Removes a suppression; returns the reason it had (None: there was none)."""
        reason = await self.pool.fetchval(queries.UNSUPPRESS, channel, recipient, timeout=TIMEOUT)
        return str(reason) if reason is not None else None
