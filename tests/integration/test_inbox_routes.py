"""The inbox routes of a running daemon over real HTTP: list, counts, read / unread /
archive, read-all, seen, tokens, CORS and the widget."""

from __future__ import annotations

import time
from datetime import datetime

import asyncpg
import pytest

from tests.integration.inbox_helpers import (
    APP_ORIGIN,
    OLD_SECRET,
    Inbox,
    add_item,
    add_people,
    inbox,
    open_stream,
)

__all__ = ["inbox"]

CONTRACT_KEYS = [
    "id", "recipient_key", "notification_id", "message_id", "category", "priority", "title",
    "body", "url", "data", "created_at", "seen_at", "read_at", "archived_at",
]  # fmt: skip


async def _row(inbox: Inbox, item_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(inbox.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM outbox.inbox WHERE id = $1", item_id)
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_list_is_newest_first_with_the_contract_item_json(inbox: Inbox) -> None:
    first = await add_item(
        inbox.dsn, title="Booking confirmed", body="Room 4, Friday", url="https://app.test/b/7",
        data={"booking": 7}, category="bookings", priority=2, notification_id=11, message_id=12,
    )  # fmt: skip
    second = await add_item(inbox.dsn, title="Welcome")
    status, body, headers = await inbox.call("GET", "/inbox")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert [item["id"] for item in body["items"]] == [second, first]
    assert body["unread"] == 2 and body["next"] is None
    item = body["items"][1]
    assert list(item) == CONTRACT_KEYS
    assert item["id"] == first and isinstance(item["id"], int)
    assert (item["notification_id"], item["message_id"]) == (11, 12)
    assert item["recipient_key"] == "u1" and item["category"] == "bookings"
    assert (item["priority"], item["title"], item["body"]) == (
        2,
        "Booking confirmed",
        "Room 4, Friday",
    )
    assert item["url"] == "https://app.test/b/7" and item["data"] == {"booking": 7}
    assert datetime.fromisoformat(item["created_at"]).utcoffset() is not None
    assert (item["seen_at"], item["read_at"], item["archived_at"]) == (None, None, None)


async def test_cursor_pagination_and_limits(inbox: Inbox) -> None:
    ids = [await add_item(inbox.dsn, title=f"n{i}") for i in range(25)]
    newest_first = ids[::-1]
    status, page, _ = await inbox.call("GET", "/inbox")
    assert status == 200 and [i["id"] for i in page["items"]] == newest_first[:20]
    assert page["next"] == newest_first[19]
    status, rest, _ = await inbox.call("GET", f"/inbox?before={page['next']}")
    assert [i["id"] for i in rest["items"]] == newest_first[20:] and rest["next"] is None
    status, small, _ = await inbox.call("GET", "/inbox?limit=10")
    assert len(small["items"]) == 10 and small["next"] == newest_first[9]
    # More than the maximum gets the maximum.
    for _ in range(80):
        await add_item(inbox.dsn, title="more")
    status, big, _ = await inbox.call("GET", "/inbox?limit=1000")
    assert status == 200 and len(big["items"]) == 100 and big["next"] is not None


async def test_filters_unread_category_and_archived(inbox: Inbox) -> None:
    news = await add_item(inbox.dsn, title="news", category="news")
    read = await add_item(inbox.dsn, title="read", category="bookings")
    gone = await add_item(inbox.dsn, title="archived", category="bookings")
    assert (await inbox.call("POST", f"/inbox/{read}/read"))[0] == 200
    assert (await inbox.call("POST", f"/inbox/{gone}/archive"))[0] == 200

    async def ids(query: str) -> tuple[list[int], int]:
        status, body, _ = await inbox.call("GET", "/inbox" + query)
        assert status == 200, body
        return [item["id"] for item in body["items"]], body["unread"]

    assert await ids("") == ([read, news], 1)
    assert await ids("?unread=1") == ([news], 1)
    assert await ids("?category=bookings") == ([read], 0)
    # Archived items appear, and count, only when asked for.
    assert await ids("?archived=1") == ([gone, read, news], 2)
    assert await ids("?archived=1&category=bookings&unread=1") == ([gone], 1)


async def test_counts_read_unread_archive_read_all_and_seen(inbox: Inbox) -> None:
    a, b, c = [await add_item(inbox.dsn, title=t) for t in "abc"]
    assert (await inbox.call("GET", "/inbox/count"))[1] == {"unread": 3, "unseen": 3}

    status, item, _ = await inbox.call("POST", f"/inbox/{a}/read")
    assert status == 200 and item["id"] == a and item["read_at"] is not None
    assert item["seen_at"] is not None  # reading implies seeing
    read_at = item["read_at"]
    status, again, _ = await inbox.call("POST", f"/inbox/{a}/read")
    assert status == 200 and again["read_at"] == read_at  # idempotent: the first read stands
    assert (await inbox.call("GET", "/inbox/count"))[1] == {"unread": 2, "unseen": 2}

    status, item, _ = await inbox.call("POST", f"/inbox/{a}/unread")
    assert status == 200 and item["read_at"] is None and item["seen_at"] is not None
    assert (await inbox.call("GET", "/inbox/count"))[1] == {"unread": 3, "unseen": 2}

    status, item, _ = await inbox.call("POST", f"/inbox/{b}/archive")
    assert status == 200 and item["archived_at"] is not None
    assert (await inbox.call("GET", "/inbox/count"))[1] == {"unread": 2, "unseen": 1}

    status, body, _ = await inbox.call("POST", "/inbox/seen")
    assert (status, body) == (200, {"updated": 1})
    assert (await inbox.call("GET", "/inbox/count"))[1] == {"unread": 2, "unseen": 0}

    status, body, _ = await inbox.call("POST", "/inbox/read-all")
    # a and c, and the archived b too: read-all leaves nothing unread.
    assert (status, body) == (200, {"updated": 3})
    assert (await inbox.call("GET", "/inbox/count"))[1] == {"unread": 0, "unseen": 0}
    assert (await _row(inbox, c))["read_at"] is not None


async def test_another_persons_item_is_not_found_and_unchanged(inbox: Inbox) -> None:
    theirs = await add_item(inbox.dsn, key="u2", title="private")
    for action in ("read", "unread", "archive"):
        status, body, _ = await inbox.call("POST", f"/inbox/{theirs}/{action}", key="u1")
        assert (status, body) == (404, {"error": "no such item"})
    for path in ("/inbox/999999/read", "/inbox/99999999999999999999/read"):
        assert (await inbox.call("POST", path))[0] == 404
    row = await _row(inbox, theirs)
    assert (row["read_at"], row["archived_at"], row["seen_at"]) == (None, None, None)
    # u1's lists and counts know nothing of it; read-all and seen leave it alone.
    assert (await inbox.call("GET", "/inbox", key="u1"))[1]["items"] == []
    await inbox.call("POST", "/inbox/read-all", key="u1")
    await inbox.call("POST", "/inbox/seen", key="u1")
    assert (await _row(inbox, theirs))["read_at"] is None
    assert (await inbox.call("GET", "/inbox/count", key="u2"))[1] == {"unread": 1, "unseen": 1}


def _signed_for_a_key_with_nul() -> str:
    """Genuinely signed, for a key PostgreSQL cannot store (inbox_token refuses to make it)."""
    import base64
    import hashlib
    import hmac

    key = base64.urlsafe_b64encode(b"u\x00").decode().rstrip("=")
    head = f"v1.{key}.9999999999"
    digest = hmac.new(b"inbox-key-2", head.encode(), hashlib.sha256).digest()
    return f"{head}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dTE6cGFzcw=="},
        {"Authorization": "Bearer v1.dTE.9999999999.AAAA"},
        {"Authorization": f"Bearer {Inbox.token('u1', secret='not-the-key')}"},
        {"Authorization": f"Bearer {Inbox.token('u1', ttl=1)[:-2]}xx"},
        {"Authorization": "Bearer " + "x" * 8000},
        {"Authorization": f"Bearer {_signed_for_a_key_with_nul()}"},
    ],
    ids=["none", "empty", "basic", "forged", "unknown-key", "tampered", "huge", "nul-key"],
)
async def test_bad_tokens_are_401_and_change_nothing(inbox: Inbox, headers: dict[str, str]) -> None:
    item = await add_item(inbox.dsn)
    for method, path in [
        ("GET", "/inbox"), ("GET", "/inbox/count"), ("GET", "/inbox/stream"),
        ("POST", f"/inbox/{item}/read"), ("POST", "/inbox/read-all"), ("POST", "/inbox/seen"),
    ]:  # fmt: skip
        status, body, response_headers = await inbox.call(method, path, key=None, headers=headers)
        assert status == 401, (method, path, body)
        assert body["error"].startswith(("missing token", "invalid token", "Authorization"))
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
    row = await _row(inbox, item)
    assert (row["read_at"], row["seen_at"]) == (None, None)


