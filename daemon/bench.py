"""``outboxd bench``: throughput and latency, measured against the raw SQL floor in one run.

Runs in a throwaway database created beside the configured one (or in the embedded
server) and drops it afterwards. Phases:

1. floor - claim + batched completion only (no rendering, no sending): the SQL limit;
2. drain - a backlog of N messages rendered from a real template (html + text) and sent
   through the chosen provider by the real daemon;
3. latency - messages enqueued one per transaction at a fixed offered rate while the
   daemon runs; enqueue-to-sent percentiles from the database's own clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from daemon import db
from daemon.main import Daemon
from daemon.settings import Settings
from outbox import NewMessage, enqueue_many, migrations
from outbox.models import Status
from outbox.store import Completion, Store

TEMPLATE = "welcome"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=50_000, help="backlog size (50,000)")
    parser.add_argument(
        "--provider", choices=("null", "smtp"), default="null", help="where mail goes (null)"
    )
    parser.add_argument("--concurrency", type=int, default=None, help="sends in flight")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per claim")
    parser.add_argument("--rate", type=float, default=200.0, help="offered rate, latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--extra-pending",
        type=int,
        default=0,
        help="also keep this many scheduled (not yet due) rows in the table",
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=("floor", "drain", "latency")
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    result = asyncio.run(_bench(settings, args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    return 0


def format_result(result: dict[str, Any]) -> str:
    lines = [f"outboxd bench: {result['messages']} messages, provider {result['provider']}"]
    if "floor" in result:
        floor = result["floor"]["rate"]
        lines.append(f"  raw SQL floor (claim + batched completion): {floor:>10,.0f} rows/s")
    if "drain" in result:
        d = result["drain"]
        lines.append(
            f"  end to end (render + send + complete):      {d['rate']:>10,.0f} messages/s"
        )
        if "floor" in result:
            ratio = d["rate"] / result["floor"]["rate"]
            lines.append(f"  ratio to the SQL floor:                     {ratio:>10.1%}")
    if "latency" in result:
        lat = result["latency"]
        lines.append(
            f"  enqueue->sent at {lat['offered_rate']:g}/s offered: p50 {lat['p50_ms']:.1f} ms, "
            f"p99 {lat['p99_ms']:.1f} ms ({lat['count']} messages)"
        )
    lines.append(f"  peak RSS: {result['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def throwaway_database(dsn: str) -> AsyncIterator[str]:
    name = f"outboxd_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(dsn, name)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """An aiosmtpd sink in its own process (so it does not share our CPU core)."""
    if shutil.which(sys.executable) is None:  # pragma: no cover - always present
        raise RuntimeError("no python")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None:
                detail = proc.stderr.read() if proc.stderr else b""
                raise RuntimeError(f"aiosmtpd did not start (is it installed?): {detail!r}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def _messages(count: int, *, offset: int = 0) -> Iterator[NewMessage]:
    for i in range(offset, offset + count):
        yield NewMessage(
            "email",
            f"user{i}@example.com",
            TEMPLATE,
            {"name": f"User {i}", "login_url": f"https://app.example.com/login?u={i}"},
            tags={"campaign": "bench"},
        )


async def _fill(dsn: str, count: int, *, not_before_future: bool = False) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        chunk = 20_000
        for start in range(0, count, chunk):
            batch = list(_messages(min(chunk, count - start), offset=start))
            await enqueue_many(conn, batch)
        if not_before_future:
            await conn.execute("UPDATE outbox.message SET not_before = now() + interval '1 day'")
        await conn.execute("ANALYZE outbox.message")
    finally:
        await conn.close()


async def _floor(dsn: str, count: int) -> dict[str, float]:
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    try:
        store = Store(pool)
        done = 0
        started = time.perf_counter()
        while True:
            claimed = await store.claim("email", 500, "bench-floor", 60)
            if not claimed:
                break
            await store.complete_many(
                [Completion(m.id, m.attempts, Status.SENT, provider="null") for m in claimed],
                "bench-floor",
            )
            done += len(claimed)
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return {"rows": done, "seconds": round(elapsed, 3), "rate": done / elapsed}


def _daemon_settings(settings: Settings, args: argparse.Namespace, port: int | None) -> Settings:
    worker = settings.worker.model_copy(
        update={
            k: v
            for k, v in (("concurrency", args.concurrency), ("batch_size", args.batch_size))
            if v is not None
        }
    )
    email = settings.email.model_copy(update={"provider": args.provider})
    update: dict[str, Any] = {
        "worker": worker,
        "email": email,
        "http": settings.http.model_copy(update={"enabled": False}),
    }
    if port is not None:
        update["smtp"] = settings.smtp.model_copy(
            update={
                "host": "127.0.0.1",
                "port": port,
                "tls": "none",
                "username": None,
                "password": None,
            }
        )
    return settings.model_copy(update=update)


async def _drain(dsn: str, settings: Settings, count: int) -> dict[str, float]:
    daemon = Daemon(settings, dsn=dsn, worker_id="bench")
    sent = 0

    def count_sent(batch: Sequence[Completion]) -> None:
        nonlocal sent
        sent += sum(1 for c in batch if c.status is Status.SENT)

    daemon.completion_listeners.append(count_sent)
    progress = asyncio.create_task(_progress(lambda: sent, count))
    task = asyncio.create_task(daemon.run(until_empty=True))
    await daemon.started.wait()
    started = time.perf_counter()
    await task
    elapsed = time.perf_counter() - started
    progress.cancel()
    return {"sent": sent, "seconds": round(elapsed, 3), "rate": sent / elapsed}


async def _progress(current: Any, total: int) -> None:
    if not sys.stderr.isatty():
        return
    while True:
        done = current()
        filled = int(40 * done / max(total, 1))
        print(f"\r  [{'#' * filled}{'.' * (40 - filled)}] {done}/{total}", end="", file=sys.stderr)
        await asyncio.sleep(0.25)


async def _latency(dsn: str, settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    daemon = Daemon(settings, dsn=dsn, worker_id="bench-latency")
    task = asyncio.create_task(daemon.run())
    await daemon.started.wait()
    await asyncio.sleep(0.5)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM outbox.message WHERE status <> 'pending'")
        total = int(rate * seconds)
        started = time.perf_counter()
        for i, message in enumerate(_messages(total)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.fetchval(
                "SELECT outbox.enqueue(channel => $1, recipient => $2, template => $3, "
                "context => $4::jsonb)",
                message.channel,
                message.recipient,
                message.template,
                json.dumps(message.context),
            )
        for _ in range(200):
            left = await conn.fetchval(
                "SELECT count(*) FROM outbox.message "
                "WHERE status IN ('pending', 'sending') AND not_before <= now()"
            )
            if not left:
                break
            await asyncio.sleep(0.05)
        row = await conn.fetchrow(
            """SELECT count(*) AS n,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) AS p50,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY latency) AS p99
                 FROM (SELECT extract(epoch FROM sent_at - created_at) AS latency
                         FROM outbox.message WHERE status = 'sent') AS sent"""
        )
    finally:
        await conn.close()
        daemon.request_stop()
        await task
    return {
        "offered_rate": rate,
        "count": row["n"],
        "p50_ms": row["p50"] * 1000,
        "p99_ms": row["p99"] * 1000,
    }


async def _bench(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn, _ = db.resolve_dsn(settings)
    result: dict[str, Any] = {"messages": args.messages, "provider": args.provider}
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(smtp_sink()) if args.provider == "smtp" else None
        daemon_settings = _daemon_settings(settings, args, port)
        async with throwaway_database(admin_dsn) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                await migrations.migrate(conn)
            finally:
                await conn.close()
            if args.extra_pending:
                await _fill(dsn, args.extra_pending, not_before_future=True)
                result["extra_pending"] = args.extra_pending
            if "floor" not in args.skip:
                await _fill_due(dsn, args.messages)
                result["floor"] = await _floor(dsn, args.messages)
            if "drain" not in args.skip:
                await _fill_due(dsn, args.messages)
                result["drain"] = await _drain(dsn, daemon_settings, args.messages)
            if "latency" not in args.skip:
                result["latency"] = await _latency(
                    dsn, daemon_settings, args.rate, args.latency_seconds
                )
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


async def _fill_due(dsn: str, count: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM outbox.message WHERE not_before <= now()")
        await conn.execute("VACUUM ANALYZE outbox.message")
    finally:
        await conn.close()
    await _fill(dsn, count)
