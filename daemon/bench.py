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
import os
import resource
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

from daemon import bench_support, db
from daemon.settings import Settings
from outbox import NewMessage, enqueue_many, errors, migrations
from outbox.models import Status
from outbox.store import Completion, Store

TEMPLATE = "welcome"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=50_000, help="backlog size (50,000)")
    parser.add_argument(
        "--provider",
        choices=("null", "smtp", "ses"),
        default="null",
        help="null; smtp to an aiosmtpd sink; ses to a fast local fake SES endpoint",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="drain with `outboxd run --processes N`"
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
    parser.add_argument(
        "--compare",
        choices=("celery",),
        help="also drain the same backlog with a Celery worker on Redis (needs --provider smtp)",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/15", help="broker for --compare celery"
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

    def line(label: str, value: str, phase: dict[str, Any] | None = None) -> None:
        cpu = (phase or {}).get("cpu_us")
        spent = ", ".join(f"{side} {us:,.0f}" for side, us in cpu.items()) if cpu else ""
        lines.append(f"  {label:<44}{value:>20}" + (f"   CPU us each: {spent}" if spent else ""))

    floor, drain = result.get("floor"), result.get("drain")
    if floor:
        line("raw SQL floor (claim + batched completion)", f"{floor['rate']:,.0f} rows/s", floor)
    if drain:
        processes = drain.get("processes", 1)
        label = f"end to end, {processes} process{'es' if processes > 1 else ''}"
        line(label, f"{drain['rate']:,.0f} messages/s", drain)
        if floor:
            line("ratio to the SQL floor", f"{drain['rate'] / floor['rate']:.1%}")
    if "bare_aioboto3" in result:
        bare = result["bare_aioboto3"]["rate"]
        line("bare aioboto3 send_email loop", f"{bare:,.0f} calls/s")
        if drain:
            line("outboxd / bare aioboto3", f"{drain['rate'] / bare:.1%}")
    if "celery" in result:
        celery = result["celery"]
        line("Celery + Redis worker, same backlog", f"{celery['rate']:,.0f} messages/s", celery)
        if drain:
            line("outboxd / Celery + Redis", f"{drain['rate'] / celery['rate']:.1f}x")
    if "latency" in result:
        lat = result["latency"]
        line(
            f"enqueue->sent at {lat['offered_rate']:g}/s offered",
            f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms",
        )
    line("peak RSS of the bench process", f"{result['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def throwaway_database(dsn: str) -> contextlib.AbstractAsyncContextManager[str]:
    return db.scratch_database(dsn, f"outboxd_bench_{secrets.token_hex(4)}")


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


async def _cpu_meter(dsn: str) -> bench_support.CpuMeter:
    """A CPU meter for this process (hosting the daemon) and for the server behind ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        return await bench_support.CpuMeter.of(conn)
    finally:
        await conn.close()


async def _floor(dsn: str, count: int) -> dict[str, Any]:
    meter = await _cpu_meter(dsn)
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    try:
        store = Store(pool)
        done = 0
        before = meter.read()
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
        cpu = meter.read().per_item(before, done)
    finally:
        await pool.close()
    return {"rows": done, "seconds": round(elapsed, 3), "rate": done / elapsed, "cpu_us": cpu}


def _daemon_settings(settings: Settings, args: argparse.Namespace, port: int | None) -> Settings:
    """The configured settings, pointed at the bench's provider and sink."""
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
    if port is not None and args.provider == "ses":
        update["aws"] = settings.aws.model_copy(update={"endpoint_url": f"http://127.0.0.1:{port}"})
        update["email"] = email.model_copy(update={"rate": 1_000_000.0})  # measure us, not a limit
    elif port is not None:
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


async def _drain(dsn: str, settings: Settings, count: int) -> dict[str, Any]:
    meter = await _cpu_meter(dsn)
    # Imported here, not with the module: the CLI imports this module to build its
    # parser, and `outboxd run --processes N` must choose prometheus_client's
    # multiprocess mode before anything imports it (daemon.main does).
    from daemon.main import Daemon

    daemon = Daemon(settings, dsn=dsn, worker_id="bench")
    sent = 0

    def count_sent(batch: Sequence[Completion]) -> None:
        nonlocal sent
        sent += sum(1 for c in batch if c.status is Status.SENT)

    daemon.completion_listeners.append(count_sent)
    bar = bench_support.Progress(count)
    progress = asyncio.create_task(bar.follow(lambda: sent))
    task = asyncio.create_task(daemon.run(until_empty=True))
    await daemon.started.wait()
    before = meter.read()
    started = time.perf_counter()
    await task
    elapsed = time.perf_counter() - started
    cpu = meter.read().per_item(before, sent)
    progress.cancel()
    bar.close()
    return {"sent": sent, "seconds": round(elapsed, 3), "rate": sent / elapsed, "cpu_us": cpu}


async def _latency(dsn: str, settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    from daemon.main import Daemon

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
    if args.compare and args.provider != "smtp":
        raise errors.ConfigurationError("outboxd bench --compare celery needs --provider smtp")
    admin_dsn, _ = db.resolve_dsn(settings)
    result: dict[str, Any] = {"messages": args.messages, "provider": args.provider}
    with contextlib.ExitStack() as stack:
        port = None
        if args.provider == "smtp":
            port = stack.enter_context(bench_support.smtp_sink())
        elif args.provider == "ses":
            port = stack.enter_context(bench_support.fake_ses())
            bench_support.fake_credentials()
            result["bare_aioboto3"] = await bench_support.bare_ses_loop(
                f"http://127.0.0.1:{port}", min(args.messages, 20_000), args.concurrency or 64
            )
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
                if args.processes > 1:
                    result["drain"] = await _drain_processes(dsn, args, port)
                else:
                    result["drain"] = await _drain(dsn, daemon_settings, args.messages)
                result["drain"]["processes"] = args.processes
            if args.compare == "celery":
                from daemon import bench_celery

                assert port is not None
                await _fill_due(dsn, args.messages)
                result["celery"] = await bench_celery.drain(
                    dsn, broker=args.redis_url, smtp_port=port, processes=args.processes
                )
                result["celery"]["processes"] = args.processes
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


async def _drain_processes(dsn: str, args: argparse.Namespace, port: int | None) -> dict[str, Any]:
    """Drain with a real `outboxd run --processes N`, timed by the rows' sent_at."""
    env = dict(os.environ)
    env.update(
        OUTBOXD_DATABASE_URL=dsn, OUTBOXD_EMAIL__PROVIDER=args.provider,
        OUTBOXD_SMS__PROVIDER="null", OUTBOXD_HTTP__ENABLED="false",
        OUTBOXD_LOG_LEVEL="WARNING",
    )  # fmt: skip
    if args.concurrency:
        env["OUTBOXD_WORKER__CONCURRENCY"] = str(args.concurrency)
    if args.provider == "ses" and port is not None:
        env.update(OUTBOXD_AWS__ENDPOINT_URL=f"http://127.0.0.1:{port}",
                   OUTBOXD_EMAIL__RATE="1000000")  # fmt: skip
    elif args.provider == "smtp" and port is not None:
        env.update(OUTBOXD_SMTP__HOST="127.0.0.1", OUTBOXD_SMTP__PORT=str(port))
    conn = await asyncpg.connect(dsn)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", "run", "--processes", str(args.processes), env=env
    )
    bar = bench_support.Progress(args.messages)
    try:
        return await bench_support.watch_drain(
            conn,
            args.messages,
            proc,
            await bench_support.CpuMeter.of(conn, proc.pid),
            # Due rows only: --extra-pending rows are scheduled for tomorrow.
            "SELECT count(*) FROM outbox.message "
            "WHERE status IN ('pending', 'sending') AND not_before <= now()",
            bar.show,
        )
    finally:
        bar.close()
        await bench_support.stop(proc)
        await conn.close()
