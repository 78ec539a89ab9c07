"""Webhook faults: refused URLs never reach the network, a dead endpoint never slows
another, a daemon killed mid-POST loses nothing, failed deliveries replay from the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from daemon.bench.support import free_port
from tests.integration.daemon_helpers import running, welcome_backlog
from tests.integration.hook_receiver import SECRET, Receiver, receiver
from tests.integration.test_hooks import (
    add_endpoint,
    eventually,
    hook_settings,
    statuses,
    wait_delivered,
)
from tests.network_guard import no_outbound

__all__ = ["receiver"]


async def test_private_and_plain_http_urls_are_refused_before_any_connect(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    refused = [
        "https://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "https://[::ffff:192.168.0.1]/hook",
        "https://93.184.215.14/hook".replace("https", "http"),  # public but plain http
        f"http://localhost:{receiver.port}/hooks",  # loopback, not allowed
    ]
    for url in refused:
        await add_endpoint(pool, url)
    # The receiver listens on loopback, but loopback is not allowed here: the name is
    # resolved and every address refused before a connect.
    await add_endpoint(pool, f"https://localhost:{receiver.port}/hooks")
    settings = hook_settings(database_url, tmp_path, allow_private="")
    with no_outbound() as attempts:
        async with running(settings, database_url):
            await welcome_backlog(pool, 1)

            async def all_tried() -> bool:
                rows = await pool.fetch("SELECT status, attempts FROM outbox.webhook_delivery")
                return len(rows) == 6 and all(r["attempts"] >= 1 for r in rows)

            await eventually(all_tried)
    assert attempts == []
    assert receiver.received == []
    rows = await pool.fetch(
        "SELECT e.url, d.status, d.last_error FROM outbox.webhook_delivery d "
        "JOIN outbox.webhook_endpoint e ON e.id = d.endpoint_id ORDER BY e.id"
    )
    by_url = {r["url"]: r for r in rows}
    for url in refused:
        assert by_url[url]["status"] == "failed", url  # kept for replay, never retried
        assert by_url[url]["last_error"].startswith("URL refused"), by_url[url]
    resolved = by_url[f"https://localhost:{receiver.port}/hooks"]
    assert "no public address" in resolved["last_error"]


async def test_a_hanging_endpoint_never_slows_another(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    stuck = Receiver(free_port())
    stuck.hold = asyncio.Event()
    await stuck.start()
    try:
        await add_endpoint(pool, stuck.url)
        healthy = await add_endpoint(pool, receiver.url)
        settings = hook_settings(database_url, tmp_path, timeout=20, lease_seconds=60)
        async with running(settings, database_url):
            await welcome_backlog(pool, 50)
            await eventually(lambda: _delivered_to(pool, healthy, 50))
            # Meanwhile the stuck endpoint holds exactly its slots, nothing more.
            assert len(stuck.received) == settings.hooks.concurrency
            stuck.hold.set()
            await wait_delivered(pool, 100)
    finally:
        stuck.hold.set()
        await stuck.stop()
    assert len(receiver.ids()) == 50 and len(stuck.ids()) == 50


async def _delivered_to(pool: asyncpg.Pool, endpoint_id: int, total: int) -> bool:
    n = await pool.fetchval(
        "SELECT count(*) FROM outbox.webhook_delivery "
        "WHERE endpoint_id = $1 AND status = 'delivered'",
        endpoint_id,
    )
    return bool(n >= total)


async def test_every_event_type_is_written_with_its_change(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    await add_endpoint(pool, receiver.url)
    await pool.execute("INSERT INTO outbox.recipient (key, email) VALUES ('u1', 'a@example.com')")
    message_id = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'email', recipient => 'a@example.com', "
        "template => 'welcome')"
    )
    for status in ("sent", "delivered", "bounced", "complained"):
        await pool.execute(
            "UPDATE outbox.message SET status = $2 WHERE id = $1", message_id, status
        )
    for kind in ("open", "click"):
        await pool.execute(
            "INSERT INTO outbox.event (message_id, source, source_id, event_type, payload) "
            "VALUES ($1, 'test', $2, $2, '{\"url\": \"https://x.example\"}')",
            message_id, kind,
        )  # fmt: skip
    await pool.execute(
        "UPDATE outbox.message SET status = 'failed', last_error = 'gone' WHERE id = $1",
        message_id,
    )
    await pool.execute(
        "INSERT INTO outbox.preference (channel, recipient, category) "
        "VALUES ('email', 'a@example.com', 'news')"
    )
    await pool.execute(
        "INSERT INTO outbox.inbox (recipient_key, title) VALUES ('u1', 'hi');"
        "UPDATE outbox.inbox SET read_at = now();"
        "UPDATE outbox.inbox SET read_at = now()"  # read again: no second event
    )
    rows = await pool.fetch("SELECT type, data FROM outbox.webhook_delivery ORDER BY id")
    assert [r["type"] for r in rows] == [
        "message.sent", "message.delivered", "message.bounced", "message.complained",
        "message.opened", "message.clicked", "message.failed", "recipient.unsubscribed",
        "inbox.read",
    ]  # fmt: skip
    assert '"last_error": "gone"' in rows[6]["data"]
    assert '"url": "https://x.example"' in rows[5]["data"]


async def test_an_endpoint_gets_only_its_event_types(pool: asyncpg.Pool) -> None:
    await add_endpoint(pool, "https://hooks.example.com/a", ["message.failed"])
    await pool.execute(
        "INSERT INTO outbox.webhook_endpoint (url, secret, enabled) "
        "VALUES ('https://hooks.example.com/b', $1, false)",
        SECRET,
    )
    message_id = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'email', recipient => 'a@example.com', "
        "template => 'welcome')"
    )
    await pool.execute("UPDATE outbox.message SET status = 'sent' WHERE id = $1", message_id)
    assert await pool.fetchval("SELECT count(*) FROM outbox.webhook_delivery") == 0
    await pool.execute("UPDATE outbox.message SET status = 'failed' WHERE id = $1", message_id)
    assert await pool.fetchval("SELECT type FROM outbox.webhook_delivery") == "message.failed"


def _env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(
        OUTBOXD_DATABASE_URL=database_url, OUTBOXD_DATA_DIR=str(tmp_path / "data"),
        OUTBOXD_FILE__DIR=str(tmp_path / "out"), OUTBOXD_HTTP__ENABLED="false",
        OUTBOXD_HOOKS__ALLOW_PRIVATE="127.0.0.0/8", OUTBOXD_HOOKS__POLL_INTERVAL="0.2",
        OUTBOXD_HOOKS__TIMEOUT="1", OUTBOXD_HOOKS__LEASE_SECONDS="3",
        OUTBOXD_HOOKS__RETRY_BASE_SECONDS="0.05", OUTBOXD_HOOKS__RETRY_MAX_SECONDS="0.2",
        OUTBOXD_WORKER__POLL_INTERVAL="0.2", OUTBOXD_LOG_LEVEL="WARNING", **extra,
    )  # fmt: skip
    return env


def _outboxd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run"], env=env, stdout=out, stderr=out
        )


@pytest.mark.slow
async def test_kill_9_mid_delivery_loses_nothing(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    # The killed daemon's messages too can be mid-send (their results written a few at a
    # time, the documented crash window): a short lease lets the next daemon send them.
    env = _env(database_url, tmp_path, OUTBOXD_WORKER__LEASE_SECONDS="5")
    added = _outboxd(env, "hooks", "add", receiver.url, "--secret", SECRET, "--json")
    assert added.returncode == 0, added.stderr
    receiver.hold = asyncio.Event()  # every POST hangs: the daemon dies in the middle
    await welcome_backlog(pool, 40)
    proc = _start(env, tmp_path / "daemon.log")
    try:
        await receiver.wait_for(lambda: len(receiver.received) >= 4)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    in_flight_at_kill = await pool.fetchval(
        "SELECT count(*) FROM outbox.webhook_delivery WHERE status = 'sending'"
    )
    assert in_flight_at_kill >= 1
    receiver.hold.set()
    receiver.hold = None
    # The lease of the dead daemon's claims ends; a new daemon sends everything.
    settings = hook_settings(database_url, tmp_path, timeout=1, lease_seconds=3)
    async with running(settings, database_url):
        await wait_delivered(pool, 40, within=60)
    assert len(receiver.ids()) == 40
    assert all(r.valid for r in receiver.received)
    assert await statuses(pool) == {"delivered": 40}


async def test_failed_deliveries_are_kept_and_replayed_from_the_command_line(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    env = _env(database_url, tmp_path)
    added = _outboxd(env, "hooks", "add", receiver.url, "--secret", SECRET)
    assert added.returncode == 0, added.stderr
    assert "endpoint 1:" in added.stdout
    receiver.status = 400
    settings = hook_settings(database_url, tmp_path, retry_window_seconds=0.3)
    async with running(settings, database_url):
        await welcome_backlog(pool, 5)

        async def all_failed() -> bool:
            return (await statuses(pool)).get("failed", 0) == 5

        await eventually(all_failed)
    listing = _outboxd(env, "hooks", "list")
    assert "failed 5" in listing.stdout, listing.stdout
    stats = _outboxd(env, "stats")
    assert "webhooks: 0 pending, 0 being sent, 5 failed" in stats.stdout, stats.stdout
    dry = _outboxd(env, "hooks", "replay", "--endpoint", "1", "--dry-run")
    assert dry.stdout.strip() == "5 failed deliveries would be replayed"
    receiver.status = None
    first_ids = set(receiver.ids())
    replay = _outboxd(env, "hooks", "replay", "--endpoint", "1")
    assert replay.stdout.strip() == "replayed 5 failed deliveries", replay.stderr
    async with running(settings, database_url):
        await wait_delivered(pool, 5)
    assert set(receiver.ids()) == first_ids  # the same events, by the same ids
    removed = _outboxd(env, "hooks", "remove", "1")
    assert removed.returncode == 0 and "removed endpoint 1" in removed.stdout
    assert _outboxd(env, "hooks", "remove", "1").returncode == 1
    refused = _outboxd(
        {**env, "OUTBOXD_HOOKS__ALLOW_PRIVATE": ""}, "hooks", "add", "https://10.0.0.1/x"
    )
    assert refused.returncode == 1 and "not a public address" in refused.stderr
