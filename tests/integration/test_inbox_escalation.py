"""Escalation end to end: notify(..., escalate_after) puts the item in the inbox at once; the
running daemon emails only if the item is still unread when the interval ends, and never
once it was read (through the HTTP routes, read-all included)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import asyncpg

from daemon.main import Daemon
from outbox import notify
from tests.integration.daemon_helpers import Recorder, drain
from tests.integration.inbox_helpers import Inbox, add_people, inbox, inbox_settings, serving

__all__ = ["inbox"]

CONTEXT = {"name": "Ann", "login_url": "https://x.example"}


async def _notify_escalating(dsn: str, escalate_after: timedelta) -> tuple[int, int]:
    """(notification id, inbox item id), once the running daemon delivered the item."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            notification = await notify(
                conn, recipient_key="u1", template="welcome", context=CONTEXT,
                channels=["inapp", "email"], escalate_after=escalate_after,
            )  # fmt: skip
        async with asyncio.timeout(30):
            while True:
                item: int | None = await conn.fetchval(
                    "SELECT id FROM outbox.inbox WHERE notification_id = $1", notification
                )
                if item is not None:
                    return notification, item
                await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _email(dsn: str, notification: int) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT * FROM outbox.message WHERE notification_id = $1 AND channel = 'email'",
            notification,
        )
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_an_unread_item_escalates_to_email(inbox: Inbox) -> None:
    recorder = Recorder()
    assert inbox.daemon.completer is not None
    inbox.daemon.completer.listeners.append(recorder)
    notification, _ = await _notify_escalating(inbox.dsn, timedelta(seconds=1))
    # Nobody reads it: when the interval ends the daemon sends the email (the other result
    # written is the in-app message's own).
    await recorder.wait_for(2, within=30)
    email = await _email(inbox.dsn, notification)
    assert email["status"] == "sent" and email["recipient"] == "u1@example.com"
    assert email["sent_at"] >= email["created_at"] + timedelta(seconds=1)


async def test_reading_over_http_cancels_and_nothing_is_sent(
    database_url: str, tmp_path: Path
) -> None:
    await add_people(database_url, "u1")
    async with serving(database_url, tmp_path) as served:
        by_item, item = await _notify_escalating(database_url, timedelta(hours=1))
        by_all, _ = await _notify_escalating(database_url, timedelta(hours=1))
        assert (await served.call("POST", f"/inbox/{item}/read"))[0] == 200
        assert (await served.call("POST", "/inbox/read-all"))[0] == 200
    for notification in (by_item, by_all):
        email = await _email(database_url, notification)
        assert email["status"] == "cancelled"
        assert email["last_error"].startswith("escalation cancelled: in-app item")
    # Even once due, a cancelled escalation is never sent.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE outbox.message SET not_before = now() WHERE channel = 'email'")
    finally:
        await conn.close()
    daemon = await drain(inbox_settings(database_url, tmp_path), database_url)
    assert isinstance(daemon, Daemon)
    assert not list((tmp_path / "outgoing").glob("*.eml"))
    assert (await _email(database_url, by_item))["status"] == "cancelled"
