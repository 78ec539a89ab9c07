"""``outboxd bench --webhooks``: what webhooks cost, in one run in a throwaway database.

1. trigger cost - the completion UPDATE (batches of 200 rows from sending to sent, as the
   completer writes them) with the webhook trigger disabled, enabled with no endpoint, and
   with one endpoint, in alternating rounds: wall time and the CPU time of the database
   backend that ran the UPDATEs (read from /proc; other databases on a shared server do
   not count), per message;
2. cost per sent message - the same backlog drained (null provider, webhook lane off) with
   the webhook trigger disabled (as before webhooks existed), enabled with no endpoint, and
   with one endpoint (one delivery row written per sent message), in alternating rounds;
   medians of rates and of CPU per message (this process and the PostgreSQL server);
3. throughput - N deliveries to one endpoint (a signature-checking receiver in its own
   process on loopback) posted by the webhook lane until all are delivered: events/s and
   CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from typing import Any

import asyncpg

from daemon import db
from daemon.bench import phases, support
from daemon.settings import Settings

SECRET = "whsec_bench_0123456789abcdef"
SIDES = ("trigger_off", "no_endpoint", "one_endpoint")


async def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn, _ = db.resolve_dsn(settings)
    base = phases.daemon_settings(settings, args, None)
    drain_settings = base.model_copy(
        update={"hooks": base.hooks.model_copy(update={"enabled": False})}
    )
    result: dict[str, Any] = {"messages": args.messages, "events": args.webhook_events}
    port = support.free_port()
    with support._server([sys.executable, "-m", "daemon.bench.hook_sink", str(port), SECRET], port):
        async with phases.throwaway_database(admin_dsn) as dsn:
            await phases.migrate(dsn)
            result["trigger"] = await _trigger_cost(dsn, args.messages, args.webhook_rounds)
            result["cost"] = await _cost(dsn, drain_settings, args)
            result["throughput"] = await _throughput(dsn, base, port, args.webhook_events)
    return result


async def _side(dsn: str, side: str, url: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM outbox.webhook_endpoint")
        toggle = "DISABLE" if side == "trigger_off" else "ENABLE"
        await conn.execute(f"ALTER TABLE outbox.message {toggle} TRIGGER message_webhook")
        if side == "one_endpoint":
            await conn.execute(
                "INSERT INTO outbox.webhook_endpoint (url, secret) VALUES ($1, $2)", url, SECRET
            )
        await conn.execute("TRUNCATE outbox.webhook_delivery")
    finally:
        await conn.close()


_SENDING = """
INSERT INTO outbox.message (channel, recipient, template, context, status, attempts,
                            locked_by, locked_until)
SELECT 'email', 'user' || g || '@example.com', 'welcome', '{"name": "U"}', 'sending', 1,
       'bench', now() + interval '1 hour'
  FROM generate_series(1, $1) AS g
"""
_COMPLETE = """
UPDATE outbox.message
   SET status = 'sent', sent_at = now(), updated_at = now(), provider = 'null',
       provider_message_id = 'p' || id, locked_by = NULL, locked_until = NULL
 WHERE id = ANY($1::bigint[]) AND status = 'sending' AND locked_by = 'bench'
