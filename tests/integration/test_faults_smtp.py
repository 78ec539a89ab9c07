"""Faults of SMTP servers, against real ``outboxd run`` processes: a server that stalls
after taking a message, and a destination much slower than the others."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiosmtpd.controller import Controller

from tests.integration.aws_fake import free_port
from tests.integration.daemon_helpers import welcome_backlog
from tests.integration.fault_servers import DomainPacedServer, StallingServer


def daemon_env(database_url: str, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(
        OUTBOXD_DATABASE_URL=database_url, OUTBOXD_DATA_DIR=str(tmp_path / "data"),
        OUTBOXD_EMAIL__PROVIDER="smtp", OUTBOXD_SMTP__HOST="127.0.0.1",
        OUTBOXD_SMTP__PORT=str(port), OUTBOXD_SMS__PROVIDER="null",
        OUTBOXD_HTTP__ENABLED="false", OUTBOXD_WORKER__POLL_INTERVAL="0.3",
        OUTBOXD_WORKER__REAP_INTERVAL="0.3", OUTBOXD_WORKER__RETRY_BASE_SECONDS="0.1",
        OUTBOXD_WORKER__RETRY_MAX_SECONDS="0.5", OUTBOXD_LOG_LEVEL="WARNING",
    )  # fmt: skip
    env.update(extra)
    return env


def start_daemon(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run"], env=env, stdout=out, stderr=out
        )


def serve(handler: object) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


async def wait_for_status(pool: asyncpg.Pool, status: str, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        n = await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status = $1", status)
        if n >= count:
            return
        assert time.monotonic() < deadline, f"only {n} of {count} {status}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_stalling_server_never_makes_a_lease_run_out_or_a_duplicate(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # Two daemons, a 2 s send timeout and the shortest lease the settings allow (more
    # than 2 x 2 s + the 0.5 s render budget). The server takes each of the first 30
    # messages and stalls 8 s before answering. Before: rows queued behind the stalled
    # sends outlived their lease, the other daemon reclaimed them, both sent them, and
    # the server's answer, once it stopped stalling, made a second delivery.
    total, stalls, timeout = 60, 30, 2.0
    server = StallingServer(stall=8, stalls=stalls)
    ports = serve(server)
    port = next(ports)
    await welcome_backlog(pool, total)
    env = daemon_env(
        database_url, tmp_path, port, OUTBOXD_SMTP__TIMEOUT=str(timeout),
        OUTBOXD_WORKER__LEASE_SECONDS="5", OUTBOXD_SMTP__POOL_SIZE="4",
    )  # fmt: skip
    logs = [tmp_path / f"daemon{i}.log" for i in range(2)]
    daemons = [start_daemon(env, log) for log in logs]
    try:
        await wait_for_status(pool, "sent", total, within=90)
    finally:
        for proc in daemons:
            proc.terminate()
        codes = [proc.wait(30) for proc in daemons]
        next(ports, None)
    assert codes == [0, 0]
    assert len(server.waited) == stalls
    assert max(server.waited) < timeout + 0.5, sorted(server.waited)[-5:]  # cut at the timeout
    assert len(server.delivered) == total
    assert set(server.delivered.values()) == {1}, server.delivered.most_common(3)
    text = "".join(log.read_text() for log in logs)
    assert "lease expired" not in text and "lease had expired" not in text


async def _enqueue(pool: asyncpg.Pool, recipients: list[str]) -> None:
    await pool.execute(
        "INSERT INTO outbox.message (channel, recipient, template, context) "
        'SELECT \'email\', r, \'welcome\', \'{"name": "U", "login_url": "https://x.example"}\' '
        "FROM unnest($1::text[]) AS r",
        recipients,
    )


def _fast_rate(server: DomainPacedServer, since: float, count: int) -> float:
    """Fast messages per second from ``since`` until the ``count``-th was delivered (or
    the last one so far)."""
    times = sorted(t for rcpt, t in server.delivered if t >= since and "@slow." not in rcpt)
    times = times[:count]
    return len(times) / max(times[-1] - since, 1e-3) if times else 0.0


@pytest.mark.slow
async def test_a_slow_destination_leaves_the_others_most_of_their_rate(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # One relay that takes 5 s per message for slow.example and no time for the rest.
    # Measured in one run: the fast domains' rate alone, then with a tenth of the traffic
    # going to the slow one. Before: one pool of 8 connections shared by every domain,
    # and the fast rate fell to about a tenth of its own (measured: 190/s alone, 22/s).
    server = DomainPacedServer(slow_domain="slow.example", delay=5.0)
    ports = serve(server)
    port = next(ports)
    env = daemon_env(
        database_url, tmp_path, port, OUTBOXD_SMTP__TIMEOUT="10", OUTBOXD_LOG_LEVEL="ERROR",
        OUTBOXD_WORKER__POLL_INTERVAL="0.5",
    )  # fmt: skip
    proc = start_daemon(env, tmp_path / "daemon.log")
    fast = [f"user{i}@fast{i % 9}.example" for i in range(900)]
    try:
        # Warm up (connections, caches), then the fast domains alone.
        await _enqueue(pool, fast[:100])
        await wait_for_status(pool, "sent", 100, within=60)
        alone_since = time.monotonic()
        await _enqueue(pool, fast[100:500])
        await wait_for_status(pool, "sent", 500, within=60)
        alone = _fast_rate(server, alone_since, 400)
        # Then a tenth of the traffic to the slow domain, queued ahead of the fast mail.
        mixed_since = time.monotonic()
        await _enqueue(pool, [f"user{i}@slow.example" for i in range(45)] + fast[500:900])
        deadline = time.monotonic() + 30
        while _fast_rate(server, mixed_since, 400) * (time.monotonic() - mixed_since) < 400:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        mixed = _fast_rate(server, mixed_since, 400)
    finally:
        proc.terminate()
        code = proc.wait(30)
        next(ports, None)
    print(f"fast rate alone {alone:.0f}/s, beside a slow destination {mixed:.0f}/s "
          f"({mixed / alone:.0%})")  # fmt: skip
    assert code == 0
    assert mixed >= 0.5 * alone, (alone, mixed)


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


def http_env(env: dict[str, str]) -> tuple[dict[str, str], int]:
    """``env`` with the HTTP servers on; the admin port."""
    admin = free_port()
    env.update(
        OUTBOXD_HTTP__ENABLED="true", OUTBOXD_HTTP__PORT=str(free_port()),
        OUTBOXD_HTTP__ADMIN_PORT=str(admin),
    )  # fmt: skip
    return env, admin


async def wait_ready(admin: int, proc: subprocess.Popen[bytes], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        assert proc.poll() is None, "the daemon exited"
        with contextlib.suppress(aiohttp.ClientError):
            if (await _get(admin, "/healthz"))[0] == 200:
                return
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_a_tarpit_makes_the_daemon_not_ready(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # Every send is taken and never answered. Before: /readyz said 200 for minutes
    # while nothing was delivered.
    server = StallingServer(stall=600, stalls=1_000_000)
    ports = serve(server)
    port = next(ports)
    env, admin = http_env(
        daemon_env(
            database_url,
            tmp_path,
            port,
            OUTBOXD_SMTP__TIMEOUT="2",
            OUTBOXD_WORKER__LEASE_SECONDS="5",
        )
    )
    proc = start_daemon(env, tmp_path / "daemon.log")
    try:
        await wait_ready(admin, proc)
        assert (await _get(admin, "/readyz"))[0] == 200
        await welcome_backlog(pool, 50)
        deadline = time.monotonic() + 30
        while (answer := await _get(admin, "/readyz"))[0] == 200:
            assert time.monotonic() < deadline, "still ready in a tarpit"
            await asyncio.sleep(0.5)
        status, text = answer
        assert status == 503 and "no message delivered or failed" in text, text
        assert (await _get(admin, "/healthz"))[0] == 200  # alive: no reason to restart it
    finally:
        proc.terminate()
        code = proc.wait(30)
        next(ports, None)
    assert code == 0
