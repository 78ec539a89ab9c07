"""A person's preference page over HTTP, reached from the person's own message."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from daemon.main import Daemon
from outbox import notify, upsert_recipient
from outbox.person_tokens import make_preference_token
from tests.integration.daemon_helpers import Recorder, make_settings

BOOKING = {"what": "Dentist", "when": "Tuesday 14:30"}


class Site:
    def __init__(self, daemon: Daemon, recorder: Recorder, outgoing: Path) -> None:
        self.daemon = daemon
        self.recorder = recorder
        self.outgoing = outgoing

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    def token(self, key: str, channel: str = "email", category: str = "reminders") -> str:
        keys = self.daemon.signing_keys
        return make_preference_token(keys, recipient_key=key, channel=channel, category=category)


@pytest.fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    settings = make_settings(
        database_url, tmp_path, http={"host": "127.0.0.1", "port": 0},
        public_url="https://notify.acme.example", secret_key="pref-key",
        people={"categories": "tips,reminders"},
    )  # fmt: skip
    daemon = Daemon(settings, dsn=database_url)
    recorder = Recorder()
    daemon.completion_listeners.append(recorder)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.started.wait(), 30)
    try:
        yield Site(daemon, recorder, tmp_path / "outgoing")
    finally:
        daemon.request_stop()
        await task


async def _request(
    method: str, url: str, data: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers, allow_redirects=False) as r,
    ):
        return r.status, await r.text(), r.headers


async def add_ann(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_recipient(conn, "u1", email="ann@example.com")


async def switches(pool: asyncpg.Pool) -> dict[tuple[str, str], bool]:
    rows = await pool.fetch("SELECT channel, category, enabled FROM outbox.channel_preference")
    return {(r["channel"], r["category"]): r["enabled"] for r in rows}


async def _link_from_a_persons_email(pool: asyncpg.Pool, site: Site) -> str:
    async with pool.acquire() as conn:
        await upsert_recipient(conn, "u1", email="ann@example.com", attrs={"first_name": "Ann"})
        await notify(conn, recipient_key="u1", template="booking/reminder", category="reminders",
                     channels=["email"], context=BOOKING)  # fmt: skip
    await site.recorder.wait_for(1)
    [eml] = site.outgoing.glob("*.eml")
    mail = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    link = str(mail["List-Unsubscribe"]).strip("<>")
    assert link.startswith("https://notify.acme.example/preferences?token=p1.")
    text = mail.get_body(("plain",))
    assert text is not None and link in text.get_content()  # unsubscribe_url in the text
    return site.url + "/preferences?" + urlsplit(link).query


async def test_the_page_shows_the_persons_switches_and_saves_them(
    pool: asyncpg.Pool, site: Site
) -> None:
    page_url = await _link_from_a_persons_email(pool, site)
    await pool.execute(
        "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled)"
        " VALUES ('u1', 'inapp', 'news', false)"
    )
    before = await switches(pool)
    status, page, headers = await _request("GET", page_url)
    assert status == 200
    assert await switches(pool) == before  # viewing changes nothing
    assert "a***@example.com" in page and "ann@example.com" not in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    # Rows: configured categories, the person's own, the message's; columns: the
    # channels the person has an address for (no phone: no SMS).
    assert 'value="email:news" aria-label="News by Email" checked' in page
    assert 'value="inapp:news" aria-label="News by In-app">' in page
    assert 'value="email:reminders"' in page and 'value="inapp:tips"' in page
    assert "sms:" not in page and "transactional" not in page

    status, page, _ = await _request(
        "POST", page_url, {"action": "save", "on": ["email:news", "inapp:tips", "inapp:reminders"]}
    )
    assert status == 200 and "Settings saved" in page
    assert await switches(pool) == {
        ("email", "news"): True, ("inapp", "news"): False,
        ("email", "reminders"): False, ("inapp", "reminders"): True,
        ("email", "tips"): False, ("inapp", "tips"): True,
    }  # fmt: skip
    assert 'value="inapp:tips" aria-label="Tips by In-app" checked' in page

    status, page, _ = await _request("POST", page_url, [("action", "save"), ("action", "off")])
    assert status == 200 and "Everything optional is off" in page
    saved = await switches(pool)
    assert saved.pop(("*", "*")) is False
    assert set(saved.values()) == {False}


async def test_one_click_switches_off_the_messages_channel_and_category(
    pool: asyncpg.Pool, site: Site
) -> None:
    page_url = await _link_from_a_persons_email(pool, site)
    status, text, _ = await _request("POST", page_url, {"List-Unsubscribe": "One-Click"})
    assert (status, text) == (200, "unsubscribed\n")
    assert await switches(pool) == {("email", "reminders"): False}
    # The next reminder goes in-app only; a transactional one still comes by email.
    async with pool.acquire() as conn:
        reminder = await notify(conn, recipient_key="u1", template="booking/reminder",
                                category="reminders", context=BOOKING)  # fmt: skip
        receipt = await notify(conn, recipient_key="u1", template="booking/reminder",
                               context=BOOKING)  # fmt: skip
    channels = await pool.fetch(
        "SELECT notification_id, array_agg(channel ORDER BY channel) AS c FROM outbox.message"
        " WHERE notification_id = ANY($1::bigint[]) GROUP BY notification_id",
        [reminder, receipt],
    )
    assert {r["notification_id"]: r["c"] for r in channels} == {
        reminder: ["inapp"],
        receipt: ["email", "inapp"],
    }


async def test_a_transactional_link_switches_nothing_off(pool: asyncpg.Pool, site: Site) -> None:
    await add_ann(pool)
    url = f"{site.url}/preferences?token={site.token('u1', category='transactional')}"
    status, text, _ = await _request("POST", url, {"List-Unsubscribe": "One-Click"})
    assert status == 200 and "transactional" in text
    assert await switches(pool) == {}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "bogus",
        "p1.dTE.email.cmVtaW5kZXJz.9999999999.AAAAAAAAAAAAAAAAAAAAAA",  # forged signature
        "x" * 5000,
    ],
)
async def test_bad_tokens_are_refused_and_change_nothing(
    pool: asyncpg.Pool, site: Site, token: str
) -> None:
    await add_ann(pool)
    status, page, _ = await _request("GET", f"{site.url}/preferences?token={token}")
    assert status == 403 and "This link is not valid" in page
    for form in ({"List-Unsubscribe": "One-Click"}, {"action": "off"}):
        status, _, _ = await _request("POST", f"{site.url}/preferences?token={token}", form)
        assert status == 403
    assert await switches(pool) == {}


async def test_a_token_signed_with_another_key_or_expired_is_refused(
    pool: asyncpg.Pool, site: Site
) -> None:
    await add_ann(pool)
    other = make_preference_token(
        [b"another-key"], recipient_key="u1", channel="email", category="news"
    )
    expired = make_preference_token(
        site.daemon.signing_keys, recipient_key="u1", channel="email", category="news",
        ttl_seconds=-1,
    )  # fmt: skip
    for token in (other, expired):
        status, _, _ = await _request("POST", f"{site.url}/preferences?token={token}",
                                      {"List-Unsubscribe": "One-Click"})  # fmt: skip
        assert status == 403
    assert await switches(pool) == {}


async def test_bad_forms_are_4xx_and_change_nothing(pool: asyncpg.Pool, site: Site) -> None:
    await add_ann(pool)
    url = f"{site.url}/preferences?token={site.token('u1')}"
    status, _, _ = await _request("POST", url, {"action": "explode"})
    assert status == 400
    status, _, _ = await _request(
        "POST", url, b"action=off",
        {"Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset"},
    )  # fmt: skip
    assert status == 415
    form = aiohttp.FormData()
    form.add_field("action", b"off", filename="x.bin")  # a file where a value belongs
    status, _, _ = await _request("POST", url, form)
    assert status == 400
    assert await switches(pool) == {}


async def test_a_deleted_persons_link_says_so(pool: asyncpg.Pool, site: Site) -> None:
    url = f"{site.url}/preferences?token={site.token('gone')}"
    status, page, _ = await _request("GET", url)
    assert status == 404 and "No settings to show" in page
    status, _, _ = await _request("POST", url, {"action": "off"})
    assert status == 404
    assert await switches(pool) == {}
