from __future__ import annotations

import asyncio

from daemon.delivery.deadlines import Deadlines


async def test_only_tasks_past_the_timeout_are_cancelled_and_reported() -> None:
    deadlines = Deadlines(0.2)
    quick = asyncio.create_task(asyncio.sleep(0.05))
    slow = asyncio.create_task(asyncio.sleep(5))
    deadlines.watch(quick)
    deadlines.watch(slow)
    await quick
    deadlines.forget(quick)
    await asyncio.gather(slow, return_exceptions=True)
    assert slow.cancelled()
    assert not deadlines.expired(quick)
    assert deadlines.expired(slow)
    assert not deadlines.expired(slow)  # asked once


async def test_a_later_task_gets_its_own_full_timeout() -> None:
    deadlines = Deadlines(0.3)
    first = asyncio.create_task(asyncio.sleep(5))
    deadlines.watch(first)
    await asyncio.sleep(0.2)
    second = asyncio.create_task(asyncio.sleep(0.25))  # ends 0.45 s in: within its own 0.3 s
    deadlines.watch(second)
    await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled() and deadlines.expired(first)
    assert not second.cancelled() and not deadlines.expired(second)
    deadlines.close()
