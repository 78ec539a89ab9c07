"""RenderThreads: results and errors come back; a render over its budget is stopped, in a
worker thread or, for a template that has shown it is quick, on the event loop."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from daemon import metrics
from daemon.delivery.render_threads import RenderOverrun, RenderThreads
from daemon.delivery.render_trust import InlineTrust


def _forever(_: object) -> None:
    while True:
        pass


def _fail(_: object) -> None:
    raise ValueError("bad value")


async def test_results_errors_and_a_runaway_render() -> None:
    threads = RenderThreads(0.2, threads=2)
    try:
        assert await threads.run(str.upper, "ok") == "OK"
        with pytest.raises(ValueError, match="bad value"):
            await threads.run(_fail, None)
        with pytest.raises(RenderOverrun):
            await threads.run(_forever, None)
        # The thread that ran it takes the next job as if nothing had happened.
        assert [await threads.run(str.lower, "A") for _ in range(4)] == ["a"] * 4
    finally:
        threads.close()


async def test_a_runaway_render_in_a_chunk_fails_alone() -> None:
    # One thread: the four renders asked in one turn go to it as one chunk.
    threads = RenderThreads(0.2, threads=1)
    try:
        results = await asyncio.gather(
            threads.run(str.upper, "a"),
            threads.run(_forever, None),
            threads.run(str.upper, "b"),
            threads.run(_fail, None),
            return_exceptions=True,
        )
        assert results[0] == "A"
        assert isinstance(results[1], RenderOverrun)
        assert results[2] == "B"
        assert isinstance(results[3], ValueError)
    finally:
        threads.close()


async def test_many_results_wake_the_event_loop_once_or_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    wakeups = 0
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any) -> asyncio.Handle:
        nonlocal wakeups
        if threading.current_thread() is not threading.main_thread():
            wakeups += 1
        return call_soon_threadsafe(callback, *args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    first_started, gate, last_started = threading.Event(), threading.Event(), threading.Event()
    count = 64

    def render(i: int) -> int:
        if i == 0:
            first_started.set()
            gate.wait()
        if i == count - 1:
            last_started.set()
        return i * i

    threads = RenderThreads(30.0, threads=1)
    try:
        tasks = [asyncio.create_task(threads.run(render, i)) for i in range(count)]
        assert await asyncio.to_thread(first_started.wait, 30)
        wakeups = 0  # to_thread's own
        # The event loop stands still until every render but the last has finished: the
        # first finished one asks for a wake-up, the others join it.
        gate.set()
        assert last_started.wait(30)
        assert await asyncio.gather(*tasks) == [i * i for i in range(count)]
    finally:
        threads.close()
    # One wake-up for the results that were waiting, at most one more for the last.
    assert 1 <= wakeups <= 2


async def test_a_render_asked_for_after_close_is_cancelled_not_left_waiting() -> None:
    threads = RenderThreads(0.2, threads=1)
    threads.close()
    with pytest.raises(asyncio.CancelledError):
        await threads.run(str.upper, "late")


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """A render during which the garbage collector ran is not timed: a collection set off
    by any allocation of the test would leave a render uncounted, and the test flaky."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_automatic_gc")
async def test_a_quick_template_moves_to_the_event_loop_and_a_runaway_there_is_stopped() -> None:
    loop_thread = threading.get_ident()
    runs: list[tuple[str, bool]] = []

    def render(arg: str) -> str:
        runs.append((arg, threading.get_ident() == loop_thread))
        if arg == "stuck":
            _forever(arg)
        return arg.upper()

    threads = RenderThreads(0.2, threads=1, trust=InlineTrust(after=3, limit=0.05))
    try:
        assert [await threads.run(render, f"q{i}", "t") for i in range(5)] == [
            "Q0", "Q1", "Q2", "Q3", "Q4",
        ]  # fmt: skip
        # Three quick renders in a thread, then the event loop's own thread.
        assert [on_loop for _, on_loop in runs] == [False, False, False, True, True]
        # Another template has no record yet: a thread.
        assert await threads.run(render, "other", "u") == "OTHER"
        assert runs[-1] == ("other", False)
        # A trusted template that runs away on the loop is stopped within its budget, and
        # the loop goes on; its next renders go back to a thread.
        with pytest.raises(RenderOverrun):
            await threads.run(render, "stuck", "t")
        assert runs[-1] == ("stuck", True)
        assert await threads.run(render, "after", "t") == "AFTER"
        assert runs[-1] == ("after", False)
        # Nothing is left pending for the loop's thread: it goes on like any other code.
        await asyncio.sleep(0.3)
        assert sum(range(10**5)) == 4999950000
    finally:
        threads.close()


