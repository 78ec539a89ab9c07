"""Generated requests against the inbox routes of a running daemon: no input gets a 5xx, and
nothing a request may not touch changes."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbox import inbox_token, upsert_recipient
from tests.integration.test_fuzz_http import Served, served

__all__ = ["served"]

KEY = "fuzz-key"  # the served daemon's OUTBOXD_SECRET_KEY
PATHS = ["/inbox", "/inbox/count", "/inbox/read-all", "/inbox/seen", "/inbox/stream",
         "/inbox/widget.js", "/inbox/{id}/read", "/inbox/{id}/unread", "/inbox/{id}/archive",
         "/inbox/{id}", "/inbox/{id}/delete"]  # fmt: skip
PARAMS = ["limit", "before", "unread", "category", "archived", "token", "last_event_id"]


async def _setup(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        await upsert_recipient(conn, "owner")
        rows = await conn.fetch(
            "INSERT INTO outbox.inbox (recipient_key, title) SELECT 'owner', 't' || g"
            " FROM generate_series(1, 5) g RETURNING id"
        )
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def _untouched(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM outbox.inbox WHERE recipient_key = 'owner'"
            " AND read_at IS NULL AND seen_at IS NULL AND archived_at IS NULL"
        )
        return count
    finally:
        await conn.close()


def _tokens() -> st.SearchStrategy[str | None]:
    """Anything but a token of the owner: none, junk, forged, expired, or another person's
    (which may use every route, and must not reach the owner's items)."""
    now = time.time()
    # Keys as inbox_token accepts them: UTF-8 text, as PostgreSQL holds it (a lone surrogate
    # cannot be encoded), and no NUL (refused there; tested on its own).
    keys = st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=20)
    return st.one_of(
        st.none(),
        st.text(max_size=80),
        st.builds(lambda k: inbox_token(k, secret="wrong-key"), keys.filter(bool)),
        st.just(inbox_token("owner", secret=KEY, ttl=60, now=now - 3600)),
        st.builds(lambda k: inbox_token("x" + k, secret=KEY), keys),
    )


@pytest.mark.slow
def test_inbox_routes_never_5xx_and_never_touch_the_owners_items(
    served: Served, database_url: str
) -> None:
    ids = asyncio.run(_setup(database_url))
    item_ids = st.one_of(
        st.sampled_from([str(i) for i in ids]),
        st.integers(min_value=-5, max_value=2**70).map(str),
        st.text(max_size=12).map(lambda t: quote(t, safe="")),
    )

    @settings(max_examples=600, deadline=None)
    @given(
        method=st.sampled_from(["GET", "POST", "OPTIONS", "PUT", "HEAD"]),
        path=st.sampled_from(PATHS),
        item=item_ids,
        query=st.dictionaries(st.sampled_from(PARAMS), st.text(max_size=30), max_size=4),
        token=_tokens(),
        in_header=st.booleans(),
        origin=st.sampled_from([None, "https://evil.test", "null", ""]),
    )
    def one_request(
        method: str,
        path: str,
        item: str,
        query: dict[str, str],
        token: str | None,
        in_header: bool,
        origin: str | None,
    ) -> None:
        headers: dict[str, str] = {}
        if token is not None and in_header:
            headers["Authorization"] = f"Bearer {token}"
        elif token is not None:
            query = {**query, "token": token}
        if origin is not None:
            headers["Origin"] = origin
        valid = token is not None and token.startswith("v1.") and "." in token
        if path == "/inbox/stream" and method == "GET" and valid:
            return  # a genuine stream stays open: covered by the stream tests
        target = (
            path.replace("{id}", item)
            + "?"
            + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        )
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            return  # not a request a client could send (a header must be Latin-1)
        if any(c in value for value in headers.values() for c in "\r\n"):
            return
        codes = served.send("public", raw)
        assert codes and codes[-1] < 500, (method, target, headers, codes)

    one_request()
    assert asyncio.run(_untouched(database_url)) == len(ids)
