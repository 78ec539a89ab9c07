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
    events = parse_ses_message(message)
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
    events = parse_ses_message(message)
    assert [e.recipient for e in events] == ["ann@example.com", "bob@example.com"]
    assert len({e.source_id for e in events}) == 2


def test_the_same_bounce_in_either_format_has_the_same_source_id() -> None:
    """Identity notifications and event publishing report one bounce (one feedbackId)."""
    published = json.loads((FIXTURES / "event_bounce_permanent.json").read_text())
    notified = json.loads((FIXTURES / "notification_bounce_permanent.json").read_text())
    published["bounce"]["feedbackId"] = notified["bounce"]["feedbackId"]
    [ann, _] = parse_ses_message(json.dumps(published))
    [same] = parse_ses_message(json.dumps(notified))
    assert ann.source_id == same.source_id and ann.event_type == "bounce"


def test_distinct_events_of_one_message_have_distinct_source_ids() -> None:
    click = json.loads((FIXTURES / "event_click.json").read_text())
    later = {**click, "click": {**click["click"], "timestamp": "2026-11-22T10:12:00.000Z"}}
    other_link = {**click, "click": {**click["click"], "link": "https://app.example.com/x"}}
    ids = {parse_ses_message(json.dumps(e))[0].source_id for e in (click, later, other_link)}
    assert len(ids) == 3
    assert parse_ses_message(json.dumps(click))[0].source_id in ids  # and stable


@pytest.mark.parametrize(
    "detail",
    [
        {"bouncedRecipients": ["ann@example.com"]},
        {"bouncedRecipients": 7},
        {"bouncedRecipients": [None]},
    ],
)
def test_odd_recipient_lists_name_nobody(detail: dict[str, object]) -> None:
    message = {
        "eventType": "Bounce",
        "mail": {"messageId": "m", "destination": 5},
        "bounce": detail,
    }
    [event] = parse_ses_message(json.dumps(message))
    assert event.recipient is None


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
        parse_ses_message(message)


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_events_are_rejected(depth: int) -> None:
    message = '{"eventType": "Send", "mail": {"messageId": "m", "x": ' + "[" * depth
    message += "]" * depth + "}}"
    with pytest.raises(SesEventError, match="nested"):
        parse_ses_message(message)
