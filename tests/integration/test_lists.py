"""Lists and double opt-in: subscribe, the signed confirmation link, GET that changes
nothing, POST that confirms once, and tokens that are tampered with or expired."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from daemon.campaigns import tokens
from tests.integration.campaign_helpers import (
    SECRET,
    Service,
    add_list,
    add_people,
    fetch,
    service,
    wait_until,
)


@pytest.fixture
async def running(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    await add_people(pool, {"u42": {"first_name": "Ann"}, "u43": {}})
    await add_list(pool, "news", double_opt_in=True)
    await add_list(pool, "tips", double_opt_in=False)
    async with service(database_url, tmp_path) as running:
        yield running


async def _subscribe(pool: asyncpg.Pool, list_name: str, key: str, **extra: str) -> str:
    status: str = await pool.fetchval(
        "SELECT outbox.subscribe(list_name => $1, recipient_key => $2, source => 'footer', "
        "ip => $3::inet)",
        list_name,
        key,
        extra.get("ip", "203.0.113.7"),
    )
    return status


async def _status(pool: asyncpg.Pool, key: str = "u42", list_name: str = "news") -> str:
    status: str = await pool.fetchval(
        "SELECT s.status FROM outbox.subscription s JOIN outbox.list l ON l.id = s.list_id "
        "WHERE l.name = $1 AND s.recipient_key = $2",
        list_name,
        key,
    )
    return status


async def _confirm_link(pool: asyncpg.Pool, running: Service, key: str = "u42") -> str:
    """The confirm_url of the person's confirmation email, once the daemon has sent it."""

    async def sent() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) FROM outbox.message WHERE recipient_key = $1 "
                "AND template = 'list_confirm' AND status = 'sent'",
                key,
            )
        )

    await wait_until(sent, running.recorder.changed)
    message_id = await pool.fetchval(
        "SELECT max(id) FROM outbox.message WHERE recipient_key = $1 AND template = 'list_confirm'",
        key,
    )
    text = running.eml(message_id).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [link] = re.findall(r"https://mail\.acme\.example/confirm\?token=\S+", text)
    return running.local(link)


async def test_double_opt_in_confirms_by_post_only(pool: asyncpg.Pool, running: Service) -> None:
    assert await _subscribe(pool, "news", "u42") == "pending"
    row = await pool.fetchrow("SELECT * FROM outbox.subscription WHERE recipient_key = 'u42'")
    assert (row["source"], str(row["ip"]), row["confirmed_at"]) == ("footer", "203.0.113.7", None)
    link = await _confirm_link(pool, running)
    confirm = await pool.fetchrow("SELECT * FROM outbox.message WHERE template = 'list_confirm'")
    assert (confirm["category"], confirm["priority"], confirm["recipient"]) == (
        "transactional", 2, "u42@example.com"
    )  # fmt: skip

    # A mail scanner fetching the link changes nothing.
    for _ in range(2):
        status, page, headers = await fetch(link)
        assert status == 200 and "Confirm your subscription" in page and 'method="post"' in page
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert await _status(pool) == "pending"

    status, page, _ = await fetch(link, method="POST")
    assert status == 200 and "you are subscribed to “news”" in page
    assert await _status(pool) == "active"
    confirmed_at = await pool.fetchval("SELECT confirmed_at FROM outbox.subscription")
    assert confirmed_at is not None
    # Idempotent: a second POST (a double click) confirms nothing more.
    status, page, _ = await fetch(link, method="POST")
    assert status == 200 and await _status(pool) == "active"
    assert await pool.fetchval("SELECT confirmed_at FROM outbox.subscription") == confirmed_at
    status, page, _ = await fetch(link)
    assert status == 200 and "already subscribed" in page


async def test_the_token_may_come_in_the_form(pool: asyncpg.Pool, running: Service) -> None:
    await _subscribe(pool, "news", "u42")
    token = (await _confirm_link(pool, running)).split("token=", 1)[1]
    status, _, _ = await fetch(running.url + "/confirm", method="POST", data={"token": token})
    assert status == 200 and await _status(pool) == "active"


def _tamper(link: str) -> list[str]:
    base, token = link.split("token=", 1)
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    other = tokens.sign([b"not-our-key"], "confirm", [1, "u42", 2**40])
    return [
        f"{base}token={flipped}",
        f"{base}token={token[:-4]}",
        f"{base}token={other}",
        f"{base}token={tokens.make_open_token([SECRET.encode()], 1)}",  # another purpose
        f"{base}token=garbage",
    ]