"""


async def _trigger_cost(dsn: str, count: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
    conn = await asyncpg.connect(dsn)
    try:
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        for _ in range(rounds):
            for side in SIDES:
                await _side(dsn, side, "https://hooks.example.com/bench")
                await conn.execute("DELETE FROM outbox.message")
                await conn.execute("VACUUM ANALYZE outbox.message")
                ids = [r[0] for r in await conn.fetch(_SENDING + " RETURNING id", count)]
                cpu_before = support.backend_cpu(backend)
                started = time.perf_counter()
                for at in range(0, len(ids), 200):
                    await conn.execute(_COMPLETE, ids[at : at + 200])
                wall = time.perf_counter() - started
                cpu = support.backend_cpu(backend) - cpu_before
                runs[side].append((wall * 1e6 / count, cpu * 1e6 / count))
    finally:
        await conn.close()
    summary = {
        side: {
            "wall_us": round(statistics.median(w for w, _ in values), 1),
            "backend_cpu_us": round(statistics.median(c for _, c in values), 1),
        }
        for side, values in runs.items()
    }
    for side in ("no_endpoint", "one_endpoint"):
        for key in ("wall_us", "backend_cpu_us"):
            summary[side][f"extra_{key}"] = round(
                summary[side][key] - summary["trigger_off"][key], 1
            )
    return summary


async def _cost(dsn: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for _ in range(args.webhook_rounds):
        for side in SIDES:
            await _side(dsn, side, "https://hooks.example.com/bench")  # never posted here
            await phases.fill_due(dsn, args.messages)
            runs[side].append(await phases.drain(dsn, settings, args.messages))
    summary: dict[str, Any] = {}
    for side, drains in runs.items():
        summary[side] = {
            "rate": statistics.median(d["rate"] for d in drains),
            "cpu_us": {
                part: statistics.median(d["cpu_us"][part] for d in drains)
                for part in drains[0]["cpu_us"]
            },
        }
    off = summary["trigger_off"]
    for side in ("no_endpoint", "one_endpoint"):
        summary[side]["extra_us_per_message"] = round(
            1e6 / summary[side]["rate"] - 1e6 / off["rate"], 1
        )
        summary[side]["extra_cpu_us"] = {
            part: round(us - off["cpu_us"][part], 1) for part, us in summary[side]["cpu_us"].items()
        }
    return summary


async def _throughput(dsn: str, settings: Settings, port: int, events: int) -> dict[str, Any]:
    from daemon.hooks.lane import HookLane
    from daemon.hooks.store import HookStore

    await _side(dsn, "one_endpoint", f"http://127.0.0.1:{port}/hooks")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO outbox.webhook_delivery (event_id, endpoint_id, type, data)
               SELECT gen_random_uuid(), (SELECT id FROM outbox.webhook_endpoint),
                      'message.sent',
                      jsonb_build_object('message_id', g, 'recipient',
                                         'user' || g || '@example.com', 'status', 'sent')
                 FROM generate_series(1, $1) AS g""",
            events,
        )
        meter = await support.CpuMeter.of(conn)
    finally:
        await conn.close()
    hooks = settings.hooks.model_copy(
        update={"allow_private": ("127.0.0.1",), "concurrency": 64, "poll_interval": 0.05}
    )
    pool = await db.create_pool(dsn, min_size=2, max_size=4)
    stopping = asyncio.Event()
    try:
        lane = HookLane(HookStore(pool), hooks, worker_id="bench-hooks")
        before = meter.read()
        started = time.perf_counter()
        task = asyncio.create_task(lane.run(stopping))
        # Only the unfinished rows are counted (from their partial indexes): a count of
        # the whole table every time would be measured as the lane's own cost.
        while await pool.fetchval(
            "SELECT count(*) FROM outbox.webhook_delivery WHERE status IN ('pending', 'sending')"
        ):
            lane.written.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await lane.written.wait()  # results were written: look again
        elapsed = time.perf_counter() - started
        cpu = meter.read().per_item(before, events)
        stopping.set()
        await task
        failed = await pool.fetchval(
            "SELECT count(*) FROM outbox.webhook_delivery WHERE last_status <> 200"
        )
    finally:
        await pool.close()
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "rate": events / elapsed,
        "cpu_us": cpu,
        "non_200": failed,
    }


def format_result(result: dict[str, Any]) -> str:
    cost, put, trigger = result["cost"], result["throughput"], result["trigger"]
    lines = [f"outboxd bench --webhooks: {result['messages']:,} messages per drain"]
    for side, label in (
        ("trigger_off", "completion UPDATE, webhook trigger disabled"),
        ("no_endpoint", "completion UPDATE, no endpoint"),
        ("one_endpoint", "completion UPDATE, one endpoint"),
    ):
        t = trigger[side]
        extra = (
            f"   (extra: {t['extra_wall_us']:+.1f} us wall, {t['extra_backend_cpu_us']:+.1f} "
            "us backend CPU)"
            if "extra_wall_us" in t
            else ""
        )
        lines.append(
            f"  {label:<44}{t['wall_us']:>8.1f} us wall, {t['backend_cpu_us']:.1f} us backend "
            f"CPU per message{extra}"
        )

    def cpu(values: dict[str, float]) -> str:
        return ", ".join(f"{part} {us:,.1f}" for part, us in values.items())

    for side, label in (
        ("trigger_off", "drain, webhook trigger disabled"),
        ("no_endpoint", "drain, no endpoint"),
        ("one_endpoint", "drain, one endpoint (a delivery row each)"),
    ):
        lines.append(
            f"  {label:<44}{cost[side]['rate']:>12,.0f} msg/s   CPU us each: "
            f"{cpu(cost[side]['cpu_us'])}"
        )
    for side in ("no_endpoint", "one_endpoint"):
        lines.append(
            f"  extra per sent message, {side.replace('_', ' '):<20}"
            f"{cost[side]['extra_us_per_message']:>+10.1f} us wall   CPU us: "
            f"{cpu(cost[side]['extra_cpu_us'])}"
        )
    lines.append(
        f"  {'webhook lane, one endpoint on loopback':<44}{put['rate']:>12,.0f} events/s   "
        f"CPU us each: {cpu(put['cpu_us'])}   (non-2xx: {put['non_200']})"
    )
    return "\n".join(lines)
