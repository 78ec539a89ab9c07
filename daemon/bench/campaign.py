"""``outboxd bench --campaign``: a large campaign against its floors, in one run.

1. expansion - N people subscribed to a list (1% of them suppressed, 1% opted out of the
   campaign's category), expanded by ``outbox.start_campaign`` (the segment, suppressions,
   opt-outs by address and by person, bookkeeping) and, in alternating rounds on the same
   tables, by a bare ``INSERT ... SELECT`` of the same rows into ``outbox.message`` with
   the same columns and context and no checks at all: the floor;
2. drain - the daemon (null provider) sends that campaign while transactional messages
   (priority 3, a password reset) are enqueued one per transaction at a fixed rate; their
   enqueue-to-sent percentiles come from the database clock (created_at to sent_at).

Both run in a throwaway database created beside the configured one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any

import asyncpg

from daemon import db
from daemon.bench import support
from daemon.settings import Settings
from outbox import migrations

#: Template variables of every message of the campaign (and of the floor's rows).
CONTEXT = {"subject": "Spring sale", "body": "Everything is 20% off this week."}
#: Everyone (attribute n is 0..N-1), through the compiled-segment path.
SEGMENT = {"attr": "n", "op": "gte", "value": 0}

_PEOPLE = """
INSERT INTO outbox.recipient (key, email, attrs)
SELECT 'c' || g, 'c' || g || '@example.com',
       jsonb_build_object('n', g, 'plan', CASE WHEN g % 10 = 0 THEN 'free' ELSE 'pro' END,
                          'first_name', 'Person ' || g)
  FROM generate_series(0, $1 - 1) AS g
"""
_SUBSCRIBERS = """
INSERT INTO outbox.subscription (list_id, recipient_key, status, source, confirmed_at)
SELECT $1, key, 'active', 'bench', now() FROM outbox.recipient
"""
_OPTED_OUT = """
INSERT INTO outbox.suppression (channel, recipient, reason)
SELECT 'email', 'c' || g || '@example.com', 'bounce' FROM generate_series(1, $1 - 1, 100) AS g;
INSERT INTO outbox.preference (channel, recipient, category)
SELECT 'email', 'c' || g || '@example.com', 'marketing' FROM generate_series(2, $1 - 1, 100) AS g
"""
_CAMPAIGN = """
INSERT INTO outbox.campaign (name, list_id, template, segment, context)
VALUES ($1, $2, 'newsletter', $3::jsonb, $4::jsonb) RETURNING id
"""
# The floor: the same rows, columns and context, without a single check.
_FLOOR = """
INSERT INTO outbox.message
    (channel, recipient, template, context, category, priority, locale, recipient_key,
     campaign_id, list_id)
SELECT 'email', r.email, 'newsletter', $2::jsonb || jsonb_build_object('person', r.attrs),
       'marketing', 0, r.locale, s.recipient_key, $3, s.list_id
  FROM outbox.subscription s
  JOIN outbox.recipient r ON r.key = s.recipient_key
 WHERE s.list_id = $1 AND s.status = 'active'
