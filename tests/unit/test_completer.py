"""Completer: batched result writes that survive a failing database (virtual time)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from daemon.delivery.completer import Completer
from outbox import errors
from outbox.models import InboxItem, Status
from outbox.store import Completion
from tests.unit import fakes

pytestmark = pytest.mark.virtual_time

WORKER = "host:1:abc"


def claimed(store: fakes.MemoryStore, count: int) -> list[Completion]:
    """Rows claimed by WORKER, and the completions that would report them sent."""
    ids = store.add(count)
    for row_id in ids:
        row = store.rows[row_id]
        row.status, row.locked_by, row.attempts = Status.SENDING, WORKER, 1
    return [Completion(row_id, 1, Status.SENT, provider="mail") for row_id in ids]


@pytest.fixture
def store() -> fakes.MemoryStore:
    return fakes.MemoryStore()


@pytest.fixture
async def completer(store: fakes.MemoryStore) -> AsyncIterator[Completer]:
    completer = Completer(store, WORKER, max_batch=3)  # type: ignore[arg-type]
    task = asyncio.create_task(completer.run())
    yield completer
    completer.stop()
    await task


async def test_results_that_arrive_during_a_write_go_together_in_the_next(
    store: fakes.MemoryStore, completer: Completer
) -> None:
    written: list[list[int]] = []
    completer.listeners.append(lambda batch: written.append([c.message_id for c in batch]))
    results = claimed(store, 6)
    store.write_gate = asyncio.Event()  # the database is slow
    completer.add(results[0])
    await asyncio.sleep(0)  # the first write starts with what there is: one result
    for result in results[1:]:
        completer.add(result)
    assert completer.backlog == 6
    store.write_gate.set()
    await completer.wait_idle()
    assert written == [[1], [2, 3, 4], [5, 6]]  # then at most max_batch a write
    assert [len(batch) for batch in store.writes] == [1, 3, 2]
    assert store.with_status(Status.SENT) == [1, 2, 3, 4, 5, 6]
    assert completer.backlog == 0


async def test_an_idle_completer_writes_each_result_at_once(
    store: fakes.MemoryStore, completer: Completer
) -> None:
    written_at: list[float] = []
    completer.listeners.append(lambda batch: written_at.append(fakes.now()))
    first, second = claimed(store, 2)
    completer.add(first)
    await completer.wait_idle()
    await asyncio.sleep(1)  # longer than the flush interval: results come seldom
    added = fakes.now()
    completer.add(second)
    await completer.wait_idle()
    assert [[c.message_id for c in batch] for batch in store.writes] == [[1], [2]]
    assert written_at == [0.0, added]


@contextlib.asynccontextmanager
async def flushing(store: fakes.MemoryStore, **limits: float) -> AsyncIterator[Completer]:
    """A running completer with these batch limits, stopped at the end."""
    completer = Completer(store, WORKER, **limits)  # type: ignore[arg-type]
    task = asyncio.create_task(completer.run())
    yield completer
    completer.stop()
    await task


async def test_results_that_keep_coming_are_written_together_within_the_interval(
    store: fakes.MemoryStore,
) -> None:
    writes: list[tuple[float, list[Completion]]] = []
    async with flushing(store, min_batch=100, flush_interval=0.05) as completer:
        completer.listeners.append(lambda batch: writes.append((fakes.now(), list(batch))))
        results = claimed(store, 41)
        for result in results:  # a send finishes every 5 ms
            completer.add(result)
            await asyncio.sleep(0.005)
        await completer.wait_idle()
    # Before: a write for each result, since each arrived with no write in flight.
    assert [len(batch) for _, batch in writes] == [1, 10, 10, 10, 10]
    assert store.with_status(Status.SENT) == [r.message_id for r in results]
    for at, batch in writes:
        for completion in batch:  # stamped when added; none waited beyond the interval
            assert 0 <= at - completion.finished_at <= 0.05 + 1e-6


async def test_a_full_batch_is_written_without_waiting(store: fakes.MemoryStore) -> None:
    writes: list[float] = []
    async with flushing(store, min_batch=5, flush_interval=0.05) as completer:
        completer.listeners.append(lambda batch: writes.append(fakes.now()))
        first, *others = claimed(store, 6)
        completer.add(first)
        await completer.wait_idle()  # written at once: nothing came before
        for result in others:
            completer.add(result)
        await completer.wait_idle()
    assert writes == [0.0, 0.0]
    assert [len(batch) for batch in store.writes] == [1, 5]


async def test_stop_writes_the_waiting_results_at_once(store: fakes.MemoryStore) -> None:
    completer = Completer(store, WORKER, flush_interval=10.0)  # type: ignore[arg-type]
    task = asyncio.create_task(completer.run())
    first, *others = claimed(store, 4)
    completer.add(first)
    await completer.wait_idle()
    for result in others:
        completer.add(result)
    await asyncio.sleep(1)
    assert store.with_status(Status.SENT) == [first.message_id]  # waiting for more
    completer.stop()
    await task
    assert fakes.now() == 1.0  # not the ten seconds of the interval
    assert store.with_status(Status.SENT) == [1, 2, 3, 4]


async def test_an_in_app_delivery_is_written_at_once(store: fakes.MemoryStore) -> None:
    writes: list[float] = []
    async with flushing(store, flush_interval=10.0) as completer:
        completer.listeners.append(lambda batch: writes.append(fakes.now()))
        email, other_email, inapp = claimed(store, 3)
        completer.add(email)
        await completer.wait_idle()
        await asyncio.sleep(1)
        completer.add(other_email)  # waits for more ...
        await asyncio.sleep(1)
        item = InboxItem("u1", None, "transactional", 1, "Hi", "Hello", None, "{}")
        completer.add(inapp._replace(inbox=item))  # ... until someone may be looking
        await completer.wait_idle()
    assert writes == [0.0, 2.0]
    assert [len(batch) for batch in store.writes] == [1, 2]


async def test_a_failing_write_is_retried_with_backoff_and_keeps_its_results(
    store: fakes.MemoryStore, completer: Completer
) -> None:
    written: list[Sequence[Completion]] = []
    completer.listeners.append(written.append)
    results = claimed(store, 2)
    store.failing_writes = 3
    started = fakes.now()
    for result in results:
        completer.add(result)
    await completer.wait_idle()
    # 0.2 s, 0.4 s and 0.8 s of backoff, then the same results are written once.
    assert fakes.now() - started == pytest.approx(1.4, abs=1e-3)
    assert store.writes == [results] and written == [results]
    assert store.with_status(Status.SENT) == [1, 2]


async def test_a_long_outage_backs_off_up_to_five_seconds(
    store: fakes.MemoryStore, completer: Completer
) -> None:
    results = claimed(store, 1)
    store.failing_writes = 10
    started = fakes.now()
    completer.add(results[0])
    await completer.wait_idle()
    # 0.2 + 0.4 + 0.8 + 1.6 + 3.2, then 5 s each for the other five failures.
    assert fakes.now() - started == pytest.approx(6.2 + 25, abs=1e-3)
    assert store.writes == [results]


async def test_results_for_rows_reclaimed_by_another_worker_are_counted_as_lost(
    store: fakes.MemoryStore, completer: Completer
) -> None:
    results = claimed(store, 3)
    store.rows[2].locked_by = "elsewhere:2:def"  # its lease ran out and it was reclaimed
    store.rows[3].attempts = 2  # reclaimed by this very worker: a later attempt
    for result in results:
        completer.add(result)
    await completer.wait_idle()
    assert completer.lost == 2
    assert store.with_status(Status.SENT) == [1]
    assert store.with_status(Status.SENDING) == [2, 3]


async def test_stop_writes_what_is_pending_first(store: fakes.MemoryStore) -> None:
    completer = Completer(store, WORKER)  # type: ignore[arg-type]
    results = claimed(store, 5)
    for result in results:
        completer.add(result)
    completer.stop()
    await completer.run()  # returns once everything is written
    assert store.writes == [results]


async def test_a_write_in_progress_finishes_even_when_the_completer_is_cancelled(
    store: fakes.MemoryStore,
) -> None:
    completer = Completer(store, WORKER)  # type: ignore[arg-type]
    task = asyncio.create_task(completer.run())
    [result] = claimed(store, 1)
    store.write_gate = asyncio.Event()
    completer.add(result)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.write_gate.set()
    await store.wait_for(lambda: bool(store.writes))
    assert store.with_status(Status.SENT) == [1]


class _RefusingStore(fakes.MemoryStore):
    """Refuses any batch holding ``poison`` (as PostgreSQL refuses a NUL in text)."""

    poison = -1
    statements = 0

    async def complete_many(self, completions: Sequence[Completion], worker: str) -> int:
        self.statements += 1
        if any(c.message_id == self.poison for c in completions):
            raise errors.StatementRefused("complete: DataError: invalid byte sequence")
        return await super().complete_many(completions, worker)


async def test_a_refused_result_is_split_off_and_the_others_are_written() -> None:
    store = _RefusingStore()
    completer = Completer(store, WORKER, max_batch=8)  # type: ignore[arg-type]
    results = claimed(store, 8)
    store.poison = results[5].message_id
    for result in results:
        completer.add(result)
    task = asyncio.create_task(completer.run())
    await completer.wait_idle()
    completer.stop()
    await task
    sent = {i for i, row in store.rows.items() if row.status == Status.SENT}
    assert sent == {r.message_id for r in results} - {store.poison}
    assert store.statements <= 8  # halves, not one retry after another for ever


async def test_a_failing_listener_does_not_stop_the_writes(
    store: fakes.MemoryStore, completer: Completer
) -> None:
    def broken(batch: Sequence[Completion]) -> None:
        raise RuntimeError("a bug in a listener")

    completer.listeners.append(broken)
    first, second = claimed(store, 2)
    async with asyncio.timeout(5):
        completer.add(first)
        await completer.wait_idle()
        completer.add(second)  # before: the completer had died with the listener's error
        await completer.wait_idle()
    assert {row.status for row in store.rows.values()} == {Status.SENT}
