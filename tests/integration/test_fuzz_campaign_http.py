"""Generated requests against /confirm and the tracking routes of a running daemon: no input
is a 5xx, no forged token confirms anything or records anything, no redirect goes anywhere
but a signed URL."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.campaigns import tokens
from daemon.main import Daemon
from tests.integration.daemon_helpers import make_settings

KEY = b"fuzz-key"


class Served:
    def __init__(self, port: int, genuine: dict[str, str]) -> None:
        self.port = port
        #: A genuine token of each purpose, to mutate.
        self.genuine = genuine

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            response.read()
            return response.status, response.getheader("Location")
        finally:
            conn.close()


async def _prepare(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox.recipient (key, email) VALUES ('u1', 'u1@example.com');"
            "INSERT INTO outbox.list (name) VALUES ('news');"
            "SELECT outbox.subscribe('news', 'u1');"
            "UPDATE outbox.message SET not_before = now() + interval '1 day'"
        )
        list_id: int = await conn.fetchval("SELECT id FROM outbox.list")
        return list_id
    finally:
        await conn.close()


async def _state(database_url: str) -> tuple[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        status: str = await conn.fetchval("SELECT status FROM outbox.subscription")
        events: int = await conn.fetchval("SELECT count(*) FROM outbox.event")
        return status, events
    finally:
        await conn.close()


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    list_id = asyncio.run(_prepare(database_url))
    config = make_settings(
        database_url, tmp_path, http={"host": "127.0.0.1", "port": 0}, secret_key=KEY.decode()
    )
    loop = asyncio.new_event_loop()
    box: list[Daemon] = []
    started = threading.Event()

    def host() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            daemon = Daemon(config, dsn=database_url)
            box.append(daemon)
            task = asyncio.create_task(daemon.run())
            await daemon.started.wait()
            started.set()
            await task

        loop.run_until_complete(main())

    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    assert started.wait(30)
    daemon = box[0]
    assert daemon.http_port is not None
    genuine = {
        "confirm": tokens.make_confirm_token([KEY], list_id, "u1", ttl_seconds=3600),
        "open": tokens.make_open_token([KEY], 1),
        "click": tokens.make_click_token([KEY], 1, "https://shop.example/"),
    }
    try:
        yield Served(daemon.http_port, genuine)
    finally:
        loop.call_soon_threadsafe(daemon.request_stop)
        thread.join(30)
        loop.close()


def _mutated(token: str) -> st.SearchStrategy[str]:
    return (
        st.integers(0, len(token) - 1)
        .flatmap(
            lambda i: st.characters(codec="ascii").map(lambda c: token[:i] + c + token[i + 1 :])
        )
        .filter(lambda t: t != token)
    )


BODIES = [
    (b"", None),
    (b"token=abc", "application/x-www-form-urlencoded"),
    (b"token=%ff%fe", "application/x-www-form-urlencoded; charset=utf-8"),
    (b"token=x", "application/x-www-form-urlencoded; charset=no-such-charset"),
    (b'--b\r\nContent-Disposition: form-data; name="token"; filename="t.txt"\r\n\r\nx\r\n--b--\r\n',
     "multipart/form-data; boundary=b"),
    (b"--b\r\ngarbage", "multipart/form-data; boundary=b"),
    (b"\x00\xff" * 50, "application/octet-stream"),
]  # fmt: skip


@pytest.mark.slow
def test_campaign_routes_never_5xx_and_forged_tokens_change_nothing(
    served: Served, database_url: str
) -> None:
    @settings(max_examples=600, deadline=None)
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        route = data.draw(st.sampled_from(["confirm", "open", "click"]))
        token = data.draw(
            st.one_of(
                st.text(max_size=80),
                _mutated(served.genuine[route]),
                # a genuine token of another purpose
                st.sampled_from([t for r, t in served.genuine.items() if r != route]),
            )
        )
        method = data.draw(st.sampled_from(["GET", "POST", "HEAD", "PUT"]))
        body, content_type = data.draw(st.sampled_from(BODIES))
        headers = {"Content-Type": content_type} if content_type else {}
        if route == "confirm":
            path = "/confirm?token=" + quote(token)
        else:
            path = f"/t/{route[0]}/" + quote(token, safe="")
        status, location = served.request(method, path, body, headers)
        assert status < 500, (route, method, token, status)
        assert status != 302 and location is None, (route, token)

    one_request()
    assert asyncio.run(_state(database_url)) == ("pending", 0)
