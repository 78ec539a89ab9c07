"""Rendering off the event loop, each message within a time budget.

A template is code: a nested loop in one can run for minutes. Run on the event loop, it
would stop everything else in the process (health checks, result writes, SIGTERM), and
after a restart the same row would freeze the next process. So every message is
prepared in one of a few worker threads, and a watchdog thread raises
:class:`RenderOverrun` inside a render that outlives its budget
(``PyThreadState_SetAsyncExc``: the exception surfaces at the render's next bytecode, so
pure-Python template code always stops; the sandbox bounds the single operations that run
long in C: see ``daemon.delivery.render``). The event loop keeps its share of the
interpreter meanwhile (the GIL switches every 5 ms).

The hand-over goes both ways in batches: the renders asked for in one turn of the event
loop go to the threads as one item (in chunks of :data:`CHUNK`), and finished renders wait
in a deque for the one wake-up of the loop that settles all of them. Handed over one by
one, every message cost a queue put, a thread wake-up and a write to the loop's self-pipe
(each a chance for the GIL to change hands): 42-47 us of CPU per render, against 13 us
in batches (a 25 us job with 256 callers, same session). The budget is still timed per
message, so a runaway template fails only its own message.

Templates that have shown they are quick render on the event loop instead, still within
the budget (see :mod:`daemon.delivery.render_trust`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from daemon import metrics
from daemon.delivery.render_trust import InlineTrust

T = TypeVar("T")

logger = logging.getLogger(__name__)
_ON_LOOP = metrics.RENDERS.labels("event_loop")
_IN_THREAD = metrics.RENDERS.labels("thread")


class _Collections:
    """What the garbage collector has done so far, in any thread.

    A full collection in a large process takes milliseconds to a second, in whichever
    thread set it off, and runs finalizers and weak-reference callbacks of any object.
    So a render during which one ran is not timed for :class:`InlineTrust` (it would send
    a quick template back to the threads), the time collections take is not counted
    against a render's budget, and the watchdog raises nothing while one runs: an
    exception raised into a finalizer or callback is printed and lost there (the render
    would go on past its budget), and the code it cut short is not the template's.
    """

    __slots__ = ("runs", "seconds", "since")

    def __init__(self) -> None:
        #: Collections started.
        self.runs = 0
        #: Seconds spent in the collections that have ended.
        self.seconds = 0.0
        #: When the collection under way started; None: none is.
        self.since: float | None = None

    def observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.runs += 1
            self.since = time.monotonic()
        elif self.since is not None:
            self.seconds += time.monotonic() - self.since
            self.since = None


_collections = _Collections()
gc.callbacks.append(_collections.observe)

#: Threads rendering at once: one runaway template leaves the others working.
DEFAULT_THREADS = 3
#: Renders handed to one thread at a time: a runaway holds back at most this many others
#: (by at most the budget), while the other threads take the next chunks.
CHUNK = 32


class RenderOverrun(BaseException):
    """A render went over its time budget (a BaseException: template code and its
    error handling catch Exception, and must not turn this into an ordinary error)."""


def _raise_in(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )


class _Job(Generic[T]):
    __slots__ = (
        "arg", "cpu", "error", "fn", "future", "gc_seconds", "key", "overrun", "result", "side",
        "started",
    )  # fmt: skip

    def __init__(
        self,
        fn: Callable[[Any], T],
        arg: Any,
        future: asyncio.Future[T] | None = None,
        side: _LoopSide | None = None,
        key: Hashable | None = None,
    ) -> None:
        self.fn = fn
        self.arg = arg
        self.future = future
        self.side = side
        self.key = key
        self.started = 0.0
        #: The garbage collector's seconds so far when the render started.
        self.gc_seconds = 0.0
        #: CPU seconds the render took, in the thread that ran it; None: not timed (the
        #: garbage collector ran meanwhile).
        self.cpu: float | None = 0.0
        self.result: T | None = None
        self.error: BaseException | None = None
        self.overrun = False

    @property
    def cost(self) -> float | None:
        """The CPU the render counts as: all of it, for one the watchdog stopped; None
        for one that was not timed."""
        return float("inf") if self.overrun else self.cpu

    def settle(self) -> None:
        """On the event loop: hand the outcome to the waiting coroutine (if it still is)."""
        assert self.future is not None and self.side is not None
        if self.key is not None:
            _observe(self.side.trust, self.key, self.cost)
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)  # type: ignore[arg-type]


class _LoopSide:
    """The renders of one event loop: those asked for this turn, and those finished."""

    __slots__ = ("asked", "finished", "jobs", "loop", "settle_scheduled", "stopped", "trust")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        jobs: queue.SimpleQueue[list[_Job[Any]] | None],
        stopped: threading.Event,
        trust: InlineTrust,
    ) -> None:
        self.loop = loop
        self.jobs = jobs
        self.stopped = stopped
        self.trust = trust
        self.asked: list[_Job[Any]] = []
        self.finished: collections.deque[_Job[Any]] = collections.deque()
        self.settle_scheduled = False

    def ask(self, job: _Job[Any]) -> None:
        """On the loop: queue ``job``; the first of a turn schedules the hand-over."""
        self.asked.append(job)
        if len(self.asked) == 1:
            self.loop.call_soon(self.hand_over)

    def hand_over(self) -> None:
        """On the loop: the renders asked for this turn go to the threads, in chunks."""
        asked, self.asked = self.asked, []
        if self.stopped.is_set():  # the threads are gone: shutdown interrupts these
            for job in asked:
                job.future.cancel()  # type: ignore[union-attr]
            return
        for start in range(0, len(asked), CHUNK):
            self.jobs.put(asked[start : start + CHUNK])

    def done(self, job: _Job[Any]) -> None:
        """In a worker thread: ``job`` is finished; wake the loop unless a wake-up is due.

        The flag is cleared by :meth:`settle` before it empties the deque, so a job added
        after the flag was seen set is still settled by that wake-up.
        """
        self.finished.append(job)
        if not self.settle_scheduled:
            self.settle_scheduled = True
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self.loop.call_soon_threadsafe(self.settle)

    def settle(self) -> None:
        """On the loop: settle every finished job."""
        self.settle_scheduled = False
        finished = self.finished
        while finished:
            finished.popleft().settle()


class RenderThreads:
    """Runs ``fn(arg)`` in worker threads; a run over ``budget`` seconds raises RenderOverrun."""

    def __init__(
        self, budget: float, *, threads: int = DEFAULT_THREADS, trust: InlineTrust | None = None
    ) -> None:
        self.budget = budget
        #: Which keys render on the event loop (see :meth:`run`).
        self.trust = trust if trust is not None else InlineTrust()
        self._jobs: queue.SimpleQueue[list[_Job[Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[int, _Job[Any]] = {}
        self._stopped = threading.Event()
        self._sides: dict[asyncio.AbstractEventLoop, _LoopSide] = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"outboxd-render-{i}", daemon=True)
            for i in range(threads)
        ]
        self._threads.append(
            threading.Thread(target=self._watch, name="outboxd-render-watchdog", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[[Any], T], arg: Any, key: Hashable | None = None) -> T:
        """``fn(arg)`` in a worker thread; its result, or what it raised.

        With a ``key`` (the template), the CPU each run takes is recorded, and once
        :attr:`trust` says the key is quick, ``fn`` runs on the event loop's own thread,
        still stopped by :class:`RenderOverrun` past the budget.
        """
        if key is not None and not self._stopped.is_set() and self.trust.inline(key):
            _ON_LOOP.inc()
            return self._inline(fn, arg, key)
        _IN_THREAD.inc()
        loop = asyncio.get_running_loop()
        side = self._sides.get(loop)
        if side is None:
            # Loops that closed are forgotten (a test suite runs many in turn).
            self._sides = {k: v for k, v in self._sides.items() if not k.is_closed()}
            side = self._sides[loop] = _LoopSide(loop, self._jobs, self._stopped, self.trust)
        future: asyncio.Future[T] = loop.create_future()
        side.ask(_Job(fn, arg, future, side, key))
        return await future

    def _inline(self, fn: Callable[[Any], T], arg: Any, key: Hashable) -> T:
        job: _Job[T] = _Job(fn, arg)
        self._guarded(threading.get_ident(), job)
        _observe(self.trust, key, job.cost)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the threads once their current chunk is done (they are daemon threads: a
        render that never ends cannot hold the process)."""
        self._stopped.set()
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            chunk = self._jobs.get()
            if chunk is None:
                return
            for job in chunk:
                self._guarded(ident, job)
                job.side.done(job)  # type: ignore[union-attr]

    def _guarded(self, ident: int, job: _Job[Any]) -> None:
        """Run ``job`` in this thread under the watchdog; its outcome is left in ``job``."""
        try:
            self._run(ident, job)
        except BaseException as exc:  # an overrun that landed after the render ended
            with self._lock:
                self._running.pop(ident, None)
                _raise_in(ident, None)
            if job.error is None and job.result is None:
                job.error = exc

    def _run(self, ident: int, job: _Job[Any]) -> None:
        with self._lock:
            job.started = time.monotonic()
            job.gc_seconds = _collections.seconds
            self._running[ident] = job
        collections = _collections.runs
        cpu_started = time.thread_time()
        try:
            job.result = job.fn(job.arg)
        except BaseException as exc:
            job.error = exc
        finally:
            cpu = time.thread_time() - cpu_started
            job.cpu = cpu if _collections.runs == collections else None
            with self._lock:
                self._running.pop(ident, None)
                if job.overrun:
                    # An overrun raised too late must not hit the thread's next job (only
                    # the watchdog raises one, under this lock, after marking the job).
                    _raise_in(ident, None)

    def _watch(self) -> None:
        interval = min(max(self.budget / 10, 0.01), 0.1)
        while True:
            stopped = self._stopped.wait(interval)
            now = time.monotonic()
            with self._lock:
                collected = _collections.seconds
                for ident, job in self._running.items():
                    if _collections.since is not None:
                        break  # not into a collection's finalizers: at its end
                    spent = now - job.started - (collected - job.gc_seconds)
                    if not job.overrun and spent > self.budget:
                        job.overrun = True
                        _raise_in(ident, RenderOverrun)
                # Closed: still here until no render runs, so that a runaway one ends.
                if stopped and not self._running:
                    return


def _observe(trust: InlineTrust, key: Hashable, cost: float | None) -> None:
    if cost is not None and trust.observe(key, cost):
        # Said once per stall: the operator learns which template is slow, and for what.
        logger.warning(
            "%s took %s of CPU to render on the event loop: it renders in worker threads "
            "again",
            key, "its whole budget" if cost == float("inf") else f"{cost * 1000:.1f} ms",
            extra={"action": "render"},
        )  # fmt: skip
