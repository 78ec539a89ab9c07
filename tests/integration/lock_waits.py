"""Wait for a PostgreSQL backend to block on a lock: a signal to wait on, not a sleep."""

from __future__ import annotations

import asyncio

import asyncpg


async def wait_until_blocked(pool: asyncpg.Pool, pid: int) -> None:
    """Returns once backend ``pid`` waits for a lock; fails after about five seconds."""
    for _ in range(500):
        waiting = await pool.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")
