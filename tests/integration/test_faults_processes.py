"""Process supervision against real ``outboxd run`` processes: a database that cannot be
reached, a parent killed with SIGKILL, a shutdown while the database is down."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from tests.integration.aws_fake import free_port
from tests.integration.daemon_helpers import welcome_backlog
from tests.integration.db_proxy import database_proxy
from tests.integration.fault_servers import StallingServer
from tests.integration.test_faults_smtp import daemon_env, serve, start_daemon


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_an_unreachable_database_with_several_processes_is_a_clear_error(
    tmp_path: Path,
) -> None:
    # Before: the parent waited for ever for its own daemon to start, and ignored SIGTERM.
    env = daemon_env(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", tmp_path, 1)
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "daemon.cli", "run", "--processes", "2"],
        env=env, capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert b"cannot connect to PostgreSQL" in result.stderr
    assert time.monotonic() - started < 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
async def test_children_stop_when_their_parent_is_killed(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    controller = Controller(StallingServer(stall=0, stalls=0), hostname="127.0.0.1", port=port)
    controller.start()
    env = daemon_env(database_url, tmp_path, port, OUTBOXD_WORKER__PROCESSES="3")
    proc = start_daemon(env, tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 30
        while len(children := _children(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await welcome_backlog(pool, 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while alive := [pid for pid in children if _alive(pid)]:
            # Before: the children ran on, orphaned, for ever.
            assert time.monotonic() < deadline, f"children {alive} outlived their parent"
            await asyncio.sleep(0.2)
    finally:
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        controller.stop()


@pytest.mark.slow
async def test_shutdown_while_the_database_is_down_ends_within_the_grace_period(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # Sends stall on the server while the database goes away: their results cannot be
    # written. Before: SIGTERM waited for ever for the completer.
    server = StallingServer(stall=2, stalls=1_000)
    ports = serve(server)
    port = next(ports)
    await welcome_backlog(pool, 20)
    async with database_proxy(database_url) as proxy:
        env = daemon_env(
            proxy.url, tmp_path, port, OUTBOXD_SMTP__TIMEOUT="5",
            OUTBOXD_WORKER__GRACE_SECONDS="3", OUTBOXD_WORKER__LEASE_SECONDS="30",
        )  # fmt: skip
        proc = start_daemon(env, tmp_path / "daemon.log")
        try:
            deadline = time.monotonic() + 30
            while not server.waited and server.stalls == 1_000:
                assert proc.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.1)
            await proxy.cut()
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 60)
            took = time.monotonic() - stopped_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            next(ports, None)
    assert took < 3 + 10, took
    assert code is not None


@pytest.mark.slow
async def test_a_dead_child_s_live_gauges_leave_the_metrics(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # Before: what a killed child last wrote (sends in flight, its heartbeat) was still
    # added into /metrics while the parent drained.
    server = StallingServer(stall=30, stalls=1_000)
    ports = serve(server)
    port = next(ports)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = daemon_env(
        database_url, tmp_path, port, OUTBOXD_WORKER__PROCESSES="2", TMPDIR=str(temp),
        OUTBOXD_HTTP__ENABLED="true", OUTBOXD_HTTP__PORT=str(free_port()),
        OUTBOXD_HTTP__ADMIN_PORT=str(free_port()), OUTBOXD_SMTP__TIMEOUT="20",
        OUTBOXD_WORKER__LEASE_SECONDS="60", OUTBOXD_WORKER__GRACE_SECONDS="20",
    )  # fmt: skip
    await welcome_backlog(pool, 40)
    proc = start_daemon(env, tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 30
        while not (children := _children(proc.pid)) or not list(
            temp.glob(f"outboxd-metrics-*/gauge_live*_{children[0]}.db")
        ):
            assert proc.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        os.kill(children[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while list(temp.glob(f"outboxd-metrics-*/gauge_live*_{children[0]}.db")):
            assert time.monotonic() < deadline, "the dead child's gauges stayed"
            await asyncio.sleep(0.1)
        assert proc.poll() is None  # still draining its own stalled sends meanwhile
    finally:
        proc.kill()
        proc.wait()
        next(ports, None)
