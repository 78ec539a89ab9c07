"""People, lists and campaigns for the campaign tests, written with plain SQL as an
application would."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg


async def add_people(
    pool: asyncpg.Pool, people: Mapping[str, Mapping[str, Any]], *, email: bool = True
) -> None:
    """Upsert people by key, each with attrs; email ``<key>@example.com`` unless told not to."""
    await pool.executemany(
        "INSERT INTO outbox.recipient (key, email, attrs) VALUES ($1, $2, $3::jsonb)",
        [(key, f"{key}@example.com" if email else None, json.dumps(dict(attrs)))
         for key, attrs in people.items()],
    )  # fmt: skip


async def add_list(pool: asyncpg.Pool, name: str = "news", *, double_opt_in: bool = False) -> int:
    list_id: int = await pool.fetchval(
        "INSERT INTO outbox.list (name, double_opt_in) VALUES ($1, $2) RETURNING id",
        name,
        double_opt_in,
    )
    return list_id


async def subscribe(pool: asyncpg.Pool, list_name: str, keys: Iterable[str]) -> None:
    """``outbox.subscribe`` for each key (active at once on a single-opt-in list)."""
    for key in keys:
        await pool.fetchval(
            "SELECT outbox.subscribe(list_name => $1, recipient_key => $2, source => 'test')",
            list_name,
            key,
        )


async def add_campaign(pool: asyncpg.Pool, list_id: int, **fields: Any) -> int:
    """An ``outbox.campaign`` row (template ``newsletter`` unless told otherwise)."""
    values: dict[str, Any] = {
        "name": "Spring",
        "template": "newsletter",
        "context": {"body": "Our spring news."},
        **fields,
    }
    names = ["list_id", *values]
    args = [
        list_id,
        *(json.dumps(v) if isinstance(v, (dict, list)) else v for v in values.values()),
    ]
    casts = {"segment": "::jsonb", "variants": "::jsonb", "context": "::jsonb",
             "winner_after": "::interval", "test_percent": "::numeric"}  # fmt: skip
    placeholders = [f"${i}{casts.get(n, '')}" for i, n in enumerate(names, 1)]
    campaign_id: int = await pool.fetchval(
        f"INSERT INTO outbox.campaign ({', '.join(names)}) VALUES ({', '.join(placeholders)}) "
        "RETURNING id",
        *args,
    )
    return campaign_id


async def campaign_messages(pool: asyncpg.Pool, campaign_id: int) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT * FROM outbox.message WHERE campaign_id = $1 ORDER BY recipient_key",
            campaign_id,
        )
    )


async def stats(pool: asyncpg.Pool, campaign_id: int) -> dict[str | None, dict[str, int]]:
    rows = await pool.fetch(
        "SELECT * FROM outbox.campaign_stats WHERE campaign_id = $1", campaign_id
    )
    return {
        row["variant"]: {k: v for k, v in dict(row).items() if k not in ("campaign_id", "variant")}
        for row in rows
    }


async def mark_sent(pool: asyncpg.Pool, campaign_id: int) -> None:
    """What a daemon would do to the campaign's messages, without one."""
    await pool.execute(
        "UPDATE outbox.message SET status = 'sent', sent_at = now(), "
        "provider_message_id = 'pm-' || id WHERE campaign_id = $1 AND status = 'pending'",
        campaign_id,
    )


async def add_event(
    pool: asyncpg.Pool, message_id: int, event_type: str, source_id: str, subtype: str | None = None
) -> None:
    """A feedback event as the feedback store records it."""
    await pool.execute(
        "INSERT INTO outbox.event (message_id, source, source_id, event_type, subtype) "
        "VALUES ($1, 'ses', $2, $3, $4) ON CONFLICT DO NOTHING",
        message_id,
        source_id,
        event_type,
        subtype,
    )
