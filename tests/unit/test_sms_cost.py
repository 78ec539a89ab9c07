"""SMS receipts read from SNS delivery-status records, and the monthly spend gate."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from daemon.feedback.sms_receipts import parse
from daemon.feedback.sms_spend import SpendGate, month_start


def _event(record: object, **extra: object) -> dict[str, object]:
    return {"eventId": "e1", "timestamp": 1_764_590_400_000, "message": json.dumps(record),
            **extra}  # fmt: skip


def test_a_success_record() -> None:
    receipt = parse(_event({
        "notification": {"messageId": "m-1", "timestamp": "2026-12-01 12:00:00.000"},
        "delivery": {"priceInUSD": 0.00645, "providerResponse": "Accepted"},
        "status": "SUCCESS",
    }))  # fmt: skip
    assert receipt is not None
    assert (receipt.provider_message_id, receipt.delivered, receipt.price_usd) == (
        "m-1", True, 0.00645,
    )  # fmt: skip
    assert receipt.response == "Accepted" and receipt.event_id == "e1"
    assert receipt.occurred == datetime(2025, 12, 1, 12, 0, tzinfo=UTC)


def test_a_failure_record_without_a_price() -> None:
    receipt = parse(_event({"notification": {"messageId": "m-2"},
                            "delivery": {"providerResponse": "Unreachable"},
                            "status": "FAILURE"}))  # fmt: skip
    assert receipt is not None and not receipt.delivered and receipt.price_usd is None


def test_anything_else_is_not_a_receipt() -> None:
    for message in ("not json", json.dumps([1]), json.dumps({"status": "SUCCESS"}),
                    json.dumps({"notification": {"messageId": 5}, "status": "SUCCESS"}),
                    json.dumps({"notification": {"messageId": "m"}, "status": "MAYBE"}),
                    "x" * 70_000):  # fmt: skip
        assert parse({"eventId": "e", "timestamp": 0, "message": message}) is None


def test_the_gate_counts_unpriced_sms_at_the_higher_of_estimate_and_average() -> None:
    gate = SpendGate(cap_usd=0.10, estimate_usd=0.01)
    gate.month = month_start()
    gate.spent_usd, gate.priced, gate.unpriced = 0.06, 3, 1  # average 0.02 > estimate
    assert gate.per_sms_usd == 0.02
    assert round(gate.committed_usd, 6) == 0.08
    assert gate.allows_one_more()  # 0.08 + 0.02 = 0.10: not passed
    gate.sent_since += 1
    assert not gate.allows_one_more()  # 0.10 + 0.02 would pass it


def test_no_cap_always_allows() -> None:
    gate = SpendGate(cap_usd=None, estimate_usd=0.01)
    gate.spent_usd = 1e9
    assert gate.allows_one_more()
