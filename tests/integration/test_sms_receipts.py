"""SMS receipts through moto's SNS and CloudWatch Logs servers: delivered or failed with
the carrier's reason and the price, totals in `outboxd stats`, and the monthly cap."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import boto3

from tests.integration.aws_fake import ACCOUNT, aws_credentials, moto_url
from tests.integration.daemon_helpers import drain, make_settings, running, statuses

__all__ = ["aws_credentials", "moto_url"]

GROUP = f"sns/us-east-1/{ACCOUNT}/DirectPublishToPhoneNumber"
NUMBERS = ["+14155552671", "+14155552672", "+14155552673"]


def _settings(database_url: str, tmp_path: Path, moto: str, **sms: Any) -> Any:
    return make_settings(
        database_url, tmp_path, aws={"endpoint_url": moto},
        sms={"provider": "sns", "receipts": True, "receipt_interval": 0.2, **sms},
        worker={"pause_seconds": 0.3},
    )  # fmt: skip


async def _enqueue_sms(pool: asyncpg.Pool, numbers: list[str]) -> list[int]:
    return [
        await pool.fetchval(
            "SELECT outbox.enqueue(channel => 'sms', recipient => $1, "
            "template => 'sms/verification_code', context => '{\"code\": \"123456\"}')",
            number,
        )
        for number in numbers
    ]


def _record(provider_id: str, number: str, status: str, response: str) -> str:
    return json.dumps({
        "notification": {"messageId": provider_id, "timestamp": "2026-12-01 10:00:00.000"},
        "delivery": {"destination": number, "priceInUSD": 0.00645, "smsType": "Transactional",
                     "providerResponse": response, "numberOfMessageParts": 1},
        "status": status,
    })  # fmt: skip


def _write_logs(moto: str, records: dict[str, list[str]]) -> None:
    logs = boto3.client("logs", region_name="us-east-1", endpoint_url=moto)
    now = int(time.time() * 1000)
    for group, messages in records.items():
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="s1")
        logs.put_log_events(
            logGroupName=group, logStreamName="s1",
            logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)],
        )  # fmt: skip


async def test_receipts_mark_delivered_and_failed_with_reason_and_price(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, moto_url: str
) -> None:
    ids = await _enqueue_sms(pool, NUMBERS)
    settings = _settings(database_url, tmp_path, moto_url)
    await drain(settings.model_copy(update={"sms": settings.sms.model_copy(
        update={"receipts": False})}), database_url)  # fmt: skip
    rows = await statuses(pool)
    assert [rows[i]["status"] for i in ids] == ["sent"] * 3
    provider_ids = [rows[i]["provider_message_id"] for i in ids]
    await asyncio.to_thread(_write_logs, moto_url, {
        GROUP: [_record(provider_ids[0], NUMBERS[0], "SUCCESS",
                        "Message has been accepted by phone carrier"),
                "not a delivery-status record"],
        f"{GROUP}/Failure": [_record(provider_ids[1], NUMBERS[1], "FAILURE",
                                     "Phone is currently unreachable/unavailable")],
    })  # fmt: skip
    async with running(settings, database_url):
        for _ in range(300):
            rows = await statuses(pool)
            if rows[ids[0]]["status"] == "delivered" and rows[ids[1]]["status"] == "failed":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a few more passes: nothing is counted twice
    rows = await statuses(pool)
    assert [rows[i]["status"] for i in ids] == ["delivered", "failed", "sent"]
    assert float(rows[ids[0]]["price_usd"]) == 0.00645
    assert rows[ids[0]]["provider_response"] == "Message has been accepted by phone carrier"
    assert rows[ids[1]]["last_error"] == (
        "SMS not delivered: Phone is currently unreachable/unavailable"
    )
    assert rows[ids[2]]["price_usd"] is None
    events = await pool.fetchval("SELECT count(*) FROM outbox.event WHERE source = 'sns-sms'")
    assert events == 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(OUTBOXD_DATABASE_URL=database_url, OUTBOXD_DATA_DIR=str(tmp_path / "d"))
    stats = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "daemon.cli", "stats", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(stats.stdout)["sms_month"] == {
        "spent_usd": 0.0129, "priced": 2, "unpriced": 1, "delivered": 1, "failed": 1,
    }  # fmt: skip


async def test_the_monthly_cap_pauses_sms_before_it_is_passed(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, moto_url: str
) -> None:
    # Already this month: two SMS priced at 0.01 USD each.
    await pool.execute(
        "INSERT INTO outbox.message (channel, recipient, template, status, sent_at, price_usd)"
        " SELECT 'sms', '+14155552671', 't', 'delivered', now(), 0.01 FROM generate_series(1, 2)"
    )
    ids = await _enqueue_sms(pool, [f"+1415555{2680 + i}" for i in range(6)])
    settings = _settings(database_url, tmp_path, moto_url, receipts=False, monthly_cap_usd=0.05,
                         price_estimate_usd=0.01)  # fmt: skip
    async with running(settings, database_url) as (daemon, recorder):
        await recorder.wait_for(6)
        for _ in range(100):
            if "sms" in daemon.paused:
                break
            await asyncio.sleep(0.05)
        assert "monthly SMS spend cap of 0.05 USD reached" in daemon.paused["sms"]
    rows = await statuses(pool)
    sent = [i for i in ids if rows[i]["status"] == "sent"]
    # 0.02 spent + 3 x 0.01 = 0.05: the fourth would pass the cap.
    assert len(sent) == 3
    assert {rows[i]["status"] for i in ids} - {"sent"} == {"pending"}
    assert {rows[i]["attempts"] for i in ids if i not in sent} == {0}  # no attempt used