async def test_expired_token_is_401(inbox: Inbox) -> None:
    from outbox import inbox_token

    expired = inbox_token("u1", secret="inbox-key-2", ttl=60, now=time.time() - 61)
    status, body, _ = await inbox.call(
        "GET", "/inbox/count", key=None, headers={"Authorization": f"Bearer {expired}"}
    )
    assert (status, body) == (401, {"error": "invalid token: expired token"})


async def test_rotated_key_still_verifies_and_query_token_works(inbox: Inbox) -> None:
    await add_item(inbox.dsn)
    old = Inbox.token("u1", secret=OLD_SECRET)
    status, body, _ = await inbox.call(
        "GET", "/inbox/count", key=None, headers={"Authorization": f"Bearer {old}"}
    )
    assert (status, body) == (200, {"unread": 1, "unseen": 1})
    status, body, _ = await inbox.call("GET", f"/inbox/count?token={Inbox.token('u1')}", key=None)
    assert (status, body) == (200, {"unread": 1, "unseen": 1})


@pytest.mark.parametrize(
    "query",
    ["limit=abc", "limit=0", "limit=-5", "before=x", "before=1.5", "unread=maybe",
     "archived=2", "category=" + "c" * 201, "limit=١٢", "category=a%00b"],
)  # fmt: skip
async def test_bad_parameters_are_400(inbox: Inbox, query: str) -> None:
    status, body, _ = await inbox.call("GET", "/inbox?" + query)
    assert status == 400 and "error" in body


