"""Memory: a huge but compressible context against a real ``outboxd run``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from tests.integration.test_faults_smtp import daemon_env, start_daemon


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_a_compressible_20_mb_context_is_refused_without_being_decoded(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # 20 MB of JSON that compresses below the 256 KiB limit on its stored size. Before:
    # the claim fetched and decoded it, and the process grew to ~850 MiB.
    templates = tmp_path / "templates" / "report"
    templates.mkdir(parents=True)
    (templates / "subject.j2").write_text("Your report")
    (templates / "text.j2").write_text("{{ blob }}")
    big = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'email', recipient => 'big@example.com', "
        "template => 'report', context => $1::jsonb)",
        json.dumps({"blob": "a" * 20_000_000}),
    )
    for i in range(5):
        await pool.execute(
            "SELECT outbox.enqueue(channel => 'email', recipient => $1, template => 'report',"
            ' context => \'{"blob": "small"}\'::jsonb)',
            f"u{i}@example.com",
        )
    env = daemon_env(
        database_url, tmp_path, 1, OUTBOXD_EMAIL__PROVIDER="file",
        OUTBOXD_TEMPLATES_DIR=str(tmp_path / "templates"),
    )  # fmt: skip
    proc = start_daemon(env, tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 60
        while await pool.fetchval(
            "SELECT count(*) FROM outbox.message WHERE status IN ('pending', 'sending')"
        ):
            assert proc.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.2)
        peak = _peak_rss_mib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"peak RSS of the daemon: {peak:.0f} MiB")
    row = await pool.fetchrow("SELECT status, last_error FROM outbox.message WHERE id = $1", big)
    assert row["status"] == "failed"
    assert "bytes decoded, more than the 256 KiB limit" in row["last_error"]
    sent = await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status = 'sent'")
    assert sent == 5
    assert peak < 250, peak
