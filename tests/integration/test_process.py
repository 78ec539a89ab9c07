"""``outboxd`` as operators run it: real processes, real signals, a real SMTP server."""

from __future__ import annotations

import asyncio
import email
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from daemon.bench.support import free_port
from tests.integration.daemon_helpers import welcome_backlog

_SENDING = "SELECT count(*) FROM outbox.message WHERE status = 'sending'"
_SENT = "SELECT count(*) FROM outbox.message WHERE status = 'sent'"


class SlowSink:
    """An aiosmtpd handler that accepts after ``delay`` seconds and records the recipients."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[str] = []
        #: Recipients whose message reached DATA (sends on the wire, accepted or not yet).
        self.started: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.started.extend(envelope.rcpt_tos)
        if self.delay:
            await asyncio.sleep(self.delay)
        parsed = email.message_from_bytes(envelope.content)
        assert parsed["Subject"]
        self.received.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[SlowSink, int]]:
    handler = SlowSink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _env(database_url: str, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(
        OUTBOXD_DATABASE_URL=database_url,
        OUTBOXD_DATA_DIR=str(tmp_path / "data"),
        OUTBOXD_EMAIL__PROVIDER="smtp",
        OUTBOXD_EMAIL__FROM="noreply@acme.example",
        OUTBOXD_SMTP__HOST="127.0.0.1",
        OUTBOXD_SMTP__PORT=str(port),
        OUTBOXD_SMTP__TIMEOUT="2",
        OUTBOXD_HTTP__ENABLED="false",
        OUTBOXD_WORKER__POLL_INTERVAL="0.2",
        OUTBOXD_WORKER__REAP_INTERVAL="0.2",
        OUTBOXD_WORKER__LEASE_SECONDS="5",
        OUTBOXD_SMS__PROVIDER="null",
        OUTBOXD_WORKER__RETRY_BASE_SECONDS="0.05",
        OUTBOXD_WORKER__RETRY_MAX_SECONDS="0.2",
        OUTBOXD_LOG_FORMAT="text",
    )
    env.update(extra)
    return env


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    log_path = Path(env["OUTBOXD_DATA_DIR"]).parent / f"daemon-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", *args], env=env, stdout=log, stderr=log
        )


async def _wait_until(
    pool: asyncpg.Pool, sql: str, expected: int, within: float, *procs: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + within
    value = None
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"outboxd exited early with {proc.returncode}"
        value = await pool.fetchval(sql)
        if value == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sql!r} was {value}, expected {expected}")


async def test_sigterm_finishes_in_flight_sends_and_exits_zero(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, smtp: tuple[SlowSink, int]
) -> None:
    sink, port = smtp
    sink.delay = 1.0
    await welcome_backlog(pool, 20)
    proc = _start(_env(database_url, tmp_path, port, OUTBOXD_WORKER__CONCURRENCY="4"))
    try:
        # Four sends in flight, four more rows claimed and waiting for a slot. A row
        # claimed is not yet a send on the wire (it may still be rendering): wait until the
        # sink holds four messages.
        await _wait_until(pool, _SENDING, 8, 20, proc)
        deadline = time.monotonic() + 20
        while len(sink.started) < 4:
            assert time.monotonic() < deadline, f"{len(sink.started)} sends reached the sink"
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
    rows = await pool.fetch("SELECT status, count(*) FROM outbox.message GROUP BY status")
    counts = {r["status"]: r["count"] for r in rows}
    # The four in-flight sends completed and were recorded; nothing is left leased.
    assert counts.get("sending", 0) == 0
    assert counts["sent"] == len(sink.received) >= 4
    assert counts["sent"] + counts["pending"] == 20
    # The rows that never got a slot went back without using an attempt.
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM outbox.message WHERE status = 'pending' AND attempts > 0"
        )
        == 0
    )


async def test_second_signal_exits_at_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, smtp: tuple[SlowSink, int]
) -> None:
    sink, port = smtp
    sink.delay = 5.0
    await welcome_backlog(pool, 4)
    # A send timeout longer than the sink's delay: the sends are surely still in flight
    # when the second signal arrives, however late this test sees them start.
    env = _env(
        database_url,
        tmp_path,
        port,
        OUTBOXD_SMTP__TIMEOUT="10",
        OUTBOXD_WORKER__LEASE_SECONDS="30",
    )
    proc = _start(env)
    try:
        await _wait_until(pool, _SENDING, 4, 20, proc)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 10)
        assert time.monotonic() - started < 2
        assert code != 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_killed_worker_rows_are_recovered_after_the_lease(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, smtp: tuple[SlowSink, int]
) -> None:
    sink, port = smtp
    sink.delay = 3.0
    await welcome_backlog(pool, 10)
    first = _start(_env(database_url, tmp_path, port, OUTBOXD_WORKER__CONCURRENCY="10"))
    try:
        await _wait_until(pool, _SENDING, 10, 20, first)
    finally:
        first.kill()  # SIGKILL: no chance to write anything
        first.wait()
    sink.delay = 0.0
    second = _start(_env(database_url, tmp_path, port))
    try:
        await _wait_until(pool, _SENT, 10, 30, second)
    finally:
        second.terminate()
        second.wait(10)
    rows = await pool.fetch("SELECT attempts, last_error FROM outbox.message")
    assert all(r["attempts"] == 2 for r in rows)
    # Every message arrived; only the killed worker's 10 in-flight sends may repeat.
    counts = Counter(sink.received)
    assert set(counts) == {f"user{i}@example.com" for i in range(10)}
    assert sum(counts.values()) - len(counts) <= 10


async def test_two_daemons_never_send_a_message_twice(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, smtp: tuple[SlowSink, int]
) -> None:
    sink, port = smtp
    await welcome_backlog(pool, 600)
    env = _env(database_url, tmp_path, port, OUTBOXD_WORKER__BATCH_SIZE="20")
    procs = [_start(env), _start(env)]
    try:
        await _wait_until(pool, _SENT, 600, 60, *procs)
    finally:
        for proc in procs:
            proc.terminate()
        codes = [proc.wait(15) for proc in procs]
    assert codes == [0, 0]
    assert len(sink.received) == 600
    assert len(set(sink.received)) == 600


async def test_processes_flag_runs_several_processes(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, smtp: tuple[SlowSink, int]
) -> None:
    sink, port = smtp
    await welcome_backlog(pool, 300)
    proc = _start(_env(database_url, tmp_path, port), "--processes", "2")
    try:
        await _wait_until(pool, _SENT, 300, 60, proc)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    assert sorted(sink.received) == sorted(set(sink.received))
    assert len(sink.received) == 300


async def _sent_total(admin_port: int) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin_port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    assert "outboxd_build_info{" in text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "outboxd_messages_sent_total"
    )


async def test_metrics_add_up_every_process(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, smtp: tuple[SlowSink, int]
) -> None:
    sink, port = smtp
    sink.delay = 0.05
    await welcome_backlog(pool, 300)
    http_port, admin_port, temp = free_port(), free_port(), tmp_path / "tmp"
    temp.mkdir()
    env = _env(
        database_url, tmp_path, port, OUTBOXD_WORKER__CONCURRENCY="4",
        OUTBOXD_HTTP__ENABLED="true", OUTBOXD_HTTP__PORT=str(http_port),
        OUTBOXD_HTTP__ADMIN_PORT=str(admin_port), TMPDIR=str(temp),
    )  # fmt: skip
    proc = _start(env, "--processes", "2")
    try:
        # Both processes send (each holds leases at once), then everything is sent.
        await _wait_until(pool, "SELECT count(DISTINCT locked_by) FROM outbox.message", 2, 30, proc)
        await _wait_until(pool, _SENT, 300, 60, proc)
        assert [p.name[:16] for p in temp.iterdir()] == ["outboxd-metrics-"]
        sent = 0.0
        for _ in range(100):  # the counters may trail the rows by a moment
            sent = await _sent_total(admin_port)
            if sent >= 300:
                break
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sent == 300 == len(sink.received)
    assert code == 0
    assert list(temp.iterdir()) == []  # the run's metrics files went with it


def _logs(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in directory.glob("daemon-*.log"))


async def test_sigterm_drains_every_process_gracefully(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, smtp: tuple[SlowSink, int]
) -> None:
    sink, port = smtp
    sink.delay = 0.5
    await welcome_backlog(pool, 100)
    env = _env(database_url, tmp_path, port, OUTBOXD_WORKER__CONCURRENCY="4")
    proc = _start(env, "--processes", "2")
    try:
        await _wait_until(pool, "SELECT count(DISTINCT locked_by) FROM outbox.message", 2, 30, proc)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    log = await asyncio.to_thread(_logs, tmp_path)
    assert b"second signal" not in log  # the parent must not signal its children twice
    # Both processes finished their sends and wrote the results: nothing is left leased.
    assert await pool.fetchval(_SENDING) == 0
    assert await pool.fetchval(_SENT) == len(sink.received) > 0


def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env["OUTBOXD_EMAIL__RATE"] = "fast"
    env["OUTBOXD_HTTP__ENABLED"] = "false"  # were it to start, never on a default port
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("outboxd: invalid setting OUTBOXD_EMAIL__RATE:")


def test_an_occupied_http_port_is_a_clear_error(database_url: str, tmp_path: Path) -> None:
    # Held as another outboxd held it before: with SO_REUSEPORT, which a second daemon
    # must not share (metrics would split, unsubscribe tokens of the other's keys fail).
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = _env(
            database_url, tmp_path, free_port(), OUTBOXD_EMAIL__PROVIDER="null",
            OUTBOXD_HTTP__ENABLED="true", OUTBOXD_HTTP__PORT=str(port),
            OUTBOXD_HTTP__ADMIN_PORT="0",  # another run may hold the default
        )  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "run"], env=env, capture_output=True, timeout=60
        )
    assert result.returncode == 2, result.stderr
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(
        f"outboxd: invalid setting OUTBOXD_HTTP__PORT: cannot listen on 127.0.0.1:{port}: "
    )
    assert "address already in use" in last
