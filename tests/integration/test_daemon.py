"""The daemon end to end against real PostgreSQL, with the file provider."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from daemon.main import Daemon
from outbox import NewMessage, enqueue, enqueue_many
from tests.integration.daemon_helpers import (
    Recorder,
    drain,
    make_settings,
    read_eml,
    running,
    statuses,
)
from tests.integration.enqueue_helpers import enqueue_one


async def test_committed_message_is_rendered_and_sent_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        message_id = await enqueue(
            conn, channel="email", recipient="ann@example.com", template="welcome",
            context={"name": "Ann <b>", "login_url": "https://app.example.com/login"},
        )  # fmt: skip
    settings = make_settings(database_url, tmp_path)
    await drain(settings, database_url)
    await drain(settings, database_url)  # a second run finds nothing more to send
    row = (await statuses(pool))[message_id]
    assert (row["status"], row["attempts"], row["provider"]) == ("sent", 1, "file")
    assert row["sent_at"] is not None and row["last_error"] is None
    mail = read_eml(tmp_path / "outgoing", message_id)
    assert mail["To"] == "ann@example.com"
    assert "Acme" in str(mail["From"])
    html = mail.get_body(("html",))
    assert html is not None and "Ann &lt;b&gt;" in html.get_content()
    assert len(list((tmp_path / "outgoing").glob("*.eml"))) == 1


async def test_rolled_back_message_is_never_sent(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await enqueue(conn, channel="email", recipient="ann@example.com", template="welcome",
                      context={"name": "Ann"})  # fmt: skip
        await tx.rollback()
    await drain(make_settings(database_url, tmp_path), database_url)
    assert not (tmp_path / "outgoing").exists() or not list((tmp_path / "outgoing").iterdir())


async def test_sms_goes_through_the_sms_channel(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    message_id = await enqueue_one(
        pool, channel="sms", recipient="+14155552671", template="sms/verification_code",
        context={"code": "481516"},
    )  # fmt: skip
    await drain(make_settings(database_url, tmp_path), database_url)
    payload = json.loads((tmp_path / "outgoing" / f"{message_id}.sms.json").read_text())
    assert payload["to"] == "+14155552671"
    assert "481516" in payload["body"]


async def test_bad_rows_fail_alone_with_a_clear_reason(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    good = {"name": "Ann", "login_url": "https://x.example"}
    async with pool.acquire() as conn:
        ids = {}
        for label, message in {
            "good": NewMessage("email", "ann@example.com", "welcome", good),
            "missing_variable": NewMessage("email", "bob@example.com", "welcome", {}),
            "unknown_template": NewMessage("email", "cy@example.com", "no/such_template", good),
            "invalid_email": NewMessage("email", "not-an-address", "welcome", good),
            "invalid_phone": NewMessage("sms", "+1234", "sms/verification_code", {"code": "1"}),
            "expired": NewMessage(
                "email", "dan@example.com", "welcome", good,
                expires_at=datetime.now(UTC) - timedelta(seconds=1),
            ),
            "bad_locale": NewMessage("email", "eve@example.com", "welcome", good, locale="../etc"),
            "good_after": NewMessage("email", "fay@example.com", "welcome", good),
        }.items():  # fmt: skip
            await enqueue_many(conn, [message])
            ids[label] = await conn.fetchval("SELECT max(id) FROM outbox.message")
    await drain(make_settings(database_url, tmp_path), database_url)
    rows = await statuses(pool)
    status = {label: rows[i]["status"] for label, i in ids.items()}
    error = {label: rows[i]["last_error"] or "" for label, i in ids.items()}
    assert status == {
        "good": "sent",
        "missing_variable": "failed",
        "unknown_template": "failed",
        "invalid_email": "failed",
        "invalid_phone": "failed",
        "expired": "expired",
        "bad_locale": "failed",
        "good_after": "sent",
    }
    assert "name" in error["missing_variable"]
    assert "no/such_template" in error["unknown_template"]
    assert "expired" in error["expired"]
    assert all(rows[i]["attempts"] == 1 for i in ids.values())


async def test_priority_order_with_one_slot(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    context = {"name": "x", "login_url": "https://x.example"}
    for priority in (0, 1, 3, 2, 1):
        await enqueue_one(pool, channel="email", recipient=f"p{priority}@example.com",
                          template="welcome", context=context, priority=priority)  # fmt: skip
    settings = make_settings(database_url, tmp_path, worker={"concurrency": 1, "batch_size": 1})
    recorder = Recorder()
    daemon = Daemon(settings, dsn=database_url)
    daemon.completion_listeners.append(recorder)
    await daemon.run(until_empty=True)
    priority = {r["id"]: r["priority"] for r in await pool.fetch("SELECT * FROM outbox.message")}
    assert [priority[c.message_id] for c in recorder.completions] == [3, 2, 1, 1, 0]


async def test_scheduled_message_waits_for_not_before(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, worker={"poll_interval": 5.0})
    async with running(settings, database_url) as (_daemon, recorder):
        due = datetime.now(UTC) + timedelta(seconds=1.0)
        message_id = await enqueue_one(
            pool, channel="email", recipient="later@example.com", template="welcome",
            context={"name": "L", "login_url": "https://x.example"}, not_before=due,
        )  # fmt: skip
        await recorder.wait_for(1, within=4)  # well before the 5 s poll: woken by next_due
        row = (await statuses(pool))[message_id]
        assert row["status"] == "sent"
        assert row["sent_at"] >= due


async def test_notify_wakes_an_idle_daemon_quickly(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, worker={"poll_interval": 30.0})
    async with running(settings, database_url) as (_daemon, recorder):
        await asyncio.sleep(0.3)  # let it go idle
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, channel="email", recipient="now@example.com", template="welcome",
                          context={"name": "N", "login_url": "https://x.example"})  # fmt: skip
        await recorder.wait_for(1, within=3)


async def test_cancelled_message_is_not_sent(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    message_id = await enqueue_one(
        pool, channel="email", recipient="a@example.com", template="welcome",
        context={"name": "A", "login_url": "u"},
    )  # fmt: skip
    assert await pool.fetchval("SELECT outbox.cancel($1)", message_id)
    await drain(make_settings(database_url, tmp_path), database_url)
    assert (await statuses(pool))[message_id]["status"] == "cancelled"
