"""``outboxd bench --inbox`` runs end to end on a small scale (the figures themselves are
measured by hand and reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from tests.integration.test_cli import _env, outboxd


@pytest.mark.slow
async def test_bench_inbox_measures_counts_and_streams(
    postgres_admin_dsn: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    result = outboxd(
        env, "bench", "--inbox", "--inbox-rows", "30000", "--inbox-clients", "60",
        "--inbox-rate", "40", "--inbox-seconds", "1", "--json", timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    count = report["count"]
    assert count["rows"] == 30000 and count["typical"]["unread"] > 0
    assert any("Index Only Scan using inbox_unread_idx" in line for line in count["explain"])
    streams = report["streams"]
    assert (streams["connected"], streams["connect_failures"]) == (60, 0)
    assert streams["listen_connections"] == 1  # one LISTEN, whatever the number of clients
    assert streams["steady"]["n"] == 40 and streams["steady"]["missing"] == 0
    assert streams["burst"]["n"] == 60 and streams["burst"]["missing"] == 0
    # The throwaway database is gone.
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'outboxd_bench_%'"
        )
    finally:
        await conn.close()
    assert left == 0