async def test_cors_preflight_and_responses(inbox: Inbox) -> None:
    preflight = {
        "Origin": APP_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    for path in ("/inbox", "/inbox/count", "/inbox/stream", "/inbox/1/read", "/inbox/read-all"):
        status, _, headers = await inbox.call("OPTIONS", path, key=None, headers=preflight)
        assert status == 204, path
        assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert "POST" in headers["Access-Control-Allow-Methods"]
    status, _, headers = await inbox.call(
        "OPTIONS", "/inbox", key=None, headers={**preflight, "Origin": "https://evil.test"}
    )
    assert status == 403 and "Access-Control-Allow-Origin" not in headers

    _, _, headers = await inbox.call("GET", "/inbox/count", headers={"Origin": APP_ORIGIN})
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in headers["Vary"]
    _, _, headers = await inbox.call("GET", "/inbox/count", headers={"Origin": "https://evil.test"})
    assert "Access-Control-Allow-Origin" not in headers
    # Refusals carry it too, so that the page can read why.
    status, _, headers = await inbox.call(
        "GET", "/inbox/count", key=None, headers={"Origin": APP_ORIGIN}
    )
    assert status == 401 and headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    async with open_stream(inbox, headers={"Origin": APP_ORIGIN}) as stream:
        assert stream.response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")


async def test_widget_is_served_with_an_etag(inbox: Inbox) -> None:
    status, text, headers = await inbox.call("GET", "/inbox/widget.js", key=None)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert 'customElements.define("outboxd-bell"' in text
    status, _, _ = await inbox.call(
        "GET", "/inbox/widget.js", key=None, headers={"If-None-Match": headers["ETag"]}
    )
    assert status == 304


async def test_a_key_that_is_not_a_person_sees_an_empty_inbox(inbox: Inbox) -> None:
    status, body, _ = await inbox.call("GET", "/inbox", key="nobody")
    assert (status, body) == (200, {"items": [], "unread": 0, "next": None})
    await add_people(inbox.dsn, "u3")
    assert (await inbox.call("GET", "/inbox/count", key="u3"))[1] == {"unread": 0, "unseen": 0}
