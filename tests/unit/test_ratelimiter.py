"""RateLimiter: the token bucket as the daemon uses it, on virtual time.

The bucket's SQL runs against PostgreSQL in tests/integration/test_ratelimit.py; here the
in-memory bucket follows the same rules, so that waiting, spreading, giving back,
backing off and stopping can be checked to the millisecond without waiting for them.

Times are compared within 2 ms: after waiting for a token, rounding may leave the bucket
a hair short of it, and the limiter then waits its minimum of 1 ms once more.
"""

from __future__ import annotations

import asyncio

import pytest

from daemon.delivery.ratelimit import RateLimiter
from outbox import errors
from tests.unit import fakes

pytestmark = pytest.mark.virtual_time


async def limiter(rate: float, store: fakes.MemoryStore | None = None) -> RateLimiter:
    limiter = RateLimiter(store or fakes.MemoryStore(), "email", rate)  # type: ignore[arg-type]
    await limiter.start()
    return limiter


async def take(limiter: RateLimiter, permits: int) -> list[float]:
    """When each permit was granted."""
    times: list[float] = []
    while len(times) < permits:
        granted = await limiter.acquire(permits - len(times))
        times.extend([fakes.now()] * granted)
    return times


async def test_a_full_bucket_then_the_configured_rate() -> None:
    times = await take(await limiter(10), 30)
    assert times[:10] == [0.0] * 10  # a second's worth at once: burst = rate
    # then one every tenth of a second
    assert times[10:] == pytest.approx([0.1 * n for n in range(1, 21)], abs=2e-3)


async def test_one_take_grants_at_most_a_tenth_of_a_second_s_worth() -> None:
    fast = await limiter(200)
    assert fast.max_take == 20
    assert await fast.acquire(1000) == 20
    slow = await limiter(0.5)
    assert (slow.max_take, slow.burst) == (1, 1.0)
    assert await take(slow, 3) == pytest.approx([0.0, 2.0, 4.0], abs=2e-3)


async def test_permits_given_back_are_granted_again() -> None:
    rate = await limiter(10)
    assert await take(rate, 10) == [0.0] * 10
    await rate.release(3)  # the claim found fewer rows than permits
    assert await take(rate, 4) == pytest.approx([0.0, 0.0, 0.0, 0.1], abs=2e-3)


async def test_the_bucket_never_holds_more_than_a_second_s_worth() -> None:
    rate = await limiter(10)
    await asyncio.sleep(3600)
    await rate.release(50)
    started = fakes.now()
    times = await take(rate, 11)
    assert times[-1] - started == pytest.approx(0.1, abs=2e-3)


async def test_throttling_halves_the_rate_for_a_while_then_it_recovers() -> None:
    store = fakes.MemoryStore()
    rate = await limiter(10, store)
    await take(rate, 10)  # empty the bucket
    await rate.throttled()
    await rate.throttled()  # at most one halving a second, however many sends were throttled
    assert store.buckets["email"].factor == 0.5
    throttled_at = fakes.now()
    await take(rate, 1)  # a token at half speed takes 0.2 s, while the rate recovers 2% a second
    assert rate.effective_rate == pytest.approx(10 * (0.5 + 0.02 * (fakes.now() - throttled_at)))
    assert fakes.now() - throttled_at == pytest.approx(0.2, abs=2e-3)
    await asyncio.sleep(30)  # 2% a second: full speed again after 25 s
    await take(rate, 1)
    assert rate.effective_rate == 10.0


async def test_stop_ends_a_wait_for_permits_at_once() -> None:
    rate = await limiter(0.01)  # one permit every 100 s
    assert await rate.acquire(1) == 1
    waiting = asyncio.create_task(rate.acquire(1))
    await asyncio.sleep(5)
    assert not waiting.done()
    rate.stop()
    assert await waiting == 0
    assert fakes.now() == pytest.approx(5.0, abs=2e-3)


async def test_a_database_error_is_waited_out() -> None:
    store = fakes.MemoryStore()
    rate = await limiter(10, store)
    store.failing_takes = 2
    assert await rate.acquire(1) == 1
    assert fakes.now() == pytest.approx(0.3, abs=2e-3)  # 0.1 s, then 0.2 s: backing off


class _DatabaseDown(fakes.MemoryStore):
    asked = 0

    async def rate_take(self, *args: object) -> tuple[int, float, float]:
        self.asked += 1
        raise errors.DatabaseError("rate_take: ConnectionRefusedError")


async def test_a_database_that_is_down_is_asked_again_with_backoff_not_in_a_spin() -> None:
    store = _DatabaseDown()
    rate = RateLimiter(store, "email", 1000)  # type: ignore[arg-type]
    waiting = asyncio.create_task(rate.acquire(10))
    await asyncio.sleep(30)
    # Before: every millisecond (the wait for one token at 1,000/s): 30,000 times.
    assert store.asked <= 12  # 0.1, 0.2, 0.4 ... then every 5 s
    rate.stop()
    assert await waiting == 0
