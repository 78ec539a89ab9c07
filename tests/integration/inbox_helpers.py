"""A running daemon serving the inbox routes, tokens, items and an SSE reader for tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemon.main import Daemon
from outbox import inbox_token, upsert_recipient
from tests.integration.daemon_helpers import make_settings

SECRET = "inbox-key-2"
OLD_SECRET = "inbox-key-1"
APP_ORIGIN = "https://app.example.test"


@dataclass
class Inbox:
    """A daemon with HTTP on a free port, OUTBOXD_SECRET_KEY=SECRET,OLD_SECRET."""

    daemon: Daemon
    dsn: str
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    @staticmethod
    def token(key: str = "u1", ttl: int = 3600, secret: str = SECRET) -> str:
        return inbox_token(key, secret=secret, ttl=ttl)

    def auth(self, key: str = "u1") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(key)}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = "u1",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        """(status, parsed JSON or text, headers)."""
        sent = {**(self.auth(key) if key else {}), **(headers or {})}
        async with self.session.request(method, self.url + path, headers=sent) as response:
            text = await response.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return response.status, body, response.headers


def inbox_settings(
    database_url: str, tmp_path: Path, *, http_max_connections: int = 512, **inbox: Any
) -> Any:
    return make_settings(
        database_url,
        tmp_path,
        http={"host": "127.0.0.1", "port": 0, "max_connections": http_max_connections},
        secret_key=f"{SECRET},{OLD_SECRET}",
        inbox={"allowed_origins": APP_ORIGIN, **inbox},
    )


@contextlib.asynccontextmanager
async def serving(database_url: str, tmp_path: Path, **inbox: Any) -> AsyncIterator[Inbox]:
    """A started daemon whose event streams are live; stopped gracefully on exit. Keywords
    are inbox settings, and ``http_max_connections``."""
    daemon = Daemon(inbox_settings(database_url, tmp_path, **inbox), dsn=database_url)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.started.wait(), 30)
        async with aiohttp.ClientSession() as session:
            served = Inbox(daemon, database_url, session)
            await streams_ready(served)
            yield served
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 60)


async def streams_ready(inbox: Inbox, within: float = 30) -> None:
    """Wait until the daemon's stream hub listens (streams are refused with 503 before)."""
    async with asyncio.timeout(within):
        while True:
            url = f"{inbox.url}/inbox/stream?token={inbox.token('probe')}"
            async with inbox.session.get(url) as response:
                if response.status == 200:
                    return
                assert response.status == 503, response.status
            await asyncio.sleep(0.05)


@pytest.fixture
async def inbox(database_url: str, tmp_path: Path) -> AsyncIterator[Inbox]:
    """A serving daemon (heartbeats every 0.5 s) and two people, u1 and u2."""
    await add_people(database_url, "u1", "u2")
    async with serving(database_url, tmp_path, heartbeat_seconds=0.5) as served:
        yield served


async def add_people(dsn: str, *keys: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for key in keys:
            await upsert_recipient(conn, key, email=f"{key}@example.com", phone="+14155550100")
    finally:
        await conn.close()


async def add_item(dsn: str, key: str = "u1", title: str = "Hello", **columns: Any) -> int:
    """Insert one inbox item as the inapp provider would, committed on its own."""
    values = {"recipient_key": key, "title": title, **columns}
    if "data" in values:
        values["data"] = json.dumps(values["data"])
    names = ", ".join(values)
    slots = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    conn = await asyncpg.connect(dsn)
    try:
        item_id: int = await conn.fetchval(
            f"INSERT INTO outbox.inbox ({names}) VALUES ({slots}) RETURNING id", *values.values()
        )
    finally:
        await conn.close()
    return item_id


@dataclass
class Event:
    kind: str  # "item", "count", "comment" or "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """Reads a text/event-stream response one event (or comment) at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, within: float = 15, *, comments: bool = False) -> Event:
        async with asyncio.timeout(within):
            while True:
                event = await self._read()
                if event.kind == "comment" and not comments:
                    continue
                if event.kind == "message" and event.retry is not None and not event.data:
                    continue  # the retry hint alone
                return event

    async def next_new(self, after: int, within: float = 15) -> Event:
        """The next event, passing over items up to id ``after``: an item committed just
        before a stream opens may still reach it live (its signal was on the way), once."""
        while True:
            event = await self.next(within)
            if event.kind != "item" or int(event.id or 0) > after:
                return event

    async def _read(self) -> Event:
        data: list[str] = []
        event = Event("message")
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if data or event.id is not None or event.retry is not None:
                    event.data = "\n".join(data)
                    return event
                continue
            if line.startswith(":"):
                if not data:
                    return Event("comment", line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event.kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event.id = value
            elif name == "retry":
                event.retry = int(value)
            event.fields[name] = value

    async def ended(self, within: float = 15) -> bool:
        """True once the server ends the stream (comments and events are skipped)."""
        async with asyncio.timeout(within):
            while True:
                try:
                    await self._read()
                except EOFError:
                    return True


@contextlib.asynccontextmanager
async def open_stream(
    inbox: Inbox,
    key: str = "u1",
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    token_in_header: bool = False,
) -> AsyncIterator[EventStream]:
    """An open stream of ``key``'s inbox (token in ``?token=``, as an EventSource sends it)."""
    if token_in_header:
        url = f"{inbox.url}/inbox/stream?{query.lstrip('&')}"
        headers = {**inbox.auth(key), **(headers or {})}
    else:
        url = f"{inbox.url}/inbox/stream?token={inbox.token(key)}{query}"
    async with inbox.session.get(url, headers=headers or {}) as response:
        assert response.status == 200, await response.text()
        yield EventStream(response)
