"""Clients that hold connections open: slow request heads, slow bodies, too many at once.
The public server closes them (or the longest-idle of them) and keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from daemon.http.file_limits import connection_budget
from daemon.main import Daemon
from tests.integration.daemon_helpers import make_settings, running

HEAD = b"GET /healthz HTTP/1.1\r\nHost: outboxd\r\n"


@contextlib.asynccontextmanager
async def serving(database_url: str, tmp_path: Path, **http: Any) -> AsyncIterator[Daemon]:
    settings = make_settings(
        database_url, tmp_path, http={"host": "127.0.0.1", "port": 0, "admin_port": 0, **http}
    )
    async with running(settings, database_url) as (daemon, _):
        yield daemon


async def _closed_by_server(reader: asyncio.StreamReader, within: float = 20.0) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def _get(port: int, path: str = "/healthz") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: outboxd\r\nConnection: close\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    return int(response.split(b" ", 2)[1]), response


async def test_a_request_head_that_never_ends_is_cut_off(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, header_timeout=0.5) as daemon:
        assert daemon.http_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        writer.write(HEAD)  # ... and never the blank line that ends it
        assert await _closed_by_server(reader)
        writer.close()
        # An idle connection that never sends anything goes the same way.
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        assert await _closed_by_server(reader)
        writer.close()
        assert (await _get(daemon.http_port))[0] == 200


async def test_a_body_that_never_arrives_is_a_408(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, body_timeout=0.5) as daemon:
        assert daemon.http_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        writer.write(b"POST /webhooks/sns HTTP/1.1\r\nHost: outboxd\r\n"
                     b"Content-Length: 5000\r\n\r\n{\"Type\"")  # fmt: skip
        response = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        assert response.startswith(b"HTTP/1.1 408 ")


async def test_at_the_cap_the_longest_idle_connection_makes_room(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        serving(database_url, tmp_path, max_connections=4, header_timeout=60) as daemon,
        contextlib.AsyncExitStack() as clients,
    ):
        assert daemon.http_port is not None

        async def connect() -> asyncio.StreamReader:
            reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
            clients.callback(writer.close)
            return reader

        idle = [await connect() for _ in range(4)]
        # A fifth client is served: the connection idle longest is closed for it.
        status, _ = await _get(daemon.http_port)
        assert status == 200
        assert await _closed_by_server(idle[0])
        # Three remain; of four more, the last three each push out the oldest.
        for _ in range(4):
            await connect()
        for reader in idle[1:]:
            assert await _closed_by_server(reader)


def test_http_keeps_to_a_quarter_of_the_file_limit() -> None:
    assert connection_budget(512, 1024) == 256
    assert connection_budget(512, 1 << 20) == 512
    assert connection_budget(512, 2) == 1


async def test_an_endless_request_head_is_refused_with_431(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path) as daemon:
        assert daemon.http_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
        try:
            writer.write(HEAD + b"X-Filler: " + b"x" * 40_000 + b"\r\n")
            response = await asyncio.wait_for(reader.read(), 20)
        finally:
            writer.close()
        assert response.startswith(b"HTTP/1.1 431 ")


async def test_a_request_head_that_is_not_ascii_is_a_400(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path) as daemon:
        assert daemon.http_port is not None
        for server in (daemon.http_port, daemon.admin_port):
            reader, writer = await asyncio.open_connection("127.0.0.1", server)
            try:
                # aiohttp's own answer to an unknown Expect was a 500 for these bytes.
                writer.write(HEAD + b"Expect: \x80\xff\r\nConnection: close\r\n\r\n")
                response = await asyncio.wait_for(reader.read(), 20)
            finally:
                writer.close()
            assert response.startswith(b"HTTP/1.1 400 "), response
