"""Writes for the feedback loop: provider events, suppressions and preferences.

Kept apart from :mod:`outbox.store` (the claim/complete hot path); like it, this is the
only place that knows these query names, and it translates driver errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from daemon.addresses import mask
from outbox import sql
from outbox.models import FeedbackEvent
from outbox.store import _translated
from outbox.text import db_json

logger = logging.getLogger(__name__)

#: Event type -> the message status it moves to.
_STATUS_FOR_EVENT = {"delivery": "delivered", "complaint": "complained"}
#: Window in which transient bounces are counted towards suppression.
TRANSIENT_BOUNCE_WINDOW_SECONDS = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class FeedbackOutcome:
    """What recording one event did."""

    duplicate: bool
    message_id: int | None = None
    status: str | None = None
    suppressed: str | None = None


class FeedbackStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def store_payload(self, payload: Mapping[str, Any]) -> int:
        """Store a notification shared by several events once; its id for :meth:`record`."""
        text = json.dumps(db_json(payload), sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        async with _translated("store feedback payload"):
            payload_id: int = await self.pool.fetchval(sql.get("store_payload"), digest, text)
        return payload_id

    async def record(
        self,
        event: FeedbackEvent,
        *,
        source: str = "ses",
        transient_bounce_limit: int = 3,
        payload_id: int | None = None,
    ) -> FeedbackOutcome:
        """Record ``event`` once; if it is about a message we sent to the recipient it
        names, advance that message's status and suppress the recipient if it calls for it.

        With ``payload_id`` (see :meth:`store_payload`) the event points to its shared
        notification instead of keeping a copy."""
        async with (
            _translated("record feedback"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            row = await conn.fetchrow(
                sql.get("record_event"),
                source,
                event.source_id,
                event.event_type,
                event.bounce_type or event.complaint_type,
                event.provider_message_id,
                event.recipient.lower() if event.recipient else None,
                "{}" if payload_id is not None else json.dumps(db_json(event.payload)),
                event.occurred_at,
                payload_id,
            )
            if row is None:
                return FeedbackOutcome(duplicate=True)
            message_id = row["message_id"]
            if message_id is None:
                # Not about a message we sent to this recipient (another sender on the
                # same SES identity or topic, or an address we never wrote to): kept for
                # the record, but it suppresses nobody.
                if event.recipient and event.event_type in ("bounce", "complaint"):
                    logger.warning(
                        "%s for %s does not match a message we sent; not suppressing",
                        event.event_type,
                        mask(event.recipient),
                        extra={"action": "feedback", "provider": source},
                    )
                return FeedbackOutcome(False)
            status = _status_for(event)
            if status is not None:
                moved = await conn.fetchval(sql.get("advance_status"), message_id, status)
                status = status if moved else None
            suppressed = await self._suppress_if_needed(conn, event, transient_bounce_limit)
        return FeedbackOutcome(False, message_id, status, suppressed)

    async def _suppress_if_needed(
        self, conn: asyncpg.Connection, event: FeedbackEvent, transient_limit: int
    ) -> str | None:
        if not event.recipient:
            return None
        if event.event_type == "bounce":
            if event.bounce_type == "Permanent":
                return await self._suppress(conn, event.recipient, "bounce", "permanent bounce")
            if event.bounce_type == "Transient":
                count = await conn.fetchval(
                    sql.get("transient_bounces"),
                    event.recipient,
                    TRANSIENT_BOUNCE_WINDOW_SECONDS,
                )
                if count >= transient_limit:
                    detail = f"{count} transient bounces in 30 days"
                    return await self._suppress(conn, event.recipient, "bounce", detail)
        if event.event_type == "complaint" and event.complaint_type != "not-spam":
            detail = f"complaint ({event.complaint_type or 'unspecified'})"
            return await self._suppress(conn, event.recipient, "complaint", detail)
        return None

    @staticmethod
    async def _suppress(conn: asyncpg.Connection, recipient: str, reason: str, detail: str) -> str:
        await conn.fetchval(sql.get("suppress"), "email", recipient, reason, detail)
        return reason

    async def suppress(self, channel: str, recipient: str, reason: str, detail: str = "") -> None:
        async with _translated("suppress"):
            await self.pool.fetchval(sql.get("suppress"), channel, recipient, reason, detail)

    async def unsuppress(self, channel: str, recipient: str) -> None:
        async with _translated("unsuppress"):
            await self.pool.execute(sql.get("unsuppress"), channel, recipient)

    async def unsuppress_unsubscribed(self, channel: str, recipient: str) -> None:
        async with _translated("unsuppress"):
            await self.pool.execute(sql.get("unsuppress_unsubscribed"), channel, recipient)

    async def set_preference(
        self, channel: str, recipient: str, category: str, *, opted_out: bool
    ) -> None:
        async with _translated("preference"):
            await self.pool.execute(
                sql.get("set_preference"), channel, recipient, category, opted_out
            )

    async def preferences(self, channel: str, recipient: str) -> dict[str, bool]:
        async with _translated("preferences"):
            rows = await self.pool.fetch(sql.get("preferences"), channel, recipient)
        return {row["category"]: row["opted_out"] for row in rows}

    async def suppression(self, channel: str, recipient: str) -> str | None:
        async with _translated("suppression"):
            row = await self.pool.fetchrow(sql.get("suppression_of"), channel, recipient)
        return None if row is None else str(row["reason"])


def _status_for(event: FeedbackEvent) -> str | None:
    if event.event_type == "bounce":
        # Only a permanent bounce means the message will never arrive.
        return "bounced" if event.bounce_type == "Permanent" else None
    if event.event_type == "complaint" and event.complaint_type == "not-spam":
        return None
    return _STATUS_FOR_EVENT.get(event.event_type)


QUERY_NAMES = (
    "store_payload",
    "record_event",
    "advance_status",
    "suppress",
    "unsuppress",
    "unsuppress_unsubscribed",
    "transient_bounces",
    "set_preference",
    "preferences",
    "suppression_of",
)
