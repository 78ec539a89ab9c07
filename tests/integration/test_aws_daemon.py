"""The daemon with AWS providers: paused accounts, throttling, cluster-wide rate limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.integration.aws_fake import FakeAws, aws_credentials, fake_aws
from tests.integration.daemon_helpers import (
    drain,
    make_settings,
    running,
    statuses,
    welcome_backlog,
)

__all__ = ["aws_credentials", "fake_aws"]


async def test_paused_account_opens_the_circuit_then_a_probe_closes_it(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, fake_aws: FakeAws
) -> None:
    await welcome_backlog(pool, 5)
    fake_aws.failure = (400, "SendingPausedException")
    settings = make_settings(
        database_url, tmp_path,
        email={"provider": "ses", "rate": 1000},
        aws={"endpoint_url": fake_aws.url, "timeout": 2},
        worker={"pause_seconds": 0.5, "lease_seconds": 10},
    )  # fmt: skip
    async with running(settings, database_url) as (daemon, recorder):
        await recorder.wait_for(5, within=10)
        assert "email" in daemon.paused and "SendingPaused" in daemon.paused["email"]
        rows = await statuses(pool)
        assert {r["status"] for r in rows.values()} == {"pending"}
        assert {r["attempts"] for r in rows.values()} == {0}  # no attempt used up
        calls_while_paused = len(fake_aws.requests)
        await asyncio.sleep(0.2)
        assert len(fake_aws.requests) == calls_while_paused  # nothing claimed while open
        fake_aws.failure = None
        await recorder.wait_for(10, within=15)
        for _ in range(100):
            if await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status='sent'") == 5:
                break
            await asyncio.sleep(0.1)
        assert daemon.paused == {}
        assert await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status='sent'") == 5


async def test_throttling_retries_without_using_attempts(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, fake_aws: FakeAws
) -> None:
    await welcome_backlog(pool, 3)
    fake_aws.failure = (429, "TooManyRequestsException")
    settings = make_settings(
        database_url, tmp_path,
        email={"provider": "ses", "rate": 100},
        aws={"endpoint_url": fake_aws.url, "timeout": 2},
    )  # fmt: skip
    async with running(settings, database_url) as (_daemon, recorder):
        await recorder.wait_for(3, within=10)
        fake_aws.failure = None
        await recorder.wait_for(6, within=15)
    rows = await statuses(pool)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("sent", 1)}
    factor = await pool.fetchval("SELECT factor FROM outbox.rate_bucket WHERE channel='email'")
    assert factor < 1.0  # the cluster's email rate backed off


@pytest.mark.slow
async def test_two_daemons_together_hold_the_configured_rate(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    rate, count = 40.0, 240
    await welcome_backlog(pool, count)
    settings = make_settings(database_url, tmp_path, email={"provider": "null", "rate": rate})
    await asyncio.gather(drain(settings, database_url), drain(settings, database_url))
    row = await pool.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM max(sent_at) - min(sent_at))::float8 AS span "
        "FROM outbox.message WHERE status = 'sent'"
    )
    assert row["n"] == count
    # The bucket starts full (one second's worth); after that the rate holds.
    achieved = (count - rate) / row["span"]
    assert 0.9 * rate <= achieved <= 1.05 * rate, achieved
