from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.feedback.ses_events import SesEventError, parse_ses_message

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ses"
EXPECTED = {
    "notification_bounce_permanent": ("bounce", "Permanent", None),
    "notification_bounce_transient": ("bounce", "Transient", None),
    "notification_complaint_abuse": ("complaint", None, "abuse"),
    "notification_delivery": ("delivery", None, None),
    "event_send": ("send", None, None),
    "event_delivery": ("delivery", None, None),
    "event_bounce_permanent": ("bounce", "Permanent", None),
    "event_complaint_not_spam": ("complaint", None, "not-spam"),
    "event_reject": ("reject", None, None),
    "event_open": ("open", None, None),
    "event_click": ("click", None, None),
    "event_rendering_failure": ("rendering_failure", None, None),
    "event_delivery_delay": ("delivery_delay", None, None),
    "event_subscription": ("subscription", None, None),
}


def test_every_fixture_is_covered() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses(name: str) -> None:
    message = (FIXTURES / f"{name}.json").read_text()
    events = parse_ses_message(message, sns_message_id="sns-1")
    kind, bounce_type, complaint_type = EXPECTED[name]
    assert {e.event_type for e in events} == {kind}
    first = events[0]
    assert first.provider_message_id == "0100018c-ses-message-id-000001"
    assert (first.bounce_type, first.complaint_type) == (bounce_type, complaint_type)
    assert first.recipient == "ann@example.com"
    assert first.occurred_at is not None
    assert first.payload == json.loads(message)


def test_one_event_per_bounced_recipient_with_distinct_source_ids() -> None:
    message = (FIXTURES / "event_bounce_permanent.json").read_text()
    events = parse_ses_message(message, sns_message_id="sns-9")
    assert [e.recipient for e in events] == ["ann@example.com", "bob@example.com"]
    assert [e.source_id for e in events] == ["sns-9:ann@example.com", "sns-9:bob@example.com"]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("nope", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"eventType": "Teleport", "mail": {}}', "unknown SES event type"),
        ('{"eventType": "Send"}', "without mail"),
        ('{"eventType": "Send", "mail": {"messageId": ""}, "send": {}}', "messageId"),
        ('{"eventType": "Bounce", "mail": {"messageId": "m"}, "bounce": []}', "without mail"),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(message: str, reason: str) -> None:
    with pytest.raises(SesEventError, match=reason):
        parse_ses_message(message, sns_message_id="s")


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_events_are_rejected(depth: int) -> None:
    message = '{"eventType": "Send", "mail": {"messageId": "m", "x": ' + "[" * depth
    message += "]" * depth + "}}"
    with pytest.raises(SesEventError, match="nested"):
        parse_ses_message(message, sns_message_id="s")
