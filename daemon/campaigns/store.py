"""The named queries of lists, campaigns and engagement (``sql/queries.sql``); the only
place in the daemon that knows them. Driver errors become :class:`outbox.errors.DatabaseError`,
except where a caller must tell a refused start from a lost connection (:meth:`start_due`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from outbox import sql
from outbox.store import _translated

logger = logging.getLogger(__name__)

#: An expansion of millions of rows outlasts the pool's 30 s statement timeout and 60 s
#: command timeout; these calls get their own, generous bounds.
LONG_STATEMENT = "30min"
LONG_SECONDS = 1800.0

#: SQLSTATE classes that mean "this start cannot succeed as things are": bad data (22),
#: a broken constraint (23), a raised exception (P0), a schema mismatch (42), a statement
#: that was cancelled or ran out of time (57014). Anything else (a lost connection) is
#: retried on the next pass.
_REFUSALS = ("22", "23", "P0", "42")


def refused(exc: asyncpg.PostgresError) -> bool:
    state = getattr(exc, "sqlstate", "") or ""
    return state.startswith(_REFUSALS) or state == "57014"


@dataclass(frozen=True, slots=True)
class Started:
    """A campaign the loop started (or tried to)."""

    campaign_id: int
    messages: int = 0
    error: str | None = None


class CampaignStore:
    """Campaign, subscription and engagement queries over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- the daemon's loop ---------------------------------------------------------------
    async def start_due(self) -> Started | None:
        """Start the next scheduled campaign whose time has come, if any.

        A start the database refuses (see :func:`refused`) sends the campaign back to draft
        with ``last_error``; the error is returned, not raised.
        """
        async with (
            _translated("start campaign"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(f"SET LOCAL statement_timeout = '{LONG_STATEMENT}'")
            campaign_id = await conn.fetchval(sql.get("campaign_due"))
            if campaign_id is None:
                return None
            try:
                async with conn.transaction():
                    made = await conn.fetchval(
                        sql.get("campaign_start"), campaign_id, timeout=LONG_SECONDS
                    )
            except asyncpg.PostgresError as exc:
                if not refused(exc):
                    raise
                reason = f"start failed: {exc}"
                await conn.execute(sql.get("campaign_start_failed"), campaign_id, reason)
                return Started(campaign_id, error=reason)
        return Started(campaign_id, int(made or 0))

    async def pick_due_winner(self) -> tuple[int, str] | None:
        """Choose the winner of the next A/B test whose time has come and send the rest."""
        async with (
            _translated("pick A/B winner"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(f"SET LOCAL statement_timeout = '{LONG_STATEMENT}'")
            campaign_id = await conn.fetchval(sql.get("campaign_winner_due"))
            if campaign_id is None:
                return None
            winner = await conn.fetchval(
                sql.get("campaign_pick_winner"), campaign_id, timeout=LONG_SECONDS
            )
        return int(campaign_id), str(winner)

    async def finish(self) -> int:
        """Mark sent the campaigns whose messages are all finished; how many."""
        async with _translated("finish campaigns"):
            done: int = await self.pool.fetchval(sql.get("campaign_finish"))
        return done

    async def advance_sequences(self, max_rows: int) -> int:
        """Run due sequence steps of up to ``max_rows`` enrollments; how many were handled."""
        async with _translated("advance sequences"):
            handled: int = await self.pool.fetchval(sql.get("advance_sequences"), max_rows)
        return handled

    # -- the command line -----------------------------------------------------------------
    async def campaigns(self) -> list[asyncpg.Record]:
        async with _translated("campaigns"):
            return list(await self.pool.fetch(sql.get("campaign_list")))

    async def campaign(self, campaign_id: int) -> asyncpg.Record | None:
        async with _translated("campaign"):
            row: asyncpg.Record | None = await self.pool.fetchrow(
                sql.get("campaign_by_id"), campaign_id
            )
        return row

    async def audience_estimate(self, campaign_id: int) -> int:
        async with _translated("audience"):
            n = await self.pool.fetchval(
                sql.get("campaign_audience_estimate"), campaign_id, timeout=LONG_SECONDS
            )
        return int(n or 0)

    async def message_id_high_water(self) -> int:
        async with _translated("progress"):
            return int(await self.pool.fetchval(sql.get("message_id_high_water")))

    async def start(self, campaign_id: int) -> int:
        """``outbox.start_campaign``: messages made (0 when it was only scheduled)."""
        async with (
            _translated("start campaign"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(f"SET LOCAL statement_timeout = '{LONG_STATEMENT}'")
            made = await conn.fetchval(sql.get("campaign_start"), campaign_id, timeout=LONG_SECONDS)
        return int(made or 0)

    async def cancel(self, campaign_id: int) -> int:
        """``outbox.cancel_campaign``: pending messages cancelled."""
        async with (
            _translated("cancel campaign"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(f"SET LOCAL statement_timeout = '{LONG_STATEMENT}'")
            stopped = await conn.fetchval(
                sql.get("campaign_cancel"), campaign_id, timeout=LONG_SECONDS
            )
        return int(stopped or 0)

    async def progress(self, campaign_id: int) -> dict[str, int]:
        """The campaign's messages by status."""
        async with _translated("progress"):
            rows = await self.pool.fetch(sql.get("campaign_progress"), campaign_id)
        return {row["status"]: int(row["n"]) for row in rows}

    async def stats(self, campaign_id: int) -> list[dict[str, Any]]:
        """The rows of ``outbox.campaign_stats`` for the campaign, one per variant."""
        async with (
            _translated("campaign stats"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(f"SET LOCAL statement_timeout = '{LONG_STATEMENT}'")
            rows = await conn.fetch(sql.get("campaign_stats_of"), campaign_id, timeout=LONG_SECONDS)
        return [dict(row) for row in rows]

    async def rates(self, campaign_id: int) -> list[dict[str, Any]]:
        async with _translated("variant rates"):
            rows = await self.pool.fetch(sql.get("campaign_rates"), campaign_id)
        return [dict(row) for row in rows]

    # -- the HTTP routes ------------------------------------------------------------------
    async def subscription(self, list_id: int, recipient_key: str) -> asyncpg.Record | None:
        """(status, list_name) of a subscription, or None."""
        async with _translated("subscription"):
            row: asyncpg.Record | None = await self.pool.fetchrow(
                sql.get("subscription_of"), list_id, recipient_key
            )
        return row

    async def confirm(self, list_id: int, recipient_key: str) -> str | None:
        """Confirm a pending subscription; the status afterwards, None if there is none."""
        async with _translated("confirm subscription"):
            status: str | None = await self.pool.fetchval(
                sql.get("confirm_subscription"), list_id, recipient_key
            )
        return status

    async def record_engagement(
        self, message_id: int, event_type: str, source_id: str, payload: dict[str, Any]
    ) -> bool:
        """Record an open or click once; True if it was new."""
        async with _translated("record engagement"):
            row = await self.pool.fetchval(
                sql.get("record_engagement"), message_id, event_type, source_id, json.dumps(payload)
            )
        return row is not None


#: Every query name the campaign store uses; a unit test checks each exists in queries.sql.
QUERY_NAMES = (
    "campaign_due",
    "campaign_start",
    "campaign_start_failed",
    "campaign_winner_due",
    "campaign_pick_winner",
    "campaign_finish",
    "advance_sequences",
    "campaign_list",
    "campaign_by_id",
    "campaign_audience_estimate",
    "message_id_high_water",
    "campaign_progress",
    "campaign_stats_of",
    "campaign_rates",
    "campaign_cancel",
    "subscription_of",
    "confirm_subscription",
    "record_engagement",
)

__all__ = ["QUERY_NAMES", "CampaignStore", "Started", "refused"]
