"""``python -m daemon.bench.console``: what the console's pages cost at a million messages,
and what migration 0015's indexes cost the hot path.

1. explain - a throwaway database beside the configured one is filled with N messages
   (channels, statuses, templates, campaigns, notifications and ages mixed as a busy
   installation has them, plus their feedback events and suppressions); every query a
   console page runs is EXPLAIN ANALYZEd (warm: the second run) and reported with the
   indexes it used, its rows and its time. Actions run inside a transaction that is
   rolled back. With ``--archive-after-hours H``, messages finished more than H hours
   before are first moved to the archive, as the daemon's maintenance does (the default
   delay is 24 hours: then nearly every finished message of the month is archived).
2. indexes - in alternating rounds on the same table, without and with 0015's indexes:
   the enqueue rate (batched INSERTs) and the claim + completion floor (the daemon's own
   claim of 500 rows and its batched completion as ``sent``), rows per second.

    OUTBOXD_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python -m daemon.bench.console --messages 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from daemon import db
from daemon.bench import console_data
from daemon.bench.console_data import FLOOR_ROWS
from daemon.http.console import queries
from daemon.http.console.queries import Filters
from outbox import migrations, resources
from outbox.models import Status
from outbox.store import Completion, Store

MIGRATION = "0015_console.sql"


def _index_statements() -> list[str]:
    """The CREATE INDEX statements of migration 0015 (one line each)."""
    text = (resources.sql_dir() / "migrations" / MIGRATION).read_text("utf-8")
    text = re.sub(r"--[^\n]*", "", text)
    return [" ".join(s.split()) for s in text.split(";") if s.strip().startswith("CREATE INDEX")]


def _index_names() -> list[str]:
    return [s.split()[5] for s in _index_statements()]


def _cases(n: int) -> Iterator[tuple[str, str, list[Any]]]:
    """(case, SQL, arguments) of every console query, with values that find rows."""
    now = datetime.now(UTC)
    day = timedelta(days=1)
    # A failed email of the middle of the table (see console_data: ids follow g).
    message = n // 2 // 1000 * 1000 + 1
    recipient = f"User{message * 7919 % 100_000}@Example.com"
    searches = {
        "search: no filter (first page)": Filters(),
        "search: recipient": Filters(recipient=recipient),
        "search: recipient + status failed": Filters(recipient=recipient, status="failed"),
        "search: status pending": Filters(status="pending"),
        "search: status sending": Filters(status="sending"),
        "search: status failed": Filters(status="failed"),
        "search: status complained": Filters(status="complained"),
        "search: status delivered": Filters(status="delivered"),
        "search: template (common)": Filters(template="welcome"),
        "search: template (rare)": Filters(template="billing/low_balance"),
        "search: category marketing": Filters(category="marketing"),
        "search: campaign": Filters(campaign=3),
        "search: notification": Filters(notification=n // 6),
        "search: last hour": Filters(since=now - timedelta(hours=1)),
        "search: one day, 10 days ago": Filters(since=now - 10 * day, until=now - 9 * day),
        "search: channel sms + status failed": Filters(channel="sms", status="failed"),
    }
    for case, filters in searches.items():
        yield (case, *queries.search(filters, before=None, limit=50))
    page_two = queries.search(Filters(recipient=recipient), before=message, limit=50)
    yield ("search: page 2 of a recipient", *page_two)
    for case, sql in {
        "overview: queue depth": queries.DEPTH,
        "overview: last 24 h by status": queries.FINISHED,
        "overview: send rate": queries.SEND_RATE,
        "overview: bounce and complaint rates": queries.FEEDBACK,
        "overview: paused channels": queries.PAUSES,
    }.items():
        yield case, sql, []
    yield "message: the row", queries.MESSAGE, [message]
    yield "message: a pending row", queries.MESSAGE, [n - 100]
    yield "message: its events", queries.EVENTS, [message + 5]  # a bounced one
    yield "message: its person", queries.PERSON, ["u7"]
    yield "message: its webhook deliveries", queries.WEBHOOKS, [message]
    yield "suppressions: newest", queries.SUPPRESSIONS, [None, 200]
    yield "suppressions: one recipient", queries.SUPPRESSIONS, ["S7@example.com", 200]
    yield (
        "action: count retry of failed",
        *queries.count_for_action(Filters(status="failed"), "retry", 100_000),
    )
    yield (
        "action: requeue 1,000 (rolled back)",
        *queries.act_batch(Filters(status="pending"), "requeue", below=2**62, batch=1000),
    )
    yield (
        "action: retry 1,000 failed (rolled back)",
        *queries.act_batch(Filters(status="failed"), "retry", below=2**62, batch=1000),
    )
    yield (
        "action: cancel 50 chosen (rolled back)",
        queries.act_ids("cancel"),
        [list(range(n - 50, n))],
    )


def _indexes_used(plan: dict[str, Any]) -> list[str]:
    found: list[str] = []
    if "Index Name" in plan and plan["Index Name"] not in found:
        found.append(plan["Index Name"])
    for child in plan.get("Plans", []):
        found += [i for i in _indexes_used(child) if i not in found]
    return found


class _Rollback(Exception):
    """Leaves the transaction of an EXPLAIN ANALYZE: actions must change nothing."""


async def _explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> dict[str, Any]:
    text = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"
    result: dict[str, Any] = {}
    for _ in range(2):  # the second run is the warm one
        try:
            async with conn.transaction():
                raw = await conn.fetchval(text, *args)
                result = (json.loads(raw) if isinstance(raw, str) else raw)[0]
                raise _Rollback
        except _Rollback:
            pass
    return result


async def explain(
    dsn: str, n: int, *, archive_after_hours: float | None = None
) -> list[dict[str, Any]]:
    """Fill a scratch database beside ``dsn`` with ``n`` messages (archiving those finished
    more than ``archive_after_hours`` ago) and EXPLAIN ANALYZE every console query: rows
    of case, indexes, rows, ms."""
    async with db.scratch_database(dsn, f"outboxd_bench_{secrets.token_hex(4)}") as scratch:
        conn = await asyncpg.connect(scratch, server_settings={"statement_timeout": "0"})
        try:
            await migrations.migrate(conn)
            await console_data.fill(conn, n)
            if archive_after_hours is not None:
                await console_data.archive(conn, archive_after_hours)
            rows = []
            for case, sql, args in _cases(n):
                result = await _explain(conn, sql, args)
                plan = result["Plan"]
                rows.append({
                    "case": case,
                    "indexes": _indexes_used(plan),
                    "rows": int(plan.get("Actual Rows", 0)),
                    "ms": round(float(result["Execution Time"]), 3),
                    "planning_ms": round(float(result["Planning Time"]), 3),
                })  # fmt: skip
            return rows
        finally:
            await conn.close()


#: Which of 0015's indexes each variant has (by position in the migration).
VARIANTS = {"none": (), "0015": (0, 1, 2)}
#: With ``--split``: each search index alone.
SPLIT = {"recipient only": (0, 1), "notification only": (1, 2)}


async def _set_indexes(conn: asyncpg.Connection, wanted: tuple[int, ...]) -> None:
    for i, (name, statement) in enumerate(zip(_index_names(), _index_statements(), strict=True)):
        await conn.execute(statement if i in wanted else f"DROP INDEX IF EXISTS outbox.{name}")
    await conn.execute("VACUUM ANALYZE outbox.message")
    # Building an index writes its whole size to the WAL; without a checkpoint here, the
    # rounds after a CREATE INDEX (never those after a DROP) would pay for it.
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def _drain(store: Store) -> int:
    """Claim and complete (as sent) every due email, 500 at a time, as the daemon does."""
    done = 0
    while messages := await store.claim("email", 500, "bench", 300):
        completions = [Completion(m.id, m.attempts, Status.SENT, provider="null") for m in messages]
        done += await store.complete_many(completions, "bench")
    return done


async def _round(pool: asyncpg.Pool, rows: int) -> dict[str, float]:
    store = Store(pool)
    started = time.perf_counter()
    async with pool.acquire() as conn:
        for _ in range(rows // 1000):
            await conn.execute(FLOOR_ROWS, 1000)
    inserted = time.perf_counter() - started
    started = time.perf_counter()
    done = await _drain(store)
    drained = time.perf_counter() - started
    return {"insert": rows / inserted, "floor": done / drained}


async def indexes(
    dsn: str, n: int, reps: int, *, split: bool = False
) -> dict[str, dict[str, float]]:
    """Enqueue rate and claim + completion floor (rows/s, medians of ``reps`` alternating
    rounds) on a table of ``n`` messages, without ("none") and with ("0015") the indexes
    of migration 0015 (and, with ``split``, with each search index alone)."""
    variants = {**VARIANTS, **(SPLIT if split else {})}
    rows = max(1000, min(20_000, n // 50 // 1000 * 1000))
    async with db.scratch_database(dsn, f"outboxd_bench_{secrets.token_hex(4)}") as scratch:
        conn = await asyncpg.connect(scratch, server_settings={"statement_timeout": "0"})
        pool = await asyncpg.create_pool(scratch, min_size=1, max_size=2)
        try:
            await migrations.migrate(conn)
            await console_data.fill(conn, n)
            await _drain(Store(pool))  # the fill's own due rows, before any round
            results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            order = list(results)
            for rep in range(reps):
                # Each variant goes first in turn: no variant always follows the same one.
                for variant in order[rep % len(order) :] + order[: rep % len(order)]:
                    await _set_indexes(conn, variants[variant])
                    results[variant].append(await _round(pool, rows))
            return {
                variant: {
                    key: statistics.median(r[key] for r in rounds) for key in ("insert", "floor")
                }
                for variant, rounds in results.items()
            }
        finally:
            await pool.close()
            await conn.close()


def _report(rows: list[dict[str, Any]], costs: dict[str, dict[str, float]] | None) -> str:
    lines = ["| case | ms | planning ms | rows | indexes |", "|---|---:|---:|---:|---|"]
    for row in rows:
        used = ", ".join(row["indexes"]) or "(sequential or none)"
        lines.append(
            f"| {row['case']} | {row['ms']:.2f} | {row['planning_ms']:.2f} | {row['rows']} "
            f"| {used} |"
        )
    if costs:
        lines += ["", "| indexes | enqueue rows/s | claim + completion rows/s |", "|---|---:|---:|"]
        for variant, rates in costs.items():
            lines.append(f"| {variant} | {rates['insert']:,.0f} | {rates['floor']:,.0f} |")
        none = costs["none"]
        for variant, rates in costs.items():
            if variant != "none":
                lines.append(
                    f"\n{variant}: enqueue x{rates['insert'] / none['insert']:.3f}, "
                    f"claim + completion x{rates['floor'] / none['floor']:.3f} (against none)"
                )
    return "\n".join(lines)


async def _main(dsn: str, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    rows = await explain(dsn, args.messages, archive_after_hours=args.archive_after_hours)
    costs = (
        None
        if args.skip_indexes
        else await indexes(dsn, args.messages, args.reps, split=args.split)
    )
    print(_report(rows, costs))
    print(f"\n({args.messages:,} messages; {time.perf_counter() - started:.0f} s in all)")


def main(argv: list[str] | None = None) -> None:
    from daemon import settings as settings_module

    parser = argparse.ArgumentParser(prog="python -m daemon.bench.console", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3, help="rounds per index variant")
    parser.add_argument("--skip-indexes", action="store_true", help="only the EXPLAINs")
    parser.add_argument("--split", action="store_true", help="also each search index alone")
    parser.add_argument(
        "--archive-after-hours",
        type=float,
        help="archive messages finished longer ago than this before the EXPLAINs",
    )
    args = parser.parse_args(argv)
    dsn, _ = db.resolve_dsn(settings_module.load())
    asyncio.run(_main(dsn, args))


if __name__ == "__main__":
    main()
