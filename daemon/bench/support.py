"""What ``outboxd bench`` measures against: peer servers in processes of their own, a bare
SDK loop, and CPU accounting for this process, its children and the local PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: Where Postfix's sink is installed outside PATH (Debian 12 puts it in /usr/sbin, which
#: is not on an ordinary user's PATH; older packages kept it with Postfix's daemons).
POSTFIX_SMTP_SINK_DIRS = (Path("/usr/sbin"), Path("/usr/lib/postfix/sbin"))
SMTP_SINKS = ("minimal", "postfix", "aiosmtpd")


def postfix_smtp_sink() -> Path | None:
    """Postfix's ``smtp-sink`` (Debian package postfix): on PATH or where Debian puts it."""
    found = shutil.which("smtp-sink")
    if found:
        return Path(found)
    for folder in POSTFIX_SMTP_SINK_DIRS:
        candidate = folder / "smtp-sink"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def smtp_sink(kind: str = "minimal") -> Iterator[int]:
    """An SMTP sink in its own process (so it does not share our CPU core).

    ``minimal``: :mod:`daemon.bench.smtpsink`, which parses almost nothing; ``postfix``:
    Postfix's ``smtp-sink``, written in C; ``aiosmtpd``: a full Python SMTP server, which
    costs more per message than outboxd's own sending does.
    """
    port = free_port()
    if kind == "postfix":
        sink = postfix_smtp_sink()
        if sink is None:
            raise RuntimeError("Postfix's smtp-sink is not installed (Debian package postfix)")
        # It refuses to run as root without a user to become.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = [str(sink), *user, "-c", f"127.0.0.1:{port}", "1000"]
    elif kind == "aiosmtpd":
        command = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                   "-c", "aiosmtpd.handlers.Sink"]  # fmt: skip
    else:
        command = [sys.executable, "-m", "daemon.bench.smtpsink", str(port)]
    with _server(command, port) as ready:
        yield ready


@contextlib.contextmanager
def fake_ses() -> Iterator[int]:
    """The fast fake SES endpoint (daemon.bench.fakeses) in its own process."""
    port = free_port()
    with _server([sys.executable, "-m", "daemon.bench.fakeses", str(port)], port) as ready:
        yield ready


