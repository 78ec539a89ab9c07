"""Value objects passed between the store, the renderer and the providers."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    #: The person's in-app inbox (``outbox.inbox``); only ``outbox.notify`` makes these rows.
    INAPP = "inapp"


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
    #: Waiting for its digest (``notify(..., digest_key=...)``).
    BATCHED = "batched"
    #: Folded into a digest message (``digest_message_id``).
    DIGESTED = "digested"


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
        Status.DIGESTED,
    }
)


class Priority(enum.IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3


TRANSACTIONAL = "transactional"


#: The standard library's C scanner: ``json.loads`` wraps it in two regular-expression
#: matches for surrounding whitespace, which cost twice the scan itself on the short
#: objects of a claim (PostgreSQL writes jsonb without surrounding whitespace).
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__


def _loads(text: str) -> Any:
    """``json.loads(text)``, without its detours for the text PostgreSQL writes."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:  # leading whitespace, or not JSON: json.loads says which
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def _json_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = _loads(value)
        if type(value) is dict:  # the usual case, without the slower ABC check below
            return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return dict(value)


# The value objects built for every message are NamedTuples rather than frozen
# dataclasses: as immutable, and three times cheaper to build (a frozen dataclass sets
# each field through object.__setattr__; callgrind: 14k against 5k instructions for an
# eight-field object), which is a tenth of outboxd's own cost per message.


class Message(NamedTuple):
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
    #: Size of the context as the daemon decodes it, as reported by the claim query.
    context_bytes: int = 0
    #: When the message became due; with ``priority`` and ``id``, its place in claim order.
    not_before: datetime | None = None
    #: The person (``outbox.recipient.key``) of a row made by ``outbox.notify``, else None.
    recipient_key: str | None = None
    #: The ``outbox.notification`` that made the row, else None.
    notification_id: int | None = None
    #: What templates see as ``person`` (key, locale, timezone, attrs), for rows of a
    #: person who still exists; None for address-level rows. Set by the store's claim.
    person: dict[str, Any] | None = None
    #: The ``outbox.brand`` key the message is sent for; None: the settings' defaults.
    brand: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Message:
        """From a row of the claim query."""
        get = record.get
        # Positionally, in field order (keywords cost a tenth more here, once per row).
        return cls(
            record["id"],
            record["channel"],
            record["recipient"],
            record["template"],
            _json_object(record["context"]),
            record["category"],
            record["priority"],
            record["locale"],
            _json_object(record["tags"]),
            record["attempts"],
            record["expires_at"],
            record["created_at"],
            get("suppressed_reason"),
            get("context_bytes") or 0,
            get("not_before"),
            get("recipient_key"),
            get("notification_id"),
            None,  # person: set by the store's claim
            get("brand"),
        )

    @property
    def is_transactional(self) -> bool:
        return self.category == TRANSACTIONAL


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Sender(NamedTuple):
    """Who a message is sent as, when its brand says so (else the provider's settings)."""

    #: The From mailbox ('Acme <hi@acme.example>'); None: the configured sender.
    address: str | None = None
    reply_to: str | None = None
    #: SES: ConfigurationSetName and TenantName.
    configuration_set: str | None = None
    tenant: str | None = None


class Rendered(NamedTuple):
    """The rendered parts of one message.

    Email has ``subject`` and ``text`` (and maybe ``html``); SMS has ``sms`` only; in-app
    has ``subject`` (the title) and ``inapp`` (the body, plain text, maybe empty).
    ``headers`` are extra email headers (e.g. ``List-Unsubscribe``).
    """

    subject: str | None = None
    text: str | None = None
    html: str | None = None
    sms: str | None = None
    headers: Mapping[str, str] = _NO_HEADERS
    inapp: str | None = None
    #: The brand's sender, set by the dispatcher for a branded message.
    sender: Sender | None = None


class InboxItem(NamedTuple):
    """An in-app item to be written into ``outbox.inbox`` with its message's result."""

    recipient_key: str
    notification_id: int | None
    category: str
    priority: int
    title: str
    body: str
    url: str | None
    #: The item's ``data`` as JSON text (an object).
    data: str


class Receipt(NamedTuple):
    """What a provider returns for an accepted message."""

    provider: str
    provider_message_id: str | None = None
    #: In-app only: the item that the result write puts into ``outbox.inbox``.
    item: InboxItem | None = None


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
