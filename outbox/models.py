"""Value objects passed between the store, the renderer and the providers."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"


class Status(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


#: Statuses a message never leaves by itself (feedback may still move sent -> delivered...).
TERMINAL_STATUSES = frozenset(
    {
        Status.SENT,
        Status.DELIVERED,
        Status.BOUNCED,
        Status.COMPLAINED,
        Status.FAILED,
        Status.SUPPRESSED,
        Status.EXPIRED,
        Status.CANCELLED,
    }
)


class Priority(enum.IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3


TRANSACTIONAL = "transactional"


def _json_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return dict(value)


@dataclass(frozen=True, slots=True)
class Message:
    """A claimed outbox row, as the daemon sees it while delivering it."""

    id: int
    channel: str
    recipient: str
    template: str
    context: dict[str, Any]
    category: str
    priority: int
    locale: str | None
    tags: dict[str, Any]
    attempts: int
    expires_at: datetime | None
    created_at: datetime
    #: Set by the claim query when the recipient is suppressed or opted out of the category.
    suppressed_reason: str | None = None
    #: Stored size of the context (compressed), as reported by the claim query.
    context_bytes: int = 0

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Message:
        return cls(
            id=record["id"],
            channel=record["channel"],
            recipient=record["recipient"],
            template=record["template"],
            context=_json_object(record["context"]),
            category=record["category"],
            priority=record["priority"],
            locale=record["locale"],
            tags=_json_object(record["tags"]),
            attempts=record["attempts"],
            expires_at=record["expires_at"],
            created_at=record["created_at"],
            suppressed_reason=record.get("suppressed_reason"),
            context_bytes=record.get("context_bytes") or 0,
        )

    @property
    def is_transactional(self) -> bool:
        return self.category == TRANSACTIONAL


@dataclass(frozen=True, slots=True)
class Rendered:
    """The rendered parts of one message.

    Email has ``subject`` and ``text`` (and maybe ``html``); SMS has ``sms`` only.
    ``headers`` are extra email headers (e.g. ``List-Unsubscribe``).
    """

    subject: str | None = None
    text: str | None = None
    html: str | None = None
    sms: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a provider returns for an accepted message."""

    provider: str
    provider_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """A delivery event reported back by a provider (bounce, complaint, delivery...)."""

    source_id: str
    event_type: str
    provider_message_id: str | None
    recipient: str | None
    occurred_at: datetime | None
    payload: dict[str, Any]
    #: For bounces: "Permanent", "Transient" or "Undetermined".
    bounce_type: str | None = None
    #: For complaints: the feedback type, e.g. "abuse" or "not-spam".
    complaint_type: str | None = None
