"""``outboxd bench --inbox``: the in-app inbox under load, in a throwaway database.

1. count - the unread count with ``--inbox-rows`` items (100 per person, a fifth unread, and
   one heavy person with many more): per-call round trips, and EXPLAIN ANALYZE of the query;
2. streams - ``--inbox-clients`` SSE clients (one person each, in a child process) on the
   daemon running in this process: RSS per idle stream, then items committed one per
   transaction at ``--inbox-rate`` for ``--inbox-seconds``, then one transaction with an
   item for every client; latency from just before the commit to the client's read.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
from typing import Any

import asyncpg
from pydantic import SecretStr

from daemon import db
from daemon.bench import phases
from daemon.bench.inbox_clients import raise_nofile
from daemon.settings import Settings
from outbox import inbox_token, migrations

SECRET = "bench-inbox-secret"
_UNREAD_COUNT = "SELECT outbox.inbox_unread_count($1)"
_HEAVY = "heavy"


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": ordered[-1] * 1000}


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn, _ = db.resolve_dsn(settings)
    result: dict[str, Any] = {"rlimit_nofile": raise_nofile()}
    async with phases.throwaway_database(admin_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrations.migrate(conn)
            if args.inbox_rows:
                result["count"] = await _count_phase(conn, args.inbox_rows)
        finally:
            await conn.close()
        if args.inbox_clients:
            result["streams"] = await _stream_phase(dsn, settings, args)
    return result


async def _count_phase(conn: asyncpg.Connection, rows: int) -> dict[str, Any]:
    people = max(1, rows // 100)
    heavy_items = min(rows, 20_000)
    started = time.perf_counter()
    await conn.execute(
        "INSERT INTO outbox.recipient (key) SELECT 'p' || g FROM generate_series(1, $1) g", people
    )
    await conn.execute("INSERT INTO outbox.recipient (key) VALUES ($1)", _HEAVY)
    # Bulk load without the per-item NOTIFY: nobody listens yet.
    await conn.execute("ALTER TABLE outbox.inbox DISABLE TRIGGER inbox_inserted")
    await conn.execute(
        """INSERT INTO outbox.inbox (recipient_key, title, created_at, seen_at, read_at)
           SELECT 'p' || (1 + g % $1), 'item ' || g, now() - make_interval(secs => $2 - g),
                  CASE WHEN (g / $1) % 5 <> 0 THEN now() END,
                  CASE WHEN (g / $1) % 5 <> 0 THEN now() END
             FROM generate_series(1, $2) g""",
        people, rows - heavy_items,
    )  # fmt: skip
    await conn.execute(
        """INSERT INTO outbox.inbox (recipient_key, title, read_at)
           SELECT $1, 'item ' || g, CASE WHEN g % 4 <> 0 THEN now() END
             FROM generate_series(1, $2) g""",
        _HEAVY, heavy_items,
    )  # fmt: skip
    await conn.execute("ALTER TABLE outbox.inbox ENABLE TRIGGER inbox_inserted")
    await conn.execute("VACUUM (ANALYZE) outbox.inbox")
    loaded = time.perf_counter() - started

    statement = await conn.prepare(_UNREAD_COUNT)
    keys = [f"p{random.randint(1, people)}" for _ in range(2000)]
    for key in keys[:100]:  # warm the cache and the plan
        await statement.fetchval(key)
    timings = []
    for key in keys:
        begun = time.perf_counter()
        await statement.fetchval(key)
        timings.append(time.perf_counter() - begun)
    heavy = []
    for _ in range(200):
        begun = time.perf_counter()
        heavy_unread = await statement.fetchval(_HEAVY)
        heavy.append(time.perf_counter() - begun)
    plan = [
        r[0]
        for r in await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM outbox.inbox i"
            " WHERE i.recipient_key = $1 AND i.read_at IS NULL AND i.archived_at IS NULL",
            keys[0],
        )
    ]
    return {
        "rows": await conn.fetchval("SELECT count(*) FROM outbox.inbox"),
        "people": people + 1,
        "load_seconds": round(loaded, 1),
        "typical": {"unread": await statement.fetchval(keys[0]), **_ms(timings)},
        "heavy": {"items": heavy_items, "unread": heavy_unread, **_ms(heavy)},
        "explain": plan,
    }


def _stream_settings(settings: Settings, clients: int) -> Settings:
    return settings.model_copy(
        update={
            "http": settings.http.model_copy(
                update={"enabled": True, "host": "127.0.0.1", "port": 0, "admin_port": 0}
            ),
            "secret_key": (SecretStr(SECRET),),
            "email": settings.email.model_copy(update={"provider": "null"}),
            "sms": settings.sms.model_copy(update={"provider": "null"}),
            "inbox": settings.inbox.model_copy(update={"max_streams": clients + 100}),
        }
    )


async def _stream_phase(dsn: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from daemon.main import Daemon  # not with the module: the CLI imports this one

    clients = args.inbox_clients
    keys = [f"s{i}" for i in range(clients)]
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "INSERT INTO outbox.recipient (key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", keys
    )
    daemon = Daemon(_stream_settings(settings, clients), dsn=dsn, worker_id="bench-inbox")
    task = asyncio.create_task(daemon.run())
    children: list[asyncio.subprocess.Process] = []
    spread = max(1, min(args.inbox_client_processes, clients))
    try:
        await daemon.started.wait()
        await asyncio.sleep(1.0)  # the hub's LISTEN connection comes up
        gc.collect()
        rss_before = _rss_kib()
        connect_started = time.perf_counter()
        for n in range(spread):
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "daemon.bench.inbox_clients",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**28,
            )  # fmt: skip
            children.append(child)
            tokens = [inbox_token(key, secret=SECRET, ttl=3600) for key in keys[n::spread]]
            await _tell(child, {"port": daemon.http_port, "tokens": tokens})
        ready = [await _hear(child) for child in children]
        connect_seconds = time.perf_counter() - connect_started
        await asyncio.sleep(2.0)
        gc.collect()
        rss_idle = _rss_kib()
        listeners = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outboxd-inbox'"
        )

        # Items one per transaction at a steady rate, each to a random client.
        committed: dict[int, float] = {}
        expected = [0] * spread
        rate, total = args.inbox_rate, int(args.inbox_rate * args.inbox_seconds)
        started = time.perf_counter()
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            which = random.randrange(clients)
            before = time.time()
            item_id = await conn.fetchval(
                "INSERT INTO outbox.inbox (recipient_key, title, body) VALUES ($1, $2, $3)"
                " RETURNING id",
                keys[which], f"steady {i}", "An item of the steady load",
            )  # fmt: skip
            committed[item_id] = before
            expected[which % spread] += 1
        # Then one transaction with an item for every client.
        cpu_before = time.process_time()
        before = time.time()
        rows = await conn.fetch(
            "INSERT INTO outbox.inbox (recipient_key, title)"
            " SELECT k, 'burst' FROM unnest($1::text[]) AS k RETURNING id",
            keys,
        )
        burst_commit = time.time() - before
        burst = {r["id"]: before for r in rows}
        arrivals: dict[str, list[float]] = {}
        for n, child in enumerate(children):
            await _tell(child, {"expect": expected[n] + len(keys[n::spread])})
        for child in children:
            arrivals.update((await _hear(child))["arrivals"])
        burst_cpu = time.process_time() - cpu_before
    finally:
        await conn.close()
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        daemon.request_stop()
        await task

    def latencies(sent: dict[int, float]) -> tuple[list[float], int]:
        got = [arrivals[str(i)][0] - t for i, t in sent.items() if str(i) in arrivals]
        return got, len(sent) - len(got)

    steady, steady_missing = latencies(committed)
    fanned, burst_missing = latencies(burst)
    return {
        "clients": clients,
        "client_processes": spread,
        "connected": sum(r["ready"] for r in ready),
        "connect_failures": sum(r["failures"] for r in ready),
        "connect_seconds": round(connect_seconds, 1),
        "listen_connections": listeners,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_idle_mib": round(rss_idle / 1024, 1),
        "rss_per_idle_client_kib": round((rss_idle - rss_before) / clients, 1),
        "steady": {"rate": rate, **_ms(steady), "missing": steady_missing},
        "burst": {
            **_ms(fanned),
            "missing": burst_missing,
            "mean_ms": statistics.fmean(fanned) * 1000 if fanned else 0.0,
            "commit_ms": round(burst_commit * 1000, 1),
            # CPU of this process (the daemon) for the whole fan-out: steadier than latency
            # on a shared machine.
            "daemon_cpu_ms": round(burst_cpu * 1000, 1),
        },
    }


async def _tell(child: asyncio.subprocess.Process, message: dict[str, Any]) -> None:
    assert child.stdin is not None
    child.stdin.write(json.dumps(message).encode() + b"\n")
    await child.stdin.drain()


async def _hear(child: asyncio.subprocess.Process) -> Any:
    assert child.stdout is not None
    return json.loads(await child.stdout.readline())


def format_result(result: dict[str, Any]) -> str:
    lines = ["outboxd bench --inbox"]
    count = result.get("count")
    if count:
        typical, heavy = count["typical"], count["heavy"]
        lines += [
            f"  unread count, {count['rows']:,} rows, {count['people']:,} people:",
            f"    typical person ({typical['unread']} unread): p50 {typical['p50_ms']:.2f} ms,"
            f" p99 {typical['p99_ms']:.2f} ms (round trip)",
            f"    heavy person ({heavy['unread']:,} unread of {heavy['items']:,}):"
            f" p50 {heavy['p50_ms']:.2f} ms, p99 {heavy['p99_ms']:.2f} ms",
            "    " + "\n    ".join(count["explain"]),
        ]
    streams = result.get("streams")
    if streams:
        steady, burst = streams["steady"], streams["burst"]
        lines += [
            f"  {streams['connected']:,} of {streams['clients']:,} SSE clients connected in"
            f" {streams['connect_seconds']} s ({streams['connect_failures']} failed,"
            f" {streams['client_processes']} client processes),"
            f" {streams['listen_connections']} LISTEN connection",
            f"    RSS {streams['rss_before_mib']} MiB -> {streams['rss_idle_mib']} MiB idle:"
            f" {streams['rss_per_idle_client_kib']} KiB per idle client",
            f"    commit -> client at {steady['rate']:g}/s: p50 {steady['p50_ms']:.1f} ms,"
            f" p99 {steady['p99_ms']:.1f} ms, max {steady['max_ms']:.1f} ms"
            f" ({steady['missing']} missing)",
            f"    one commit ({burst['commit_ms']:.0f} ms) to every client:"
            f" p50 {burst['p50_ms']:.0f} ms,"
            f" p99 {burst['p99_ms']:.0f} ms, max {burst['max_ms']:.0f} ms"
            f" ({burst['missing']} missing), daemon CPU {burst['daemon_cpu_ms']:.0f} ms",
        ]
    lines.append(f"  open files limit {result['rlimit_nofile']}")
    return "\n".join(lines)