"""


async def run(admin_dsn: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    async with db.scratch_database(admin_dsn, f"outboxd_bench_{secrets.token_hex(4)}") as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"statement_timeout": "0"})
        try:
            await migrations.migrate(conn)
            started = time.perf_counter()
            list_id = await _populate(conn, args.audience)
            setup_seconds = time.perf_counter() - started
            expansion = await _expansion(conn, list_id, args.campaign_rounds)
        finally:
            await conn.close()
        drain = await _drain(dsn, settings, args, expansion["messages"])
    return {
        "audience": args.audience,
        "setup_seconds": round(setup_seconds, 1),
        "expansion": expansion,
        "drain": drain,
    }


async def _populate(conn: asyncpg.Connection, people: int) -> int:
    await conn.execute(_PEOPLE, people)
    list_id: int = await conn.fetchval(
        "INSERT INTO outbox.list (name, double_opt_in) VALUES ('bench', false) RETURNING id"
    )
    await conn.execute(_SUBSCRIBERS, list_id)
    for statement in _OPTED_OUT.split(";"):
        await conn.execute(statement, people)
    await conn.execute("VACUUM ANALYZE")
    return list_id


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE outbox.message, outbox.event")
    await conn.execute("CHECKPOINT")


async def _expansion(conn: asyncpg.Connection, list_id: int, rounds: int) -> dict[str, Any]:
    """Alternating rounds of the floor and of start_campaign; the best of each."""
    meter = await support.CpuMeter.of(conn)
    floor: list[tuple[float, int, dict[str, float]]] = []
    campaign: list[tuple[float, int, dict[str, float]]] = []
    context = json.dumps(CONTEXT)
    for n in range(rounds):
        floor_id = await conn.fetchval(_CAMPAIGN, f"floor {n}", list_id, None, context)
        await _reset(conn)
        before, started = meter.read(), time.perf_counter()
        status = await conn.execute(_FLOOR, list_id, context, floor_id)
        elapsed = time.perf_counter() - started
        rows = int(status.rsplit(" ", 1)[-1])
        floor.append((elapsed, rows, meter.read().per_item(before, rows, "bench")))

        campaign_id = await conn.fetchval(
            _CAMPAIGN, f"campaign {n}", list_id, json.dumps(SEGMENT), context
        )
        await _reset(conn)
        before, started = meter.read(), time.perf_counter()
        made = await conn.fetchval("SELECT outbox.start_campaign($1)", campaign_id)
        elapsed = time.perf_counter() - started
        campaign.append((elapsed, int(made), meter.read().per_item(before, made, "bench")))
    best_floor, best_campaign = min(floor), min(campaign)
    return {
        "messages": best_campaign[1],
        "floor_rows": best_floor[1],
        "floor_seconds": [round(r[0], 2) for r in floor],
        "campaign_seconds": [round(r[0], 2) for r in campaign],
        "floor_rate": best_floor[1] / best_floor[0],
        "campaign_rate": best_campaign[1] / best_campaign[0],
        "ratio": (best_campaign[1] / best_campaign[0]) / (best_floor[1] / best_floor[0]),
        "floor_postgres_cpu_us": best_floor[2].get("postgres"),
        "campaign_postgres_cpu_us": best_campaign[2].get("postgres"),
    }


async def _drain(
    dsn: str, settings: Settings, args: argparse.Namespace, backlog: int
) -> dict[str, Any]:
    """The daemon drains the campaign; a reset every 1/rate seconds meanwhile."""
    from daemon.main import Daemon  # not with the module: see daemon.bench.phases.drain

    email = settings.email.model_copy(
        update={"provider": "null", "rate": float(args.campaign_rate)}
    )
    daemon_settings = settings.model_copy(
        update={"email": email, "http": settings.http.model_copy(update={"enabled": False})}
    )
    daemon = Daemon(daemon_settings, dsn=dsn, worker_id="bench-campaign")
    task = asyncio.create_task(daemon.run())
    conn = await asyncpg.connect(dsn)
    try:
        await daemon.started.wait()
        total = int(args.rate * args.latency_seconds)
        started = time.perf_counter()
        for i in range(total):
            delay = started + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.fetchval(
                "SELECT outbox.enqueue(channel => 'email', recipient => $1, "
                "template => 'password_reset', context => $2::jsonb, priority => 3)",
                f"reset{i}@example.com",
                json.dumps(
                    {"name": "Ann", "reset_url": "https://x.example/r", "expires_minutes": 30}
                ),
            )
        for _ in range(600):  # the last resets: claimed at the next turn
            left = await conn.fetchval(
                "SELECT count(*) FROM outbox.message "
                "WHERE template = 'password_reset' AND status IN ('pending', 'sending')"
            )
            if not left:
                break
            await asyncio.sleep(0.05)
        window = time.perf_counter() - started
        row = await conn.fetchrow(
            """SELECT count(*) AS n,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) AS p50,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY latency) AS p99,
                      max(latency) AS worst
                 FROM (SELECT extract(epoch FROM sent_at - created_at) AS latency
                         FROM outbox.message
                        WHERE template = 'password_reset' AND status = 'sent') AS sent"""
        )
        campaign_sent = await conn.fetchval(
            "SELECT count(*) FROM outbox.message WHERE campaign_id IS NOT NULL AND status = 'sent'"
        )
    finally:
        await conn.close()
        daemon.request_stop()
        await task
    assert row is not None
    return {
        "offered_rate": args.rate,
        "email_rate_limit": args.campaign_rate,
        "resets": row["n"],
        "p50_ms": (row["p50"] or 0.0) * 1000,
        "p99_ms": (row["p99"] or 0.0) * 1000,
        "max_ms": float(row["worst"] or 0.0) * 1000,
        "campaign_backlog": backlog,
        "campaign_sent": campaign_sent,
        "campaign_rate": campaign_sent / window,
    }


def format_result(result: dict[str, Any], line: Any) -> None:
    """Add the campaign figures to the report through ``line(label, value)``."""
    expansion, drain = result["expansion"], result["drain"]
    people = f"{result['audience']:,}"
    line(f"campaign expansion, {people} people", f"{expansion['campaign_rate']:,.0f} rows/s")
    line("bare INSERT ... SELECT of the same rows", f"{expansion['floor_rate']:,.0f} rows/s")
    line("expansion / bare INSERT ... SELECT", f"{expansion['ratio']:.2f}x")
    limit = drain["email_rate_limit"]
    line(
        f"campaign drain{f' (limit {limit:g}/s)' if limit else ''}",
        f"{drain['campaign_rate']:,.0f} messages/s",
    )
    line(
        f"reset enqueue->sent at {drain['offered_rate']:g}/s",
        f"p50 {drain['p50_ms']:.0f} ms, p99 {drain['p99_ms']:.0f} ms",
    )
