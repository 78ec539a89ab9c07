"""The console of a running daemon over HTTP: sign-in, CSRF refusals, searches, actions on
a search in batches, suppressions, and an operator pause that the lanes honour."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import pytest

from tests.integration.console_helpers import (
    TOKEN,
    ConsoleClient,
    browser_session,
    console_settings,
)
from tests.integration.daemon_helpers import running

WELCOME = '{"name": "Ann", "login_url": "https://example.com/login"}'
CONSOLE_DOC = Path(__file__).resolve().parents[2] / "docs" / "CONSOLE.md"


async def _insert(pool: asyncpg.Pool, count: int, *, status: str, recipient: str) -> list[int]:
    rows = await pool.fetch(
        "INSERT INTO outbox.message (channel, recipient, template, context, status, last_error,"
        " attempts) SELECT 'email', $1, 'welcome', $2::jsonb, $3, $4, 1"
        " FROM generate_series(1, $5) RETURNING id",
        recipient, WELCOME, status, "550 mailbox unavailable" if status == "failed" else None,
        count,
    )  # fmt: skip
    return [r["id"] for r in rows]


async def _statuses(pool: asyncpg.Pool, ids: list[int]) -> set[str]:
    rows = await pool.fetch("SELECT status FROM outbox.message WHERE id = ANY($1)", ids)
    return {r["status"] for r in rows}


async def test_the_console_is_off_without_a_token_and_never_on_the_public_port(
    database_url: str, tmp_path: Path
) -> None:
    settings = console_settings(database_url, tmp_path, console={"token": None})
    async with running(settings, database_url) as (daemon, _), browser_session() as s:
        async with s.get(f"http://127.0.0.1:{daemon.admin_port}/console") as r:
            assert r.status == 404
            assert "OUTBOXD_CONSOLE__TOKEN" in await r.text()
        for path in ("/console", "/console/login", "/console/messages", "/console/templates"):
            async with s.get(f"http://127.0.0.1:{daemon.http_port}{path}") as r:
                assert r.status == 404, path


async def test_sign_in_and_every_refusal_of_an_action(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    failed = await _insert(pool, 1, status="failed", recipient="ann@example.com")
    settings = console_settings(database_url, tmp_path)
    async with running(settings, database_url) as (daemon, _), browser_session() as s:
        assert daemon.admin_port is not None
        client = ConsoleClient(s, daemon.admin_port)
        status, _, headers = await client.get("/console/messages")
        assert status == 303 and headers["Location"].startswith("/console/login?next=")
        assert await client.sign_in("wrong-token-but-long-enough") == 401
        status, _, headers = await client.post("/console/login", {"token": TOKEN}, Origin="")
        assert status == 403  # a sign-in from another site's form
        assert await client.sign_in() == 303
        status, page, headers = await client.get("/console")
        assert status == 200 and "Overview" in page
        assert "script-src" not in headers["Content-Security-Policy"]
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"

        retry = {"action": "retry", "id": str(failed[0]), "back": "/console/messages"}
        refusals = [
            ({**retry, "csrf": ""}, {}),  # no token
            ({**retry, "csrf": "0" * 64}, {}),  # a made-up one
            (retry, {"Origin": "http://evil.example"}),  # another site
            (retry, {"Origin": "", "Referer": "http://evil.example/page"}),
            (retry, {"Origin": ""}),  # neither Origin nor Referer
        ]
        for form, headers in refusals:
            status, page, _ = await client.post("/console/messages/action", form, **headers)
            assert status == 403, (form, headers)
            assert "Refused" in page
        assert await _statuses(pool, failed) == {"failed"}  # nothing changed
        s.cookie_jar.clear()
        status, _, _ = await client.post("/console/messages/action", retry)
        assert status == 401
        assert await _statuses(pool, failed) == {"failed"}

        assert await client.sign_in() == 303
        status, _, headers = await client.post("/console/messages/action", retry)
        assert status == 303 and "1+message" in headers["Location"]


async def test_search_pages_and_a_retry_of_a_whole_search_in_batches(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    failed = await _insert(pool, 25, status="failed", recipient="Bob@Example.com")
    sent = await _insert(pool, 60, status="sent", recipient="bob@example.com")
    settings = console_settings(database_url, tmp_path, console={"batch_size": 10})
    async with running(settings, database_url) as (daemon, recorder), browser_session() as s:
        assert daemon.admin_port is not None
        client = ConsoleClient(s, daemon.admin_port)
        assert await client.sign_in() == 303
        status, page, _ = await client.get("/console/messages?recipient=BOB%40example.com")
        ids = [int(i) for i in re.findall(r'name="id" value="(\d+)"', page)]
        assert status == 200 and ids == sorted(failed + sent, reverse=True)[:50]
        older = re.search(r'href="(/console/messages\?[^"]*before=\d+)"', page)
        assert older is not None
        status, page, _ = await client.get(older[1].replace("&amp;", "&"))
        ids += [int(i) for i in re.findall(r'name="id" value="(\d+)"', page)]
        assert sorted(ids) == sorted(failed + sent) and "Older messages" not in page

        search = {"scope": "search", "action": "retry", "recipient": "bob@example.com",
                  "back": "/console/messages"}  # fmt: skip
        status, page, _ = await client.post("/console/messages/action", search)
        assert status == 200 and "Retry 25 messages?" in page  # the confirm step
        assert await _statuses(pool, failed) == {"failed"}
        status, _, headers = await client.post(
            "/console/messages/action", {**search, "confirm": "yes"}
        )
        assert status == 303 and "25+message" in headers["Location"]
        await recorder.wait_for(25)  # really sent, by the running daemon
        assert await _statuses(pool, failed) == {"sent"}
        assert len(list((tmp_path / "outgoing").glob("*.eml"))) == 25
        status, page, _ = await client.get("/console/messages/invalid")
        assert status == 404


async def test_a_message_page_shows_its_timeline_and_webhook_deliveries(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    [message] = await _insert(pool, 1, status="bounced", recipient="cy@example.com")
    await pool.execute(
        "INSERT INTO outbox.event (message_id, source, source_id, event_type, subtype)"
        " VALUES ($1, 'ses', 'e1', 'bounce', 'Permanent')",
        message,
    )
    settings = console_settings(database_url, tmp_path)
    async with running(settings, database_url) as (daemon, _), browser_session() as s:
        assert daemon.admin_port is not None
        client = ConsoleClient(s, daemon.admin_port)
        assert await client.sign_in() == 303
        status, page, _ = await client.get(f"/console/messages/{message}")
        assert status == 200 and "bounce (Permanent)" in page
        assert "Webhook deliveries" in page and "message.bounced" not in page
        assert "Welcome" in page  # rendered content: the subject
        status, body, headers = await client.get(f"/console/messages/{message}/preview.html")
        assert status == 200 and "sandbox" in headers["Content-Security-Policy"]
        assert "Ann" in body
        endpoint = await pool.fetchval(
            "INSERT INTO outbox.webhook_endpoint (url, secret)"
            " VALUES ('http://127.0.0.1:9/hooks', 'hush-hush-hush-hush') RETURNING id"
        )
        await pool.execute(
            "INSERT INTO outbox.webhook_delivery (event_id, endpoint_id, type, data, status,"
            " last_status) VALUES (gen_random_uuid(), $1, 'message.bounced',"
            " jsonb_build_object('message_id', $2::bigint), 'delivered', 204)",
            endpoint,
            message,
        )
        status, page, _ = await client.get(f"/console/messages/{message}")
        assert "message.bounced" in page and "http://127.0.0.1:9/hooks" in page
        assert "204" in page and "hush" not in page


async def test_suppressions_are_added_and_removed(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    settings = console_settings(database_url, tmp_path)
    async with running(settings, database_url) as (daemon, _), browser_session() as s:
        assert daemon.admin_port is not None
        client = ConsoleClient(s, daemon.admin_port)
        assert await client.sign_in() == 303
        form = {"channel": "email", "recipient": " Dee@Example.com ", "detail": "by phone"}
        status, _, _ = await client.post("/console/suppressions", form)
        assert status == 303
        rows = await pool.fetch("SELECT channel, recipient, reason FROM outbox.suppression")
        assert [tuple(r) for r in rows] == [("email", "dee@example.com", "manual")]
        status, page, _ = await client.get("/console/suppressions?recipient=DEE@example.com")
        assert "dee@example.com" in page and "by phone" in page
        status, _, headers = await client.post("/console/suppressions/remove", form)
        assert status == 303 and "manual" in headers["Location"]
        assert await pool.fetchval("SELECT count(*) FROM outbox.suppression") == 0
        status, page, _ = await client.post("/console/suppressions", {**form, "channel": "fax"})
        assert status == 400


@pytest.mark.slow
async def test_a_channel_paused_from_the_console_is_held_by_the_daemon_until_resumed(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    settings = console_settings(database_url, tmp_path)
    async with running(settings, database_url) as (daemon, recorder), browser_session() as s:
        assert daemon.admin_port is not None
        client = ConsoleClient(s, daemon.admin_port)
        assert await client.sign_in() == 303
        status, _, _ = await client.post("/console/channels/email/pause", {"reason": ""})
        assert status == 303 and daemon.lanes["email"].hold_reason is None  # a reason is needed
        status, _, _ = await client.post("/console/channels/email/pause", {"reason": "DNS move"})
        assert status == 303
        async with asyncio.timeout(10):
            # The daemon's own holds loop applies it: its lane's state is the signal.
            while daemon.lanes["email"].hold_reason != "DNS move":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        status, page, _ = await client.get("/console")
        assert "DNS move" in page and "Resume email" in page
        message = await pool.fetchval(
            "SELECT outbox.enqueue('email', 'eve@example.com', 'welcome', $1::jsonb)", WELCOME
        )
        sms = await pool.fetchval(
            "SELECT outbox.enqueue('sms', '+14155552671', 'sms/verification_code',"
            ' \'{"code": "1"}\'::jsonb)'
        )
        await recorder.wait_for(1)  # the SMS lane is not held
        assert [c.message_id for c in recorder.completions] == [sms]
        await asyncio.sleep(settings.worker.poll_interval * 3)  # a few claim rounds
        assert await _statuses(pool, [message]) == {"pending"}
        status, _, _ = await client.post("/console/channels/email/resume", {})
        assert status == 303
        await recorder.wait_for(2)
        assert await _statuses(pool, [message]) == {"sent"}


async def test_digits_of_other_scripts_are_refused_not_a_server_error(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    settings = console_settings(database_url, tmp_path)
    async with running(settings, database_url) as (daemon, _), browser_session() as s:
        assert daemon.admin_port is not None
        client = ConsoleClient(s, daemon.admin_port)
        assert await client.sign_in() == 303
        assert (await client.get("/console/messages/%C2%B2"))[0] == 404  # "²" is a digit
        assert (await client.get("/console/messages?before=%C2%B2"))[0] == 400
        status, _, headers = await client.post(
            "/console/messages/action", {"action": "retry", "id": "²", "back": "/console"}
        )
        assert status == 303 and "Nothing+chosen" in headers["Location"]
        s.cookie_jar.clear()
        forged = "²²²²²²²²²².0123"
        async with s.get(
            f"{client.origin}/console",
            headers={"Cookie": f"outboxd_console={forged}"},
            allow_redirects=False,
        ) as response:
            assert response.status == 303  # to the sign-in page


async def test_the_sql_of_docs_console_pauses_and_resumes_a_running_daemon(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    doc = CONSOLE_DOC.read_text()
    [block] = re.findall(r"```sql\n(.*?)```", doc, re.DOTALL)
    pause, resume = block.strip().splitlines()
    settings = console_settings(database_url, tmp_path)
    async with running(settings, database_url) as (daemon, recorder):
        await pool.execute(pause)
        async with asyncio.timeout(10):
            while daemon.lanes["email"].hold_reason != "DNS move":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await pool.execute(resume)
        message = await pool.fetchval(
            "SELECT outbox.enqueue('email', 'fay@example.com', 'welcome', $1::jsonb)", WELCOME
        )
        await recorder.wait_for(1)
        assert await _statuses(pool, [message]) == {"sent"}
