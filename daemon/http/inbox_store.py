"""Reads and writes of the in-app inbox for the HTTP routes and the event streams.

Like :mod:`outbox.store`, the only place that knows these query names; driver errors are
translated into :class:`outbox.errors.DatabaseError`. State changes go through the SQL
functions of migration 0008 (``outbox.inbox_mark_read`` ...), so the routes behave exactly
like an application calling them, escalation cancelling included (a trigger does that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from outbox import sql
from outbox.store import _translated


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def item_dict(row: asyncpg.Record) -> dict[str, Any]:
    """An item as the contract's JSON object: ids as numbers, timestamps ISO 8601 or null."""
    return {
        "id": row["id"],
        "recipient_key": row["recipient_key"],
        "notification_id": row["notification_id"],
        "message_id": row["message_id"],
        "category": row["category"],
        "priority": row["priority"],
        "title": row["title"],
        "body": row["body"],
        "url": row["url"],
        "data": json.loads(row["data"]),
        "created_at": _iso(row["created_at"]),
        "seen_at": _iso(row["seen_at"]),
        "read_at": _iso(row["read_at"]),
        "archived_at": _iso(row["archived_at"]),
    }


def dumps(value: Any) -> str:
    """Compact JSON on one line (an SSE data line must not contain a newline)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Counts:
    unread: int
    unseen: int
    #: The person's newest item id (0 when they have none).
    newest: int = 0

    def as_json(self) -> str:
        return f'{{"unread":{self.unread},"unseen":{self.unseen}}}'


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    unread: int
    next: int | None


#: Per-item actions of the routes -> their query.
ACTIONS = {"read": "inbox_mark_read", "unread": "inbox_mark_unread", "archive": "inbox_archive"}


class InboxStore:
    """Named inbox queries over the daemon's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def page(
        self,
        key: str,
        *,
        before: int | None,
        unread_only: bool,
        category: str | None,
        include_archived: bool,
        limit: int,
    ) -> Page:
        async with _translated("inbox page"), self.pool.acquire() as conn:
            rows = await conn.fetch(
                sql.get("inbox_page"),
                key, before, unread_only, category, include_archived, limit,
            )  # fmt: skip
            unread = await conn.fetchval(
                sql.get("inbox_page_unread"), key, category, include_archived
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            [item_dict(r) for r in rows], int(unread), rows[-1]["id"] if more and rows else None
        )

    async def counts(self, key: str) -> Counts:
        async with _translated("inbox counts"):
            row = await self.pool.fetchrow(sql.get("inbox_counts"), key)
        assert row is not None
        return Counts(int(row["unread"]), int(row["unseen"]), int(row["newest"] or 0))

    async def counts_many(self, keys: Sequence[str]) -> dict[str, Counts]:
        async with _translated("inbox counts"):
            rows = await self.pool.fetch(sql.get("inbox_counts_many"), list(keys))
        return {r["recipient_key"]: Counts(int(r["unread"]), int(r["unseen"])) for r in rows}

    async def act(self, key: str, item_id: int, action: str) -> dict[str, Any] | None:
        """Apply ``action`` (read, unread, archive) to one of ``key``'s items; the item as it
        is afterwards, or None when ``key`` has no such item."""
        async with (
            _translated(f"inbox {action}"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(sql.get(ACTIONS[action]), key, item_id)
            row = await conn.fetchrow(sql.get("inbox_item"), key, item_id)
        return None if row is None else item_dict(row)

    async def mark_all_read(self, key: str) -> int:
        async with _translated("inbox read-all"):
            return int(await self.pool.fetchval(sql.get("inbox_mark_all_read"), key))

    async def mark_seen(self, key: str) -> int:
        async with _translated("inbox seen"):
            return int(await self.pool.fetchval(sql.get("inbox_mark_seen"), key))

    async def items(self, ids: Sequence[int]) -> list[asyncpg.Record]:
        async with _translated("inbox items"):
            return list(await self.pool.fetch(sql.get("inbox_items"), list(ids)))

    async def keys_of(self, ids: Sequence[int]) -> dict[int, str]:
        async with _translated("inbox keys"):
            rows = await self.pool.fetch(sql.get("inbox_keys_of"), list(ids))
        return {r["id"]: r["recipient_key"] for r in rows}

    async def replay(self, key: str, after_id: int, limit: int) -> list[asyncpg.Record]:
        async with _translated("inbox replay"):
            return list(await self.pool.fetch(sql.get("inbox_replay"), key, after_id, limit))


#: Every query name this store uses (a unit test checks each exists and is used).
QUERY_NAMES = (
    "inbox_page",
    "inbox_page_unread",
    "inbox_item",
    "inbox_counts",
    "inbox_counts_many",
    *ACTIONS.values(),
    "inbox_mark_all_read",
    "inbox_mark_seen",
    "inbox_items",
    "inbox_keys_of",
    "inbox_replay",
)
