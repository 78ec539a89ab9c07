"""A bounce naming many recipients, posted to a real daemon's SNS webhook: the
notification is stored once, not once per recipient."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from daemon.main import Daemon
from tests.integration.daemon_helpers import make_settings
from tests.sns_signing import TOPIC, Signer, body

#: 5,000 in the measurement (docs/PERFORMANCE.md); fewer here, for time.
RECIPIENTS = 1000
_SIZE = """SELECT pg_total_relation_size('outbox.event')
             + coalesce(pg_total_relation_size(to_regclass('outbox.feedback_payload')), 0)"""


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Daemon, Signer]]:
    signer = Signer.create(tmp_path / "certs")
    settings = make_settings(
        database_url, tmp_path, http={"host": "127.0.0.1", "port": 0, "admin_port": 0},
        feedback={"topic_arns": TOPIC, "cert_dir": tmp_path / "certs"},
    )  # fmt: skip
    running = Daemon(settings, dsn=database_url)
    task = asyncio.create_task(running.run())
    await asyncio.wait_for(running.started.wait(), 30)
    try:
        yield running, signer
    finally:
        running.request_stop()
        await task


def _bounce(count: int) -> str:
    return json.dumps({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Transient", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": f"u{i}@x.example"} for i in range(count)],
            "timestamp": "2026-11-22T10:00:01.000Z", "feedbackId": "feedback-big-1",
        },
        "mail": {"timestamp": "2026-11-22T10:00:00.000Z", "messageId": "ses-big-1",
                 "source": "noreply@acme.example", "destination": ["list@x.example"]},
    }, separators=(",", ":"))  # fmt: skip


@pytest.mark.slow
async def test_a_bounce_for_many_recipients_stores_its_notification_once(
    pool: asyncpg.Pool, daemon: tuple[Daemon, Signer]
) -> None:
    running, signer = daemon
    before = await pool.fetchval(_SIZE)
    url = f"http://127.0.0.1:{running.http_port}/webhooks/sns"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body(signer.notification(_bounce(RECIPIENTS)))) as response,
    ):
        assert response.status == 200, await response.text()
    written = await pool.fetchval(_SIZE) - before
    print(f"bytes written for a {RECIPIENTS}-recipient bounce: {written / 1e6:.1f} MB")
    assert await pool.fetchval("SELECT count(*) FROM outbox.event") == RECIPIENTS
    # Before: a copy of the whole notification per recipient.
    assert written < 3e6, written
    shared = await pool.fetchval("SELECT count(DISTINCT payload_id) FROM outbox.event")
    assert shared == 1
