"""``outboxd bench --retention``, ``--pgbouncer`` and ``--webhooks`` run end to end on
small numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration import pgbouncer
from tests.integration.test_cli import _env, outboxd


@pytest.mark.slow
def test_bench_retention_compares_archive_and_row_purge_with_a_fresh_database(
    postgres_admin_dsn: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    result = outboxd(
        env, "bench", "--retention", "--sends", "3000", "--claim-rows", "500", "--json",
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["archive_life"]["purged"]["partitions"]
    assert 0 < report["delete_life"]["purged"]["rows"] < 3000  # the older part
    assert report["archive_life"]["before_purge"]["archive_total"] > 0
    for side in ("fresh", "archive", "delete"):
        assert report[side]["claim_rate"] > 0
    # What the archive leaves in the hot table is what a fresh one holds: nothing live.
    assert report["archive"]["sizes"]["heap"] <= report["delete"]["sizes"]["heap"]


@pytest.mark.slow
@pytest.mark.skipif(not pgbouncer.available(), reason="PgBouncer is not installed")
def test_bench_pgbouncer_drains_both_ways(postgres_admin_dsn: str, tmp_path: Path) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    with pgbouncer.pgbouncer(postgres_admin_dsn, pool_size=4) as port:
        result = outboxd(
            env, "bench", "--pgbouncer", f"127.0.0.1:{port}", "--messages", "500",
            "--pool-rounds", "1", "--json", timeout=240,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ratio"] > 0 and len(report["rates"]["pgbouncer"]) == 1


@pytest.mark.slow
def test_bench_webhooks_posts_to_its_receiver(postgres_admin_dsn: str, tmp_path: Path) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    result = outboxd(
        env, "bench", "--webhooks", "--messages", "300", "--webhook-events", "100",
        "--webhook-rounds", "1", "--json", timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"trigger", "cost", "throughput"}
