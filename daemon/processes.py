"""Several daemon processes from one ``outboxd run``.

One process tops out near a core (rendering, MIME, the AWS SDK are CPU-bound Python), so
``--processes N`` starts N-1 children beside the parent's own daemon. SKIP LOCKED keeps
them from sending a row twice. Only the parent serves HTTP and talks to systemd; its
/metrics covers every process. It forwards SIGTERM/SIGINT to the children and stops
everything if one dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping

logger = logging.getLogger(__name__)

CHILD_FLAG = "--child"

#: prometheus_client's switch to multiprocess mode (read when it is first imported).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_metrics() -> Iterator[str]:
    """Make every process of this run write its metrics where the parent's /metrics adds
    them up (prometheus_client's multiprocess mode), in a directory of this run's own.

    Must be entered before prometheus_client is imported, so that the parent's own
    metrics go there too; the children inherit the variable. A fresh directory each run:
    files left by an earlier run would be counted again.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("shared_metrics() must run before prometheus_client is imported")
    directory = tempfile.mkdtemp(prefix="outboxd-metrics-")
    previous = os.environ.get(METRICS_DIR_VARIABLE)
    os.environ[METRICS_DIR_VARIABLE] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(METRICS_DIR_VARIABLE, None)
        else:
            os.environ[METRICS_DIR_VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)


#: prctl(2) option: the signal the kernel sends us when our parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send SIGTERM (a graceful stop) when the parent process dies, even
    by SIGKILL; a parent already gone by now means stop at once. Linux only: elsewhere the
    parent's own shutdown is all there is."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logger.warning("cannot ask to die with the parent: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def child_environment(parent: Mapping[str, str]) -> dict[str, str]:
    env = dict(parent)
    env.pop("NOTIFY_SOCKET", None)  # only the main process may notify systemd
    env.pop("WATCHDOG_USEC", None)
    env["OUTBOXD_HTTP__ENABLED"] = "false"
    env["OUTBOXD_WORKER__PROCESSES"] = "1"
    env["OUTBOXD_MIGRATE_ON_START"] = "false"  # the parent migrated before starting us
    return env


class Children:
    """The child processes, started and stopped as a group."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[asyncio.subprocess.Process] = []
        self._terminated = False
        self._forgotten: set[int] = set()

    async def start(self) -> None:
        env = child_environment(os.environ)
        for _ in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "daemon.cli", "run", CHILD_FLAG,
                "--parent-pid", str(os.getpid()), env=env,
            )  # fmt: skip
            self.procs.append(proc)
        logger.info("started %d child processes", self.count, extra={"action": "start"})

    async def wait_any(self) -> int:
        """Wait until a child exits; its exit code."""
        waits = [asyncio.ensure_future(proc.wait()) for proc in self.procs]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        self._forget_dead()
        return next(iter(done)).result()

    def _forget_dead(self) -> None:
        """Drop the live gauges (in flight, heartbeat...) of children that have exited, so
        /metrics stops adding in what a dead process last wrote."""
        if METRICS_DIR_VARIABLE not in os.environ:
            return
        from prometheus_client import multiprocess

        for proc in self.procs:
            if proc.returncode is not None and proc.pid not in self._forgotten:
                multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                self._forgotten.add(proc.pid)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signum)
        if signum == signal.SIGTERM:
            self._terminated = True

    async def stop(self, grace: float) -> None:
        """Stop the children gracefully (once: a second SIGTERM means "exit at once")."""
        if not self._terminated:
            self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*(proc.wait() for proc in self.procs))
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await asyncio.gather(*(proc.wait() for proc in self.procs))
        self._forget_dead()
