"""The cluster-wide token bucket against real PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from daemon.delivery import ratelimit
from daemon.delivery.ratelimit import RateLimiter
from outbox.store import Store


async def _consume(limiter: RateLimiter, until: float, stamps: list[float]) -> None:
    while time.monotonic() < until:
        granted = await limiter.acquire(50)
        now = time.monotonic()
        stamps.extend([now] * granted)


@pytest.mark.slow
async def test_two_limiters_share_one_rate(database_url: str) -> None:
    rate = 40.0
    pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
    try:
        limiters = [RateLimiter(Store(p), "email", rate) for p in pools]
        for limiter in limiters:
            await limiter.start()
        # Empty the initial burst so the measurement sees the steady rate only.
        await pools[0].execute(
            "UPDATE outbox.rate_bucket SET tokens = 0, updated_at = clock_timestamp()"
        )
        stamps: list[float] = []
        started = time.monotonic()
        duration = 4.0
        await asyncio.gather(*(_consume(lim, started + duration, stamps) for lim in limiters))
        elapsed = time.monotonic() - started
    finally:
        for p in pools:
            await p.close()
    achieved = len(stamps) / elapsed
    assert 0.9 * rate <= achieved <= 1.05 * rate + 2, achieved
    # No one-second window holds more than one second's worth, give or take what is in
    # flight: the stamps are taken when a grant arrives, so a grant held up on its way back
    # (a busy machine) joins the next ones; each limiter has at most one take on the way.
    stamps.sort()
    worst = max(sum(1 for t in stamps[i:] if t < start + 1.0) for i, start in enumerate(stamps))
    assert worst <= rate + 2 * len(limiters) * limiters[0].max_take, worst


async def test_unused_tokens_are_given_back(pool: asyncpg.Pool) -> None:
    limiter = RateLimiter(Store(pool), "sms", 10.0)
    await limiter.start()
    granted = await limiter.acquire(100)
    assert granted == limiter.max_take == 1
    await limiter.release(granted)
    tokens = await pool.fetchval("SELECT tokens FROM outbox.rate_bucket WHERE channel = 'sms'")
    assert tokens == pytest.approx(10.0)


async def test_throttling_halves_the_rate_once_per_second_and_recovers(pool: asyncpg.Pool) -> None:
    limiter = RateLimiter(Store(pool), "email", 100.0)
    await limiter.start()
    await pool.execute("UPDATE outbox.rate_bucket SET factor_at = now() - interval '5 seconds'")
    await limiter.throttled()
    await limiter.throttled()  # within the same second: no second halving
    factor = await pool.fetchval("SELECT factor FROM outbox.rate_bucket")
    assert factor == pytest.approx(0.5, abs=0.01)
    await limiter.acquire(1)
    assert limiter.effective_rate == pytest.approx(50.0, abs=1.0)
    # Ten seconds later it has recovered by 10 x RECOVERY_PER_SECOND.
    await pool.execute(
        "UPDATE outbox.rate_bucket SET factor_at = factor_at - interval '10 seconds'"
    )
    await limiter.acquire(1)
    expected = 100.0 * (0.5 + 10 * ratelimit.RECOVERY_PER_SECOND)
    assert limiter.effective_rate == pytest.approx(expected, abs=1.0)


async def test_stop_releases_a_waiting_acquire(pool: asyncpg.Pool) -> None:
    limiter = RateLimiter(Store(pool), "email", 1.0)
    await limiter.start()
    assert await limiter.acquire(1) == 1
    waiting = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0.1)
    limiter.stop()
    assert await asyncio.wait_for(waiting, 2) == 0
