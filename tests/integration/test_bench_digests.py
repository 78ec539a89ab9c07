"""``outboxd bench --digests`` measures the flush and the claim beside a batched backlog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import _env, outboxd


@pytest.mark.slow
def test_bench_digests_reports_both_ratios_in_one_run(
    postgres_admin_dsn: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    result = outboxd(
        env, "bench", "--messages", "600", "--skip", "floor", "--skip", "drain",
        "--skip", "latency", "--digests", "--digest-items", "3000", "--digest-groups", "300",
        "--batched", "5000", "--json", timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["digests"]
    flush, claim = report["flush"], report["claim"]
    assert (flush["items"], flush["digests"], flush["floor_items"]) == (3000, 300, 3000)
    assert flush["ratio"] > 0 and flush["rate"] > 0 and flush["floor_rate"] > 0
    assert (claim["rows"], claim["batched"]) == (600, 5000)
    assert claim["rate_alone"] > 0 and claim["rate_beside_batched"] > 0
    text = outboxd(
        env, "bench", "--messages", "300", "--skip", "floor", "--skip", "drain",
        "--skip", "latency", "--digests", "--digest-items", "500", "--digest-groups", "50",
        "--batched", "1000", timeout=240,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "digest flush, 500 items into 50" in text.stdout
    assert "beside 1,000 batched rows" in text.stdout
