"""The flush loop's timing, with an in-memory store: when it looks again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest

from daemon.people.digests import DigestFlusher, DigestTemplates
from daemon.people.store import DigestGroup, FlushCounts, PeopleStore
from outbox import errors

GROUP = DigestGroup("u1", "email", "post:7")
GROUP2 = DigestGroup("u2", "email", "post:7")


class FakeStore:
    """Answers the loop's three questions from scripted values."""

    def __init__(self, due: list[list[DigestGroup]], next_due: list[float | None]) -> None:
        self.due, self.next_due = due, next_due
        self.listings = 0
        self.listed = asyncio.Event()
        self.fail: set[DigestGroup] = set()
        self.cause: BaseException = asyncpg.UniqueViolationError("duplicate key")
        self.flushes = 0

    async def due_digest_groups(self, limit: int, as_of: datetime | None = None) -> list[Any]:
        self.listings += 1
        self.listed.set()
        return self.due.pop(0) if self.due else []

    async def seconds_to_next_digest(self) -> float | None:
        return self.next_due.pop(0) if self.next_due else None

    async def flush_digests(
        self, groups: Sequence[DigestGroup], pairs: Any, as_of: datetime | None = None
    ) -> FlushCounts:
        self.flushes += 1
        if self.fail & set(groups):
            raise errors.DatabaseError("flush: boom") from self.cause
        return FlushCounts(len(groups), len(groups))


def flusher(store: FakeStore, tmp_path: Path) -> DigestFlusher:
    return DigestFlusher(
        cast(PeopleStore, store), DigestTemplates([tmp_path]), interval=3600, batch=10
    )


async def listings_after(store: FakeStore, loop: DigestFlusher, count: int) -> int:
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    try:
        async with asyncio.timeout(10):
            while store.listings < count:
                store.listed.clear()
                await store.listed.wait()
    except TimeoutError:
        pass
    finally:
        stopping.set()
        await task
    return store.listings


async def test_a_window_that_closed_during_the_pass_is_flushed_at_once(tmp_path: Path) -> None:
    # Nothing was due when the pass listed; by the time it asked, the window had closed.
    store = FakeStore(due=[[], [GROUP]], next_due=[-0.01, None])
    assert await listings_after(store, flusher(store, tmp_path), 2) == 2


async def test_the_loop_sleeps_until_the_next_window_closes(tmp_path: Path) -> None:
    store = FakeStore(due=[[], [GROUP]], next_due=[0.2, None])
    assert await listings_after(store, flusher(store, tmp_path), 2) == 2


async def test_a_failing_group_waits_for_the_interval_instead_of_a_retry_storm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore(due=[[GROUP, GROUP2]], next_due=[])
    store.fail = {GROUP}
    loop = flusher(store, tmp_path)
    assert await loop.flush_due() == FlushCounts(1, 1)
    assert loop.failed == 1
    assert "digest post:7 of u1 on email cannot be flushed: flush: boom" in caplog.text
    assert 3240 <= loop.wait_after_pass(-5.0) <= 3600
    assert await loop.flush_due() == FlushCounts() and loop.failed == 0
    assert loop.wait_after_pass(-5.0) == 0.5
    assert loop.wait_after_pass(2.0) == 2.05
    assert 3240 <= loop.wait_after_pass(None) <= 3600


async def test_a_database_that_is_down_is_not_split_into_single_groups(tmp_path: Path) -> None:
    store = FakeStore(due=[[GROUP, GROUP2]], next_due=[])
    store.fail = {GROUP}
    store.cause = ConnectionResetError("gone")
    with pytest.raises(errors.DatabaseError):
        await flusher(store, tmp_path).flush_due()
    assert store.flushes == 1