@contextlib.contextmanager
def _server(arguments: list[str], port: int) -> Iterator[int]:
    proc = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None:
                detail = proc.stderr.read() if proc.stderr else b""
                raise RuntimeError(f"{' '.join(arguments[:3])} did not start: {detail!r}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def fake_credentials() -> None:
    # The fake endpoint checks nothing, but botocore insists on some credentials.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")


async def bare_ses_loop(endpoint: str, count: int, concurrency: int) -> dict[str, float]:
    """The same SendEmail calls with nothing of ours around them: the aioboto3 ceiling."""
    from daemon.providers import aws
    from daemon.settings import AwsSettings

    request = {
        "FromEmailAddress": "bench@example.com",
        "Destination": {"ToAddresses": ["user@example.com"]},
        "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
    }
    left = count
    async with aws.client("sesv2", AwsSettings(endpoint_url=endpoint)) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await client.send_email(**request)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"sent": count, "seconds": round(elapsed, 3), "rate": count / elapsed}


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_times(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, CPU seconds of waited-for children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state, ppid, ... utime (12), stime (13), cutime, cstime.
    ppid, utime, stime, cutime, cstime = int(fields[1]), *map(int, fields[11:15])
    return ppid, (utime + stime) / _TICKS, (cutime + cstime) / _TICKS


def process_tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its live children, plus children it has reaped.

    For PostgreSQL's postmaster this is the whole server: live backends, and the backends
    that came and went (the postmaster waits for each).
    """
    own = _proc_times(root)
    if own is None:
        return 0.0
    total = own[1] + own[2]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != root:
            times = _proc_times(int(entry.name))
            if times is not None and times[0] == root:
                total += times[1]
    return total


def backend_cpu(pid: int) -> float:
    """CPU seconds of one process (a database backend on this host); 0 if unreadable."""
    times = _proc_times(pid)
    return 0.0 if times is None else times[1]


def parent_pid(pid: int) -> int | None:
    times = _proc_times(pid)
    return None if times is None else times[0]


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU seconds so far: this process, and the database server when it is on this host."""

    own: float
    database: float | None

    def per_item(self, earlier: CpuReading, items: int, side: str = "outboxd") -> dict[str, float]:
        """Microseconds per item since ``earlier``: ``side`` (the processes measured) and
        postgres."""
        spent = {side: self.own - earlier.own}
        if self.database is not None and earlier.database is not None:
            spent["postgres"] = self.database - earlier.database
        return {side: round(seconds * 1e6 / max(items, 1), 1) for side, seconds in spent.items()}


class CpuMeter:
    """Reads CPU time of a set of outboxd processes and of the PostgreSQL server.

    The server is found from one backend's pid (``SELECT pg_backend_pid()``); a server on
    another host, or a /proc we may not read, is simply left out.
    """

    def __init__(
        self, backend_pid: int | None, processes: int | None = None, side: str = "outboxd"
    ) -> None:
        self.postmaster = parent_pid(backend_pid) if backend_pid else None
        #: The root of the processes measured; None: this process alone.
        self.processes = processes
        #: What those processes are, as named in the report.
        self.side = side

    @classmethod
    async def of(
        cls, conn: asyncpg.Connection, processes: int | None = None, side: str = "outboxd"
    ) -> CpuMeter:
        """A meter for ``processes`` and for the server ``conn`` is connected to."""
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        return cls(backend, processes, side)  # while the backend is alive

    def read(self) -> CpuReading:
        if self.processes is None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            own = usage.ru_utime + usage.ru_stime
        else:
            own = process_tree_cpu(self.processes)
        database = process_tree_cpu(self.postmaster) if self.postmaster else None
        return CpuReading(own, database)


async def stop(proc: asyncio.subprocess.Process, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``grace`` seconds."""
    if proc.returncode is None:
        proc.terminate()
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def watch_drain(
    conn: asyncpg.Connection,
    total: int,
    proc: asyncio.subprocess.Process,
    meter: CpuMeter,
    remaining_sql: str,
    progress: Callable[[int], None] = lambda done: None,
) -> dict[str, Any]:
    """Wait until ``proc`` has sent every row; the rate comes from the rows' sent_at.

    Counting what is left once a second costs the database little. CPU is read from the
    first poll that sees progress (start-up excluded) to the last; a run so short that the
    first poll already sees it done is measured from the start, start-up included.
    """
    left, start, started = total, (meter.read(), 0), False
    while left:
        await asyncio.sleep(1.0)
        left = await conn.fetchval(remaining_sql)
        if proc.returncode is not None:
            raise RuntimeError(f"{proc} exited with {proc.returncode}")
        progress(total - left)
        if not started and left < total:
            started = True
            if left:
                start = (meter.read(), total - left)
    cpu = meter.read().per_item(start[0], total - start[1], meter.side)
    row = await conn.fetchrow(
        "SELECT count(*) AS sent, extract(epoch FROM max(sent_at) - min(sent_at)) AS seconds "
        "FROM outbox.message WHERE status = 'sent'"
    )
    assert row is not None
    seconds = float(row["seconds"] or 0.0)
    return {
        "sent": row["sent"],
        "seconds": round(seconds, 3),
        "rate": row["sent"] / seconds if seconds else 0.0,
        "cpu_us": cpu,
    }


class Progress:
    """A progress bar on stderr, when it is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.shown = sys.stderr.isatty()

    def show(self, done: int) -> None:
        if self.shown:
            filled = int(40 * done / max(self.total, 1))
            bar = "#" * filled + "." * (40 - filled)
            print(f"\r  [{bar}] {done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.shown:
            print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)

    async def follow(self, current: Callable[[], int]) -> None:
        """Redraw from ``current()`` four times a second until cancelled."""
        while True:
            self.show(current())
            await asyncio.sleep(0.25)
