"""``outboxd bench --retention`` (or ``python -m daemon.bench.retention``): what a long life
of sends leaves behind, against a fresh database, in one run.

Three throwaway databases:

* **fresh** - migrated, nothing sent;
* **archive** - ``--sends`` messages inserted pending, claimed and completed through the
  daemon's own claim and completion queries in chunks, each chunk moved to the archive by
  ``outbox.archive_messages`` (the maintenance loop with a zero archive delay), then the
  retention purge drops the archive partitions holding them (a cutoff in the future stands
  for the months passing);
* **delete** (unless ``--no-delete``) - the same sends kept in outbox.message, then the
  older half purged row by row (``purge_messages``, as before migration 0016): the old way.

Both aged sides are vacuumed after the sends and after the purge, as autovacuum would (and
after every 50,000 sends when the server runs without autovacuum).

Then in each: outbox.message's table and index sizes, and the claim floor (claim 500 +
one batched completion) over ``--claim-rows`` new pending rows, three rounds alternating
between the databases (the median counts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import asyncpg

from daemon import db
from daemon.bench import phases
from daemon.delivery.retention import Retention
from outbox.models import Status
from outbox.store import Completion, Store

_CHUNK = 50_000
_ROUNDS = 3
_INSERT = """
INSERT INTO outbox.message (channel, recipient, template, context, tags)
SELECT 'email', 'user' || g || '@example.com', 'welcome',
       jsonb_build_object('name', 'User ' || g,
                          'login_url', 'https://app.example.com/login?u=' || g),
       '{"campaign": "bench"}'
  FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS g
"""
_SIZES = """
SELECT pg_relation_size('outbox.message') AS heap,
       pg_indexes_size('outbox.message') AS indexes,
       pg_total_relation_size('outbox.message') AS total,
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'outbox.message'::regclass)
           AS dead_rows,
       coalesce((SELECT sum(pg_total_relation_size(i.inhrelid))
                   FROM pg_inherits i WHERE i.inhparent = 'outbox.message_archive'::regclass),
                0)::bigint AS archive_total,
       pg_total_relation_size('outbox.message_key') AS keys_total
