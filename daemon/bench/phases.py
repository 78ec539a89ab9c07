"""The phases of ``outboxd bench``, each measured in the same throwaway database: the SQL
floor, the daemon's drain (in process, or as ``outboxd run --processes N``) and latency at a
fixed offered rate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

from daemon import db
from daemon.bench import support
from daemon.settings import Settings
from outbox import NewMessage, enqueue_many, migrations
from outbox.models import Status
from outbox.store import Completion, Store

TEMPLATE = "welcome"


def throwaway_database(dsn: str) -> contextlib.AbstractAsyncContextManager[str]:
    return db.scratch_database(dsn, f"outboxd_bench_{secrets.token_hex(4)}")


async def migrate(dsn: str) -> None:
    """Bring the database at ``dsn`` to the current schema."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()


def _messages(count: int, *, offset: int = 0) -> Iterator[NewMessage]:
    for i in range(offset, offset + count):
        yield NewMessage(
            "email",
            f"user{i}@example.com",
            TEMPLATE,
            {"name": f"User {i}", "login_url": f"https://app.example.com/login?u={i}"},
            tags={"campaign": "bench"},
        )


async def fill(dsn: str, count: int, *, not_before_future: bool = False) -> None:
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


async def _cpu_meter(dsn: str) -> support.CpuMeter:
    """A CPU meter for this process (hosting the daemon) and for the server behind ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        return await support.CpuMeter.of(conn)
    finally:
        await conn.close()


async def floor(dsn: str, count: int) -> dict[str, Any]:
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


def daemon_settings(settings: Settings, args: argparse.Namespace, port: int | None) -> Settings:
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


async def drain(dsn: str, settings: Settings, count: int) -> dict[str, Any]:
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
    bar = support.Progress(count)
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


async def latency(dsn: str, settings: Settings, rate: float, seconds: float) -> dict[str, float]:
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


async def fill_due(dsn: str, count: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM outbox.message WHERE not_before <= now()")
        await conn.execute("VACUUM ANALYZE outbox.message")
    finally:
        await conn.close()
    await fill(dsn, count)


async def drain_processes(dsn: str, args: argparse.Namespace, port: int | None) -> dict[str, Any]:
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
    bar = support.Progress(args.messages)
    try:
        return await support.watch_drain(
            conn,
            args.messages,
            proc,
            await support.CpuMeter.of(conn, proc.pid),
            # Due rows only: --extra-pending rows are scheduled for tomorrow.
            "SELECT count(*) FROM outbox.message "
            "WHERE status IN ('pending', 'sending') AND not_before <= now()",
            bar.show,
        )
    finally:
        bar.close()
        await support.stop(proc)
        await conn.close()
