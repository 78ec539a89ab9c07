"""Several daemons (separate processes, as on separate hosts) sharing one database: the
cluster-wide rate limit holds for all of them together (docs/SCALING.md)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from tests.integration.daemon_helpers import welcome_backlog
from tests.integration.test_process import _env, _start

DAEMONS = 3
RATE = 60.0  # messages/s for the whole cluster: well within what 3 processes send here
WINDOW = 10.0  # seconds measured, once every daemon is sending


def _sent_by(outgoing: Path) -> int:
    return sum(1 for _ in outgoing.glob("*.eml"))


@pytest.mark.slow
async def test_daemons_on_one_database_keep_the_cluster_rate(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await welcome_backlog(pool, int(RATE * (WINDOW + 30)))
    outgoing = [tmp_path / f"host{i}" for i in range(DAEMONS)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for directory in outgoing:
            env = _env(
                database_url,
                tmp_path,
                25,  # an SMTP port nobody uses: email goes to files
                OUTBOXD_EMAIL__PROVIDER="file",
                OUTBOXD_FILE__DIR=str(directory),
                OUTBOXD_EMAIL__RATE=str(RATE),
            )
            procs.append(_start(env))
        # The window opens once every daemon has sent something: all of them take tokens.
        deadline = time.monotonic() + 60
        while not all(d.is_dir() and _sent_by(d) for d in outgoing):
            assert time.monotonic() < deadline, [_sent_by(d) for d in outgoing if d.is_dir()]
            assert all(p.poll() is None for p in procs), [p.returncode for p in procs]
            await asyncio.sleep(0.1)
        # The bucket starts with a second's worth of tokens (the burst it allows by design);
        # once all of them have been taking for a while it only holds what the rate refills.
        await asyncio.sleep(3)
        opened, tokens = await pool.fetchrow(
            "SELECT clock_timestamp(), tokens FROM outbox.rate_bucket WHERE channel = 'email'"
        )
        assert tokens < RATE / 10, tokens
        before = [_sent_by(d) for d in outgoing]
        await asyncio.sleep(WINDOW)
        closed = await pool.fetchval("SELECT clock_timestamp()")
        after = [_sent_by(d) for d in outgoing]
        sent = await pool.fetchval(
            "SELECT count(*) FROM outbox.message WHERE sent_at >= $1 AND sent_at < $2",
            opened,
            closed,
        )
    finally:
        for proc in procs:
            proc.terminate()
        codes = [proc.wait(30) for proc in procs]
    assert codes == [0] * DAEMONS
    achieved = sent / (closed - opened).total_seconds()
    shares = [b - a for a, b in zip(before, after, strict=True)]
    print(f"{DAEMONS} daemons at {RATE:g}/s: {achieved:.1f}/s over the window, shares {shares}")
    assert abs(achieved / RATE - 1) <= 0.05, (achieved, shares)
    # Each of them sent a fair part of it (none starved, none took it all).
    assert all(share > 0.5 * sum(shares) / DAEMONS for share in shares), shares