"""


async def _send(pool: asyncpg.Pool, first: int, count: int) -> None:
    """Insert ``count`` pending rows and claim and complete them all (the floor's path)."""
    store = Store(pool)
    await pool.execute(_INSERT, first, count)
    while claimed := await store.claim("email", 500, "bench-retention", 60):
        await store.complete_many(
            [Completion(m.id, m.attempts, Status.SENT, provider="null") for m in claimed],
            "bench-retention",
        )


async def _life(dsn: str, sends: int, *, archive: bool) -> dict[str, Any]:
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    try:
        retention = Retention(pool)
        autovacuum = await pool.fetchval("SELECT current_setting('autovacuum')::boolean")
        started = time.perf_counter()
        archive_seconds = 0.0
        for first in range(0, sends, _CHUNK):
            await _send(pool, first, min(_CHUNK, sends - first))
            if archive:
                t = time.perf_counter()
                await retention.archive(0)
                archive_seconds += time.perf_counter() - t
            if not autovacuum:
                # What autovacuum does on a production server, here where it is off.
                await pool.execute("VACUUM outbox.message")
            done = min(first + _CHUNK, sends)
            rate = done / (time.perf_counter() - started)
            print(f"  {done:>12,} sent ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        sending = time.perf_counter() - started
        # What autovacuum would have done by now, on both sides alike.
        await pool.execute("VACUUM outbox.message")
        before = dict(await pool.fetchrow(_SIZES))
        t = time.perf_counter()
        if archive:
            # Every partition so far counts as past the retention: the months have passed.
            result = await retention.purge(-40 * 86400)
            purged = {"partitions": list(result.partitions), "rows": result.messages}
        else:
            # A retention that keeps the newer half, the older half deleted row by row.
            age = await pool.fetchval(
                "SELECT extract(epoch FROM now() - updated_at) FROM outbox.message "
                "ORDER BY id OFFSET $1 LIMIT 1",
                sends // 2,
            )
            store = Store(pool)
            rows = 0
            while True:
                m, _ = await store.purge(float(age), 1000)
                rows += m
                if m < 1000:
                    break
            purged = {"rows": rows}
        await pool.execute("VACUUM outbox.message")
        purge_seconds = time.perf_counter() - t
    finally:
        await pool.close()
    return {
        "autovacuum": autovacuum,
        "sends": sends,
        "send_seconds": round(sending, 1),
        "archive_seconds": round(archive_seconds, 1),
        "before_purge": before,
        "purge_seconds": round(purge_seconds, 2),
        "purged": purged,
    }


async def _claim_round(dsn: str, first: int, rows: int) -> float:
    """Claim and complete ``rows`` new pending rows; the rate."""
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    try:
        store = Store(pool)
        await pool.execute(_INSERT, first, rows)
        done = 0
        started = time.perf_counter()
        while claimed := await store.claim("email", 500, "bench-floor", 60):
            await store.complete_many(
                [Completion(m.id, m.attempts, Status.SENT, provider="null") for m in claimed],
                "bench-floor",
            )
            done += len(claimed)
        return done / (time.perf_counter() - started)
    finally:
        await pool.close()


async def _sizes(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return dict(await conn.fetchrow(_SIZES))
    finally:
        await conn.close()


async def run(admin_dsn: str, sends: int, claim_rows: int, delete: bool) -> dict[str, Any]:
    """The whole comparison; the databases are dropped afterwards."""
    sides = ["fresh", "archive", *(["delete"] if delete else [])]
    result: dict[str, Any] = {"sends": sends, "claim_rows": claim_rows}
    async with (
        phases.throwaway_database(admin_dsn) as fresh,
        phases.throwaway_database(admin_dsn) as archived,
        phases.throwaway_database(admin_dsn) as deleted,
    ):
        dsns = {"fresh": fresh, "archive": archived, "delete": deleted}
        for side in sides:
            await phases.migrate(dsns[side])
        for side in sides[1:]:
            print(f"{side}: {sends:,} sends", file=sys.stderr, flush=True)
            result[f"{side}_life"] = await _life(dsns[side], sends, archive=side == "archive")
        for side in sides:
            result[side] = {"sizes": await _sizes(dsns[side]), "claim_rates": []}
        # Rounds alternate between the databases, so that a busy moment of the machine
        # does not fall on one side only; the median counts.
        for n in range(_ROUNDS):
            for side in sides:
                rate = await _claim_round(dsns[side], (n + 1) * 10**12, claim_rows)
                result[side]["claim_rates"].append(round(rate))
        for side in sides:
            result[side]["claim_rate"] = round(statistics.median(result[side]["claim_rates"]))
    return result


def format_result(result: dict[str, Any]) -> str:
    mib = 1024 * 1024
    lines = [
        f"outboxd bench --retention: {result['sends']:,} sends, then a purge; "
        f"claim floor over {result['claim_rows']:,} new rows"
    ]
    lines.append(
        f"  {'':<10}{'heap MiB':>10}{'index MiB':>11}{'total MiB':>11}{'dead rows':>11}"
        f"{'claim/s':>10}{'vs fresh':>10}   (rounds)"
    )
    fresh_rate = result["fresh"]["claim_rate"]
    for side in ("fresh", "archive", "delete"):
        if side not in result:
            continue
        s = result[side]["sizes"]
        rate = result[side]["claim_rate"]
        lines.append(
            f"  {side:<10}{s['heap'] / mib:>10.1f}{s['indexes'] / mib:>11.1f}"
            f"{s['total'] / mib:>11.1f}{s['dead_rows'] or 0:>11,}{rate:>10,}"
            f"{rate / fresh_rate:>10.2f}   "
            + ", ".join(f"{r:,}" for r in result[side]["claim_rates"])
        )
    for side in ("archive", "delete"):
        life = result.get(f"{side}_life")
        if life:
            before = life["before_purge"]
            lines.append(
                f"  {side}: sends took {life['send_seconds']}s"
                f"{'' if life['autovacuum'] else ' (autovacuum off: VACUUM every 50,000)'}"
                f" (archiving "
                f"{life['archive_seconds']}s); before the purge (vacuumed) outbox.message "
                f"{before['total'] / mib:.1f} MiB, archive {before['archive_total'] / mib:.1f} "
                f"MiB; purge took {life['purge_seconds']}s: {life['purged']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from daemon.settings.loading import load

    parser = argparse.ArgumentParser(prog="python -m daemon.bench.retention")
    add_arguments(parser)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = load()
    return print_run(settings, args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sends", type=int, default=10_000_000, help="sends to age by (10M)")
    parser.add_argument("--claim-rows", type=int, default=100_000, help="claim floor rows")
    parser.add_argument(
        "--no-delete", action="store_true", help="leave out the row-by-row purge comparison"
    )


def print_run(settings: Any, args: argparse.Namespace) -> int:
    dsn, _ = db.resolve_dsn(settings)
    result = asyncio.run(run(dsn, args.sends, args.claim_rows, not args.no_delete))
    print(json.dumps(result, indent=2, default=str) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