async def test_tampered_tokens_are_forbidden_and_change_nothing(
    pool: asyncpg.Pool, running: Service
) -> None:
    await _subscribe(pool, "news", "u42")
    link = await _confirm_link(pool, running)
    for bad in _tamper(link):
        assert (await fetch(bad))[0] == 403, bad
        assert (await fetch(bad, method="POST"))[0] == 403, bad
    assert (await fetch(running.url + "/confirm"))[0] == 400
    assert (await fetch(running.url + "/confirm", method="POST"))[0] == 400
    assert await _status(pool) == "pending"


async def test_expired_tokens_are_gone_and_change_nothing(
    pool: asyncpg.Pool, running: Service
) -> None:
    await _subscribe(pool, "news", "u42")
    list_id = await pool.fetchval("SELECT id FROM outbox.list WHERE name = 'news'")
    token = tokens.make_confirm_token([SECRET.encode()], list_id, "u42", ttl_seconds=-1)
    link = f"{running.url}/confirm?token={token}"
    status, page, _ = await fetch(link)
    assert status == 410 and "expired" in page
    assert (await fetch(link, method="POST"))[0] == 410
    assert await _status(pool) == "pending"
    # A genuine token for a subscription that does not exist.
    ghost = tokens.make_confirm_token([SECRET.encode()], list_id, "nobody", ttl_seconds=60)
    assert (await fetch(f"{running.url}/confirm?token={ghost}", method="POST"))[0] == 404


async def test_an_ended_subscription_is_not_revived_by_an_old_link(
    pool: asyncpg.Pool, running: Service
) -> None:
    await _subscribe(pool, "news", "u42")
    link = await _confirm_link(pool, running)
    assert await pool.fetchval("SELECT outbox.unsubscribe('news', 'u42')") is True
    status, page, _ = await fetch(link, method="POST")
    assert status == 409 and "has ended" in page
    assert await _status(pool) == "unsubscribed"


async def test_subscribing_again(pool: asyncpg.Pool, running: Service) -> None:
    assert await _subscribe(pool, "news", "u42") == "pending"
    assert await _subscribe(pool, "news", "u42") == "pending"  # no second email this soon
    await _confirm_link(pool, running)
    count = "SELECT count(*) FROM outbox.message WHERE template = 'list_confirm'"
    assert await pool.fetchval(count) == 1
    await pool.execute(
        "UPDATE outbox.subscription SET confirm_sent_at = now() - interval '6 minutes'"
    )
    assert await _subscribe(pool, "news", "u42") == "pending"
    assert await pool.fetchval(count) == 2
    await pool.execute(
        "SELECT outbox.confirm_subscription(list_id, recipient_key) FROM outbox.subscription"
    )
    assert await _subscribe(pool, "news", "u42") == "active"  # stays active, no email
    assert await pool.fetchval(count) == 2
    # After unsubscribing, subscribing again asks for a confirmation again.
    await pool.execute("SELECT outbox.unsubscribe('news', 'u42')")
    assert await _subscribe(pool, "news", "u42", ip="2001:db8::1") == "pending"
    assert await pool.fetchval(count) == 3
    ip = await pool.fetchval("SELECT ip FROM outbox.subscription")
    assert str(ip) == "2001:db8::1"


async def test_a_single_opt_in_list_is_active_at_once(pool: asyncpg.Pool, running: Service) -> None:
    assert await _subscribe(pool, "tips", "u43") == "active"
    assert await _status(pool, "u43", "tips") == "active"
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("SELECT outbox.subscribe('nope', 'u42')", "no list named 'nope'"),
        ("SELECT outbox.subscribe('news', 'ghost')", "recipient_key 'ghost' is not in"),
        ("SELECT outbox.subscribe('news', 'nomail')", "'nomail' has no email address"),
        ("SELECT outbox.subscribe('news', 'u42', context => '[1]')", "context must be a JSON"),
    ],
)
async def test_subscribe_refuses_bad_input(pool: asyncpg.Pool, call: str, message: str) -> None:
    await add_people(pool, {"u42": {}})
    await add_people(pool, {"nomail": {}}, email=False)
    await add_list(pool, "news", double_opt_in=True)
    with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
        await pool.fetchval(call)
    assert await pool.fetchval("SELECT count(*) FROM outbox.subscription") == 0
