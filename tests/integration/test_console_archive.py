"""The console finds archived messages (migration 0016 moves finished ones out of
outbox.message): its search lists them beside live ones, their page shows them read-only,
and an action never reaches them."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from daemon.delivery.retention import Retention
from tests.integration.console_helpers import ConsoleClient, browser_session, console_settings
from tests.integration.daemon_helpers import running

WELCOME = '{"name": "Ann", "login_url": "https://example.com/login"}'


async def _failed(pool: asyncpg.Pool, recipient: str, *, age: str) -> int:
    message_id: int = await pool.fetchval(
        "INSERT INTO outbox.message (channel, recipient, template, context, status, attempts,"
        " last_error, updated_at, notification_id)"
        " VALUES ('email', $1, 'welcome', $2::jsonb, 'failed', 1, '550 mailbox unavailable',"
        " now() - $3::text::interval, 77) RETURNING id",
        recipient, WELCOME, age,
    )  # fmt: skip
    return message_id


def _listed(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<a href="/console/messages/(\d+)">', page)]


def _choosable(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="id" value="(\d+)"', page)]


async def test_an_archived_message_is_found_and_shown_read_only(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    archived = await _failed(pool, "Eve@Example.com", age="2 days")
    assert await Retention(pool).archive(3600) == 1
    live = await _failed(pool, "eve@example.com", age="1 minute")
    assert await pool.fetchval("SELECT count(*) FROM outbox.message_archive") == 1

    settings = console_settings(database_url, tmp_path)
    async with running(settings, database_url) as (daemon, _), browser_session() as s:
        assert daemon.admin_port is not None
        client = ConsoleClient(s, daemon.admin_port)
        assert await client.sign_in() == 303
        for search in ("", "?recipient=EVE%40example.com", "?status=failed",
                       "?template=welcome", "?notification=77"):  # fmt: skip
            status, page, _ = await client.get(f"/console/messages{search}")
            assert status == 200, search
            assert _listed(page) == [live, archived], search  # newest first, both tables
            assert _choosable(page) == [live], search  # an archived row has no checkbox
        status, page, _ = await client.get("/console/messages?status=pending")
        assert status == 200 and _listed(page) == []

        status, page, _ = await client.get(f"/console/messages/{archived}")
        assert status == 200 and "Archived: read-only" in page
        assert "550 mailbox unavailable" in page and "Welcome" in page  # timeline, content
        assert 'value="retry"' not in page
        status, page, _ = await client.get(f"/console/messages/{live}")
        assert status == 200 and "Archived" not in page and 'value="retry"' in page
        status, body, _ = await client.get(f"/console/messages/{archived}/preview.html")
        assert status == 200 and "Ann" in body

        # A retry that names the archived message changes nothing there, and says so.
        form = {"action": "retry", "id": str(archived), "back": "/console/messages"}
        status, _, headers = await client.post("/console/messages/action", form)
        assert status == 303 and "0+message" in headers["Location"]
        assert "archived" in headers["Location"]
    row = await pool.fetchrow(
        "SELECT status, archived_at FROM outbox.message_all WHERE id = $1", archived
    )
    assert row["status"] == "failed" and row["archived_at"] is not None
