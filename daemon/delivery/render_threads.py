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
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Threads rendering at once: one runaway template leaves the others working.
DEFAULT_THREADS = 3


class RenderOverrun(BaseException):
    """A render went over its time budget (a BaseException: template code and its
    error handling catch Exception, and must not turn this into an ordinary error)."""


def _raise_in(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )


class _Job(Generic[T]):
    __slots__ = ("arg", "error", "fn", "future", "loop", "overrun", "result", "started")

    def __init__(
        self, fn: Callable[[Any], T], arg: Any, future: asyncio.Future[T],
        loop: asyncio.AbstractEventLoop,
    ) -> None:  # fmt: skip
        self.fn = fn
        self.arg = arg
        self.future = future
        self.loop = loop
        self.started = 0.0
        self.result: T | None = None
        self.error: BaseException | None = None
        self.overrun = False

    def settle(self) -> None:
        """On the event loop: hand the outcome to the waiting coroutine (if it still is)."""
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)  # type: ignore[arg-type]


class RenderThreads:
    """Runs ``fn(arg)`` in worker threads; a run over ``budget`` seconds raises RenderOverrun."""

    def __init__(self, budget: float, *, threads: int = DEFAULT_THREADS) -> None:
        self.budget = budget
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[int, _Job[Any]] = {}
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"outboxd-render-{i}", daemon=True)
            for i in range(threads)
        ]
        self._threads.append(
            threading.Thread(target=self._watch, name="outboxd-render-watchdog", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[[Any], T], arg: Any) -> T:
        """``fn(arg)`` in a worker thread; its result, or what it raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, arg, future, loop))
        return await future

    def close(self) -> None:
        """Stop the threads once their current job is done (they are daemon threads: a
        render that never ends cannot hold the process)."""
        self._stopped.set()
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(ident, job)
            except BaseException as exc:  # an overrun that landed after the render ended
                with self._lock:
                    self._running.pop(ident, None)
                    _raise_in(ident, None)
                if job.error is None and job.result is None:
                    job.error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                job.loop.call_soon_threadsafe(job.settle)

    def _run(self, ident: int, job: _Job[Any]) -> None:
        with self._lock:
            job.started = time.monotonic()
            self._running[ident] = job
        try:
            job.result = job.fn(job.arg)
        except BaseException as exc:
            job.error = exc
        finally:
            with self._lock:
                self._running.pop(ident, None)
                # An overrun raised too late must not hit the thread's next job.
                _raise_in(ident, None)

    def _watch(self) -> None:
        interval = min(max(self.budget / 10, 0.01), 0.1)
        while True:
            stopped = self._stopped.wait(interval)
            now = time.monotonic()
            with self._lock:
                for ident, job in self._running.items():
                    if not job.overrun and now - job.started > self.budget:
                        job.overrun = True
                        _raise_in(ident, RenderOverrun)
                # Closed: still here until no render runs, so that a runaway one ends.
                if stopped and not self._running:
                    return