@pytest.mark.usefixtures("no_automatic_gc")
async def test_a_slow_render_in_a_thread_is_observed_when_settled() -> None:
    trust = InlineTrust(after=1, limit=0.01)
    threads = RenderThreads(5.0, threads=1, trust=trust)
    try:
        await threads.run(time.sleep, 0, "k")  # quick: trusted after one
        assert trust.inline("k")
        # CPU, not wall time, is what counts: a render waiting on something is not slow.
        assert await threads.run(time.sleep, 0.05, "w") is None
        assert trust.inline("w")
        await threads.run(_spin, 0.05, "s")
        assert not trust.inline("s")
    finally:
        threads.close()


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.usefixtures("no_automatic_gc")
async def test_a_trusted_template_slow_on_the_loop_is_named_in_the_log_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def renders(where: str) -> float:
        return metrics.REGISTRY.get_sample_value("outboxd_renders_total", {"where": where}) or 0

    before = {where: renders(where) for where in ("thread", "event_loop")}
    threads = RenderThreads(5.0, threads=1, trust=InlineTrust(after=2, limit=0.01))
    try:
        for seconds in (0, 0, 0, 0.05):
            await threads.run(_spin, seconds, "email template 'welcome'")
    finally:
        threads.close()
    assert renders("thread") - before["thread"] == 2
    assert renders("event_loop") - before["event_loop"] == 2
    (record,) = [r for r in caplog.records if r.name == "daemon.delivery.render_threads"]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        "email template 'welcome' took 5"  # 50 ms and a little more
    )
    assert record.getMessage().endswith("on the event loop: it renders in worker threads again")


@pytest.mark.usefixtures("no_automatic_gc")  # only the collections the test makes
async def test_a_render_the_garbage_collector_interrupted_is_not_counted_as_slow() -> None:
    # A full collection in a large process takes milliseconds of CPU in whichever thread
    # triggers it; counted to the template, it sent quick ones back to the threads.
    trust = InlineTrust(after=1, limit=0.001)
    threads = RenderThreads(5.0, threads=1, trust=trust)

    def collected(seconds: float) -> None:
        gc.collect()
        _spin(seconds)

    try:
        await threads.run(_spin, 0, "k")
        assert trust.inline("k")
        await threads.run(collected, 0.005, "k")  # on the loop, over the limit, with a GC
        assert trust.inline("k")
        await threads.run(_spin, 0.005, "k")  # over the limit, no GC: slow
        assert not trust.inline("k")
        await threads.run(collected, 0.005, "j")  # in a thread: not counted either
        await threads.run(_spin, 0, "j")
        assert trust.inline("j")
    finally:
        threads.close()


class _SlowToCollect:
    """In a reference cycle, so only the garbage collector frees it; its finalizer takes
    CPU time, as a large collection does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cycle = self

    def __del__(self) -> None:
        _spin(self.seconds)


def _collects_slowly(seconds: float) -> str:
    _SlowToCollect(seconds)
    gc.collect()
    return "rendered"


@pytest.mark.usefixtures("no_automatic_gc")
async def test_a_long_garbage_collection_is_not_counted_against_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The watchdog raised into a collection's finalizers: the exception was printed and
    # lost there, and the render went on (seen in CI on the event loop's thread).
    lost: list[BaseException | None] = []
    monkeypatch.setattr("sys.unraisablehook", lambda hook_args: lost.append(hook_args.exc_value))
    trust = InlineTrust(after=1, limit=1.0)
    threads = RenderThreads(0.2, threads=1, trust=trust)
    try:
        # In a worker thread, then on the event loop's thread (trusted after one).
        assert await threads.run(_collects_slowly, 0.5, "w") == "rendered"
        await threads.run(_spin, 0, "k")
        assert trust.inline("k")
        assert await threads.run(_collects_slowly, 0.5, "k") == "rendered"
        # A render that runs long outside a collection is still stopped.
        with pytest.raises(RenderOverrun):
            await threads.run(_forever, None, "k")
    finally:
        threads.close()
    assert lost == []
