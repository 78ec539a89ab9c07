"""Digests with real daemon processes: two at once, and one killed with SIGKILL while its
flush is half done. Every group still becomes exactly one digest."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from tests.integration.test_digests import _assert_each_group_digested_once, _groups_of_items

GROUPS, PER_GROUP, BATCH = 600, 3, 50


def _start(database_url: str, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(
        OUTBOXD_DATABASE_URL=database_url, OUTBOXD_DATA_DIR=str(tmp_path / name),
        OUTBOXD_EMAIL__PROVIDER="null", OUTBOXD_SMS__PROVIDER="null",
        OUTBOXD_HTTP__ENABLED="false", OUTBOXD_WORKER__POLL_INTERVAL="0.3",
        OUTBOXD_PEOPLE__DIGEST_INTERVAL="0.3", OUTBOXD_PEOPLE__DIGEST_BATCH=str(BATCH),
        OUTBOXD_LOG_LEVEL="WARNING",
    )  # fmt: skip
    with (tmp_path / f"{name}.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run"], env=env, stdout=out, stderr=out
        )


async def _until(check: Callable[[], Awaitable[bool]], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_two_daemons_and_a_kill_9_in_the_middle_of_a_flush_fold_each_group_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await _groups_of_items(pool, persons=GROUPS, per_group=PER_GROUP)
    # Groups are listed oldest first, person p1 first, and flushed 50 to a transaction. The
    # third transaction of the first daemon stops at p130's digest: its guard key is held
    # by a transaction of ours that is still open.
    first = await pool.fetchval("SELECT min(id) FROM outbox.message WHERE recipient_key = 'p130'")
    blocker = await asyncpg.connect(database_url)
    hold = blocker.transaction()
    await hold.start()
    await blocker.execute(
        "INSERT INTO outbox.message (channel, recipient, template, status, idempotency_key)"
        " VALUES ('email', 'x@example.com', 't', 'cancelled', $1)",
        f"outboxd:digest:{first}",
    )
    a = _start(database_url, tmp_path, "a")
    b: subprocess.Popen[bytes] | None = None
    try:

        async def flush_blocked() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
            )

        await _until(flush_blocked, "the first daemon's flush waits for our transaction")
        digests = (
            "SELECT count(*) FROM outbox.message WHERE idempotency_key LIKE 'outboxd:digest:%'"
        )
        assert await pool.fetchval(digests) == 2 * BATCH  # two transactions committed

        # The second daemon folds everything but the groups in the buckets the first one
        # holds (the advisory locks of its open transaction).
        b = _start(database_url, tmp_path, "b")
        waiting = (
            "SELECT count(DISTINCT recipient_key) FROM outbox.message WHERE status = 'batched'"
        )
        outside_held_buckets = """
            SELECT count(DISTINCT m.recipient_key) FROM outbox.message m
             WHERE m.status = 'batched'
               AND abs(hashtext(concat_ws(chr(31), m.recipient_key, m.channel, m.digest_key))
                       % 64)
                   NOT IN (SELECT l.objid FROM pg_locks l
                             JOIN pg_stat_activity a ON a.pid = l.pid
                            WHERE l.locktype = 'advisory' AND a.wait_event_type = 'Lock'
                              AND l.classid = hashtext('outbox.digest')::oid)"""

        async def only_held_groups_left() -> bool:
            return await pool.fetchval(outside_held_buckets) == 0

        await _until(only_held_groups_left, "the second daemon folds the other groups")
        assert 0 < await pool.fetchval(waiting) < GROUPS - 2 * BATCH

        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        # Its server process now gets the lock, finds its client gone and rolls back.
        await hold.rollback()

        async def all_folded() -> bool:
            return await pool.fetchval(waiting) == 0

        await _until(all_folded, "the second daemon folds the groups the first one held")
    finally:
        await blocker.close()
        for process in (a, b):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    await _assert_each_group_digested_once(pool, GROUPS, PER_GROUP)
    assert b is not None and b.returncode == 0
