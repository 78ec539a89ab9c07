"""GET /inbox/stream of a running daemon: live items and counts, Last-Event-ID replay (across
a daemon restart too), heartbeats, slow clients, expiring tokens, a lost LISTEN connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.integration.inbox_helpers import (
    Event,
    EventStream,
    Inbox,
    add_item,
    add_people,
    inbox,
    open_stream,
    serving,
    streams_ready,
)

__all__ = ["inbox"]


async def _execute(dsn: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_connect_sends_the_count_then_live_items_and_counts(inbox: Inbox) -> None:
    old = await add_item(inbox.dsn, title="before")
    async with open_stream(inbox) as stream:
        first = await stream.next()
        # Nothing old is sent; the count carries the newest id, so that a reconnection of
        # this client (Last-Event-ID) misses nothing committed in between.
        assert (first.kind, first.json, first.id) == ("count", {"unread": 1, "unseen": 1}, str(old))

        new = await add_item(inbox.dsn, title="Your booking", body="Friday", data={"k": 1})
        item = await stream.next_new(after=old)
        assert (item.kind, item.id) == ("item", str(new))
        assert item.json["title"] == "Your booking" and item.json["data"] == {"k": 1}
        _, listed, _ = await inbox.call("GET", "/inbox")
        assert item.json == listed["items"][0]  # the same JSON as the list's
        count = await stream.next()
        assert (count.kind, count.json, count.id) == ("count", {"unread": 2, "unseen": 2}, None)

        await inbox.call("POST", f"/inbox/{old}/read")
        assert (await stream.next()).json == {"unread": 1, "unseen": 1}
        await inbox.call("POST", "/inbox/seen")
        assert (await stream.next()).json == {"unread": 1, "unseen": 0}
        await inbox.call("POST", "/inbox/read-all")
        assert (await stream.next()).json == {"unread": 0, "unseen": 0}
        # A change made in SQL by the application reaches the stream the same way.
        await _execute(inbox.dsn, "SELECT outbox.inbox_mark_unread('u1', ARRAY[$1::bigint])", new)
        assert (await stream.next()).json == {"unread": 1, "unseen": 0}


async def test_a_stream_only_sees_its_own_persons_items(inbox: Inbox) -> None:
    async with open_stream(inbox, "u1") as mine, open_stream(inbox, "u2") as theirs:
        assert (await mine.next()).kind == "count"
        assert (await theirs.next()).kind == "count"
        await add_item(inbox.dsn, key="u2", title="for u2")
        mine_item = await add_item(inbox.dsn, key="u1", title="for u1")
        got = await mine.next()
        assert (got.kind, got.id) == ("item", str(mine_item))
        assert (await theirs.next()).json["title"] == "for u2"


async def test_many_items_in_one_transaction_arrive_in_id_order(inbox: Inbox) -> None:
    async with open_stream(inbox) as stream:
        await stream.next()
        conn = await asyncpg.connect(inbox.dsn)
        try:
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO outbox.inbox (recipient_key, title)"
                    " SELECT 'u1', 'n' || g FROM generate_series(1, 30) g RETURNING id"
                )
            ]
        finally:
            await conn.close()
        got = [int((await stream.next()).id or 0) for _ in ids]
        assert got == sorted(ids)
        assert (await stream.next()).json == {"unread": 30, "unseen": 30}


async def test_last_event_id_replays_missed_items_in_order_then_live(inbox: Inbox) -> None:
    ids = [await add_item(inbox.dsn, title=f"n{i}") for i in range(4)]
    archived = await add_item(inbox.dsn, title="archived")
    await inbox.call("POST", f"/inbox/{archived}/archive")
    async with open_stream(inbox, headers={"Last-Event-ID": str(ids[1])}) as stream:
        replayed = [await stream.next() for _ in range(2)]
        assert [(e.kind, e.id) for e in replayed] == [("item", str(ids[2])), ("item", str(ids[3]))]
        count = await stream.next()
        assert count.kind == "count" and count.json == {"unread": 4, "unseen": 4}
        live = await add_item(inbox.dsn, title="live")
        assert (await stream.next_new(after=archived)).id == str(live)
    # A new EventSource cannot set the header: the query parameter does the same.
    async with open_stream(inbox, query=f"&last_event_id={ids[2]}") as stream:
        # ids[3] and the live one; the archived item between them is left out.
        assert [(await stream.next()).id for _ in range(2)] == [str(ids[3]), str(live)]
    status, _, _ = await inbox.call(
        "GET", "/inbox/stream", headers={"Last-Event-ID": "not-a-number"}
    )
    assert status == 400


async def test_replay_across_a_daemon_restart(database_url: str, tmp_path: Path) -> None:
    await add_people(database_url, "u1")
    async with serving(database_url, tmp_path) as first, open_stream(first) as stream:
        await stream.next()
        seen = await add_item(database_url, title="seen live")
        event = await stream.next()
        assert event.id == str(seen)
        first.daemon.request_stop()
        assert await stream.ended()  # the daemon ends its streams when it stops
    missed = [await add_item(database_url, title=f"while down {i}") for i in range(3)]
    async with (
        serving(database_url, tmp_path / "again") as second,
        open_stream(second, headers={"Last-Event-ID": event.id or ""}) as stream,
    ):
        assert [(await stream.next()).id for _ in missed] == [str(i) for i in missed]
        assert (await stream.next()).json == {"unread": 4, "unseen": 4}


async def test_idle_streams_get_heartbeat_comments(inbox: Inbox) -> None:
    async with open_stream(inbox) as stream:
        assert (await stream.next()).kind == "count"
        beat = await stream.next(comments=True)  # the fixture beats every 0.5 s
        assert (beat.kind, beat.data) == ("comment", "keep-alive")
        assert stream.response.headers["Cache-Control"].startswith("no-cache")
        assert stream.response.headers["X-Accel-Buffering"] == "no"


async def test_the_stream_ends_when_its_token_expires(inbox: Inbox) -> None:
    url = f"{inbox.url}/inbox/stream?token={Inbox.token('u1', ttl=2)}"
    async with inbox.session.get(url) as response:
        assert response.status == 200
        stream = EventStream(response)
        assert (await stream.next()).kind == "count"
        assert await stream.ended(within=15)


async def test_a_client_that_falls_behind_is_dropped_and_catches_up(
    database_url: str, tmp_path: Path
) -> None:
    await add_people(database_url, "u1")
    async with serving(database_url, tmp_path, stream_buffer=4096) as inbox:
        async with open_stream(inbox) as stream:
            first = await stream.next()
            assert first.kind == "count"
            # The client reads nothing while ~16 MB of events pile up: far more than the
            # sockets' buffers and the 4 KiB the daemon keeps for it.
            conn = await asyncpg.connect(database_url)
            try:
                ids = [
                    r["id"]
                    for r in await conn.fetch(
                        "INSERT INTO outbox.inbox (recipient_key, title, body)"
                        " SELECT 'u1', 'n' || g, repeat(md5(g::text), 2048)"
                        " FROM generate_series(1, 250) g RETURNING id"
                    )
                ]
            finally:
                await conn.close()
            got: list[Event] = []
            with pytest.raises((EOFError, aiohttp.ClientError)):
                while True:
                    event = await stream.next(within=30)
                    if event.kind == "item":
                        got.append(event)
            assert len(got) < len(ids)
        last = got[-1].id if got else first.id
        async with open_stream(inbox, headers={"Last-Event-ID": last or "0"}) as again:
            caught_up = []
            while len(caught_up) < len(ids) - len(got):
                event = await again.next()
                if event.kind == "item":
                    caught_up.append(int(event.id or 0))
            assert [int(e.id or 0) for e in got] + caught_up == ids


async def test_too_many_streams_are_refused(database_url: str, tmp_path: Path) -> None:
    await add_people(database_url, "u1")
    async with serving(database_url, tmp_path, max_streams=1, heartbeat_seconds=0.2) as inbox:
        # The readiness probe's stream counts until a heartbeat finds it gone.
        async with asyncio.timeout(30):
            while True:
                response = await inbox.session.get(
                    f"{inbox.url}/inbox/stream?token={Inbox.token('u1')}"
                )
                if response.status == 200:
                    break
                response.release()
        try:
            status, body, headers = await inbox.call("GET", "/inbox/stream")
            assert (status, body["error"]) == (503, "too many open streams")
            assert headers["Retry-After"]
        finally:
            response.close()


async def test_a_very_long_key_still_gets_live_items(inbox: Inbox) -> None:
    key = "k" * 5000  # too long for the NOTIFY payload: the hub looks it up by id
    await add_people(inbox.dsn, key)
    async with open_stream(inbox, key, token_in_header=True) as stream:
        assert (await stream.next()).kind == "count"
        item = await add_item(inbox.dsn, key=key, title="long")
        assert (await stream.next()).id == str(item)
        assert (await stream.next()).json == {"unread": 1, "unseen": 1}
        await _execute(inbox.dsn, "SELECT outbox.inbox_mark_all_read($1)", key)
        assert (await stream.next()).json == {"unread": 0, "unseen": 0}


@pytest.mark.slow
async def test_streams_end_when_the_listen_connection_is_lost_and_catch_up(
    inbox: Inbox, restart_postgres: Callable[[], None]
) -> None:
    before = await add_item(inbox.dsn, title="before")
    async with open_stream(inbox) as stream:
        count = await stream.next()
        assert count.id == str(before)
        await asyncio.to_thread(restart_postgres)
        # Whatever commits while the LISTEN connection is away is not signalled: the hub
        # ends the streams so that their clients reconnect and replay.
        assert await stream.ended(within=60)
    missed = await add_item(inbox.dsn, title="during the outage")
    await streams_ready(inbox, within=60)
    async with open_stream(inbox, headers={"Last-Event-ID": count.id or ""}) as stream:
        event = await stream.next()
        assert (event.kind, event.id) == ("item", str(missed))
        assert json.loads(event.data)["title"] == "during the outage"


async def test_open_streams_never_turn_away_other_requests(
    database_url: str, tmp_path: Path
) -> None:
    """Streams are bounded by OUTBOXD_INBOX__MAX_STREAMS, not by the public server's
    connection cap: with more streams open than the cap, pages and the webhook still get
    through."""
    await add_people(database_url, "u1")
    async with (
        serving(database_url, tmp_path, heartbeat_seconds=0.5, http_max_connections=4) as inbox,
        contextlib.AsyncExitStack() as streams,
    ):
        url = f"{inbox.url}/inbox/stream?token={Inbox.token('u1')}"
        for _ in range(8):  # a connection each: one session each
            session = await streams.enter_async_context(aiohttp.ClientSession())
            response = await streams.enter_async_context(session.get(url))
            assert response.status == 200
        async with inbox.session.get(f"{inbox.url}/healthz") as health:
            assert health.status == 200
