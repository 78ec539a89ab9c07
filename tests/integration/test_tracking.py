"""Open and click tracking for mail the daemon builds itself: the pixel and the redirect,
counted once per message (and link), never redirecting anywhere but the signed URL."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from daemon.campaigns import tokens
from tests.integration.campaign_helpers import (
    SECRET,
    Service,
    add_campaign,
    add_list,
    add_people,
    campaign_messages,
    fetch,
    service,
    stats,
    subscribe,
    wait_until,
)
from tests.integration.enqueue_helpers import enqueue_one

CTA = "https://shop.example/sale?utm=mail&size=large"


async def _send_campaign(pool: asyncpg.Pool, running: Service) -> tuple[int, asyncpg.Record]:
    await add_people(pool, {"u1": {"first_name": "Ann"}})
    await add_list(pool, "news")
    await subscribe(pool, "news", ["u1"])
    campaign = await add_campaign(
        pool, 1, context={"subject": "Sale", "body": "Big sale", "cta_url": CTA}
    )
    await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)

    async def sent() -> bool:
        status = await pool.fetchval("SELECT status FROM outbox.campaign WHERE id = $1", campaign)
        return bool(status == "sent")

    await wait_until(sent, running.recorder.changed)
    [message] = await campaign_messages(pool, campaign)
    return campaign, message


@pytest.fixture
async def tracked(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Service, int, asyncpg.Record]]:
    async with service(database_url, tmp_path, tracking={"enabled": True}) as running:
        campaign, message = await _send_campaign(pool, running)
        yield running, campaign, message


def _flip_middle(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


def _html(running: Service, message_id: int) -> str:
    part = running.eml(message_id).get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _tracking_links(running: Service, message_id: int) -> tuple[str, list[str]]:
    body = _html(running, message_id)
    [pixel] = re.findall(r'src="(https://mail\.acme\.example/t/o/[^"]+)"', body)
    clicks = re.findall(r'href="(https://mail\.acme\.example/t/c/[^"]+)"', body)
    return running.local(pixel), [running.local(html.unescape(c)) for c in clicks]


async def test_the_file_provider_stores_the_message_id_header(
    tracked: tuple[Service, int, asyncpg.Record],
) -> None:
    running, _, message = tracked
    assert message["provider_message_id"] == running.eml(message["id"])["Message-ID"]


async def test_opens_are_counted_once_per_message(
    pool: asyncpg.Pool, tracked: tuple[Service, int, asyncpg.Record]
) -> None:
    running, campaign, message = tracked
    pixel, _ = _tracking_links(running, message["id"])
    status, _, headers = await fetch(pixel, method="HEAD")  # a link checker: not an open
    assert status == 200
    assert (await stats(pool, campaign))[None]["opened"] == 0
    for _ in range(3):
        status, _, headers = await fetch(pixel)
        assert status == 200 and headers["Content-Type"] == "image/gif"
        assert headers["Cache-Control"] == "no-store, private"
    assert (await stats(pool, campaign))[None]["opened"] == 1
    event = await pool.fetchrow("SELECT * FROM outbox.event WHERE event_type = 'open'")
    assert (event["message_id"], event["source"]) == (message["id"], "tracking")


async def test_clicks_redirect_to_the_signed_url_only(
    pool: asyncpg.Pool, tracked: tuple[Service, int, asyncpg.Record]
) -> None:
    running, campaign, message = tracked
    body = _html(running, message["id"])
    assert CTA not in html.unescape(body)  # the call to action goes through the redirect
    assert 'href="https://mail.acme.example/preferences?' in body  # our own link does not
    _, clicks = _tracking_links(running, message["id"])
    [cta] = [c for c in clicks if tokens.read_click_token(
        [SECRET.encode()], c.rsplit("/", 1)[1])[1] == CTA]  # fmt: skip
    for _ in range(2):
        status, _, headers = await fetch(cta, redirects=False)
        assert (status, headers["Location"]) == (302, CTA)
    # Another URL in the query, a changed URL in the token, a token of another key or of
    # another purpose: nothing but the signed URL, and a forged token is refused.
    status, _, headers = await fetch(cta + "?url=https://evil.example", redirects=False)
    assert (status, headers["Location"]) == (302, CTA)
    base = cta.rsplit("/", 1)[0]
    forged = [
        tokens.make_click_token([b"someone-else"], message["id"], "https://evil.example"),
        tokens.make_open_token([SECRET.encode()], message["id"]),
        _flip_middle(cta.rsplit("/", 1)[1]),
        "not-a-token",
    ]
    for token in forged:
        status, _, headers = await fetch(f"{base}/{token}", redirects=False)
        assert status == 403 and "Location" not in headers, token
    counts = (await stats(pool, campaign))[None]
    assert (counts["clicked"], counts["opened"]) == (1, 0)
    urls = await pool.fetch("SELECT payload->>'url' AS url FROM outbox.event")
    assert [r["url"] for r in urls] == [CTA]


async def test_transactional_mail_is_never_tracked(
    pool: asyncpg.Pool, tracked: tuple[Service, int, asyncpg.Record]
) -> None:
    running, _, _ = tracked
    receipt = await enqueue_one(
        pool, channel="email", recipient="ann@example.com", template="welcome",
        context={"name": "Ann", "login_url": "https://app.example/login"},
    )  # fmt: skip
    await running.recorder.wait_for(2)
    body = _html(running, receipt)
    assert 'href="https://app.example/login"' in body and "/t/o/" not in body


async def test_tracking_is_off_by_default(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with service(database_url, tmp_path) as running:
        _, message = await _send_campaign(pool, running)
        body = _html(running, message["id"])
    assert "/t/o/" not in body and "/t/c/" not in body
    assert html.escape(CTA) in body
