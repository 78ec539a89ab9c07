"""SES feedback in both formats: identity notifications (``notificationType``) and
event publishing (``eventType``), turned into one :class:`FeedbackEvent` per recipient."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from daemon.feedback import bounded_json
from outbox.models import FeedbackEvent

#: SES events nest five levels at most (bounce.bouncedRecipients[0].x); room to spare.
MAX_EVENT_DEPTH = 32

#: SES event name -> (our event type, key of the event's detail object)
_EVENTS = {
    "Send": ("send", "send"),
    "Delivery": ("delivery", "delivery"),
    "Bounce": ("bounce", "bounce"),
    "Complaint": ("complaint", "complaint"),
    "Reject": ("reject", "reject"),
    "Open": ("open", "open"),
    "Click": ("click", "click"),
    "Rendering Failure": ("rendering_failure", "failure"),
    "DeliveryDelay": ("delivery_delay", "deliveryDelay"),
    "Subscription": ("subscription", "subscription"),
}


#: Event type -> the key of its detail object's list of recipients.
_RECIPIENT_LISTS = {
    "bounce": "bouncedRecipients",
    "complaint": "complainedRecipients",
    "delivery_delay": "delayedRecipients",
}


class SesEventError(ValueError):
    """The SNS message is not an SES event we understand."""


def _recipients(event_type: str, detail: dict[str, Any], mail: dict[str, Any]) -> list[str]:
    if event_type in _RECIPIENT_LISTS:
        listed = detail.get(_RECIPIENT_LISTS[event_type])
        found = [r.get("emailAddress") for r in _list(listed) if isinstance(r, dict)]
    elif event_type == "delivery":
        found = _list(detail.get("recipients"))
    else:
        found = _list(mail.get("destination"))
    return [r for r in found if isinstance(r, str) and r]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _source_id(
    provider_message_id: str, event_type: str, detail: dict[str, Any], recipient: str | None
) -> str:
    """What the event itself says it is: SES's feedbackId for bounces and complaints, else
    its timestamp (and link, for clicks), for this recipient of this SES message.

    Not the SNS MessageId: the same event can arrive in several SNS messages (two topics,
    identity notifications beside event publishing, a replay under a new MessageId), and
    must count once. Hashed, because a click's link may be longer than an index entry.
    """
    said = [str(detail.get(key, "")) for key in ("feedbackId", "timestamp", "link")]
    identity = "\n".join([provider_message_id, event_type, recipient or "", *said])
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_ses_message(message: str) -> list[FeedbackEvent]:
    """The events in one SNS ``Message``, one per recipient, each with the
    ``source_id`` that deduplicates it (see :func:`_source_id`)."""
    try:
        data = bounded_json.loads(message, max_depth=MAX_EVENT_DEPTH)
    except bounded_json.JsonRejected as exc:
        raise SesEventError(f"message is {exc}") from exc
    if not isinstance(data, dict):
        raise SesEventError("message is not a JSON object")
    name = data.get("eventType") or data.get("notificationType")
    if name == "AmazonSnsSubscriptionSucceeded":
        return []
    if name not in _EVENTS:
        raise SesEventError(f"unknown SES event type {name!r}")
    event_type, detail_key = _EVENTS[str(name)]
    mail = data.get("mail")
    detail = data.get(detail_key, {})
    if not isinstance(mail, dict) or not isinstance(detail, dict):
        raise SesEventError(f"{name} event without mail or {detail_key} object")
    provider_message_id = mail.get("messageId")
    if not isinstance(provider_message_id, str) or not provider_message_id:
        raise SesEventError(f"{name} event without mail.messageId")
    occurred = _time(detail.get("timestamp")) or _time(mail.get("timestamp"))
    bounce_type = detail.get("bounceType") if event_type == "bounce" else None
    complaint_type = detail.get("complaintFeedbackType") if event_type == "complaint" else None
    recipients: list[str | None] = [*_recipients(event_type, detail, mail)] or [None]
    return [
        FeedbackEvent(
            source_id=_source_id(provider_message_id, event_type, detail, recipient),
            event_type=event_type,
            provider_message_id=provider_message_id,
            recipient=recipient,
            occurred_at=occurred,
            payload=data,
            bounce_type=bounce_type if isinstance(bounce_type, str) else None,
            complaint_type=complaint_type if isinstance(complaint_type, str) else None,
        )
        for recipient in recipients
    ]
