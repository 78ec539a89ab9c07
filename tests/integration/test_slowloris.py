"""Slowloris: 2,000 connections trickling request heads at a daemon whose open-files limit
is the common 1,024 (soft and hard, so it cannot be raised). The public server holds at
most a quarter of the limit, pushes out the longest-waiting connection for each newcomer
and cuts off heads that never end: /healthz keeps answering, and every message is sent at
its first attempt while the attack goes on.

    OUTBOXD_SLOWLORIS_CONNECTIONS=2000 .venv/bin/pytest -q -s tests/integration/test_slowloris.py
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.bench.support import free_port
from tests.integration.daemon_helpers import welcome_backlog
from tests.integration.smtp_sink import Sink, smtp_sink

__all__ = ["smtp_sink"]

CONNECTIONS = int(os.environ.get("OUTBOXD_SLOWLORIS_CONNECTIONS", "2000"))
DAEMON_FILES = 1024
MESSAGES = 200
PROBES = 40


async def _healthz(port: int) -> float | None:
    """Seconds /healthz took to answer 200 on a fresh connection, None if it did not."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: outboxd\r\nConnection: close\r\n\r\n")
                response = await reader.read()
            finally:
                writer.close()
    except (TimeoutError, OSError):
        return None
    return time.monotonic() - started if response.startswith(b"HTTP/1.1 200 ") else None


async def _metrics(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: outboxd\r\nConnection: close\r\n\r\n")
    text = (await asyncio.wait_for(reader.read(), 10)).split(b"\r\n\r\n", 1)[1].decode()
    writer.close()
    return {
        "/".join([s.name.removeprefix("outboxd_http_"), *s.labels.values()]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("outboxd_http_connections") and not s.name.endswith("_created")
    }


#: ``outboxd run`` with its open-files limit (soft and hard) set to DAEMON_FILES first.
LIMITED_RUN = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({DAEMON_FILES}, {DAEMON_FILES})); "
    "sys.argv = ['outboxd', 'run']; runpy.run_module('daemon.cli', run_name='__main__')"
)


@pytest.fixture
def daemon(
    database_url: str, tmp_path: Path, smtp_sink: Sink
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    public, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(
        OUTBOXD_DATABASE_URL=database_url, OUTBOXD_DATA_DIR=str(tmp_path / "data"),
        OUTBOXD_EMAIL__PROVIDER="smtp", OUTBOXD_EMAIL__FROM="noreply@acme.example",
        OUTBOXD_SMTP__HOST="127.0.0.1", OUTBOXD_SMTP__PORT=str(smtp_sink.port),
        OUTBOXD_SMTP__POOL_SIZE="2", OUTBOXD_SMS__PROVIDER="null",
        OUTBOXD_HTTP__PORT=str(public), OUTBOXD_HTTP__ADMIN_PORT=str(admin),
        OUTBOXD_WORKER__POLL_INTERVAL="0.2", OUTBOXD_LOG_FORMAT="text",
    )  # fmt: skip
    with (tmp_path / "daemon.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", LIMITED_RUN], env=env, stdout=log, stderr=log
        )
    try:
        yield proc, public, admin
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
async def test_slowloris_leaves_health_answering_and_sends_flowing(
    pool: asyncpg.Pool, smtp_sink: Sink, daemon: tuple[subprocess.Popen[bytes], int, int]
) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < CONNECTIONS + 100:
        pytest.skip(f"the attacking process needs {CONNECTIONS + 100} open files")
    proc, public, admin = daemon
    deadline = time.monotonic() + 60
    while await _healthz(admin) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "outboxd did not start"
        await asyncio.sleep(0.2)

    limits = await asyncio.to_thread(Path(f"/proc/{proc.pid}/limits").read_text)
    assert re.search(rf"Max open files\s+{DAEMON_FILES}\s+{DAEMON_FILES}\s", limits), limits
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.slowloris", str(public), str(CONNECTIONS), "120",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert attacker.stdout is not None
    latencies: list[float | None] = []
    admin_latencies: list[float | None] = []
    most_files = sent = 0
    try:
        assert await asyncio.wait_for(attacker.stdout.readline(), 60) == b"connected\n"
        await welcome_backlog(pool, MESSAGES)
        enqueued = time.monotonic()
        while time.monotonic() - enqueued < 60:
            latencies.append(await _healthz(public))
            admin_latencies.append(await _healthz(admin))
            most_files = max(most_files, len(os.listdir(f"/proc/{proc.pid}/fd")))
            sent = await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status = 'sent'")
            if sent == MESSAGES and len(latencies) >= PROBES:
                break
            await asyncio.sleep(0.25)
        sent_within = time.monotonic() - enqueued
        during = await _metrics(admin)
    finally:
        attacker.terminate()
        out, _ = await asyncio.wait_for(attacker.communicate(), 60)
    seen = json.loads(out)
    rows = await pool.fetch("SELECT status, attempts FROM outbox.message")
    answered = sorted(t for t in latencies if t is not None)
    print(
        f"\nslowloris: {CONNECTIONS} clients opened {seen['connects']} connections "
        f"({seen['failed_connects']} refused), {seen['closed_by_server']} closed by outboxd\n"
        f"outboxd: at most {most_files} open files of {DAEMON_FILES}; {during}\n"
        f"public /healthz: {len(answered)}/{len(latencies)} answered, median "
        f"{statistics.median(answered) * 1000:.0f} ms, max {answered[-1] * 1000:.0f} ms; admin "
        f"/healthz: {sum(t is not None for t in admin_latencies)}/{len(admin_latencies)}\n"
        f"{MESSAGES} messages: {sent} sent in {sent_within:.1f}s under attack, "
        f"{sum(r['attempts'] == 1 for r in rows)} at the first attempt"
    )
    assert None not in latencies, latencies
    assert None not in admin_latencies, admin_latencies
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 1)] * MESSAGES
    assert most_files < DAEMON_FILES
    assert during["connections/public"] <= DAEMON_FILES // 4
