"""``outboxd bench --digests``: the digest flush against the raw SQL floor of the same
grouping, and the claim rate with and without a large batched backlog, in one run.

1. flush - N batched items of G people, all due, folded by the daemon's flush
   (:class:`daemon.people.digests.DigestFlusher`: chunks of groups, advisory locks, row
   locks, expiry, quiet hours, template choice) and, on the same rows afresh, by one bare
   ``INSERT ... SELECT ... GROUP BY`` + ``UPDATE``: the least any flush can do;
2. claim - the SQL floor of claiming (claim 500 + batched completion) over a backlog of
   due rows in two databases, one of them also holding M rows that wait ``batched`` for a
   day, measured in turns.

Each side reports wall time and CPU time: of this process, and of its own server
backends when the server runs on this host (read from /proc). On a shared, busy machine
the wall-clock ratios swing from run to run; CPU per item hardly does.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from daemon import db
from daemon.bench import phases, support
from daemon.people.digests import DigestFlusher, DigestTemplates
from daemon.people.store import PeopleStore
from daemon.settings import PeopleSettings
from outbox import resources
from outbox.models import Status
from outbox.store import Completion, Store

#: Turns of the claim floor per side (the best wall time and the median CPU count).
CLAIM_ROUNDS = 3

_PEOPLE = """
INSERT INTO outbox.recipient (key, email)
SELECT 'b' || g, 'b' || g || '@example.com' FROM generate_series(0, $1 - 1) AS g
ON CONFLICT DO NOTHING
"""

# Items as notify() leaves them: one person each, context with a title, the window closed
# (or, for the claim phase, closing tomorrow).
_BATCHED = """
INSERT INTO outbox.message
    (channel, recipient, template, context, category, priority, not_before, status,
     recipient_key, notification_id, digest_key, digest_window)
SELECT 'email', 'b' || (i % $2) || '@example.com', 'comment',
       jsonb_build_object('title', 'Comment ' || i, 'url', 'https://app.example/c/' || i),
       'social', 1, now() + $3 * interval '1 second', 'batched', 'b' || (i % $2), i,
       'post', interval '10 minutes'
  FROM generate_series(1, $1) AS i
"""

# The floor: the same grouping, context and bookkeeping in one bare statement: no locks,
# no chunks, no expiry, quiet hours or template choice.
_FLOOR = """
WITH made AS (
    INSERT INTO outbox.message
        (channel, recipient, template, context, category, priority, status, recipient_key,
         digest_key)
    SELECT channel, min(recipient), 'digest',
           jsonb_build_object(
               'items', jsonb_agg(
                   context || jsonb_build_object('created_at', to_char(
                       created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                   ORDER BY created_at, id),
               'count', count(*)),
           min(category), max(priority), 'pending', recipient_key, digest_key
      FROM outbox.message
     WHERE status = 'batched'
     GROUP BY recipient_key, channel, digest_key
    RETURNING id, recipient_key, channel, digest_key
)
UPDATE outbox.message m
   SET status = 'digested', digest_message_id = made.id, updated_at = now()
  FROM made
 WHERE m.status = 'batched' AND m.recipient_key = made.recipient_key
   AND m.channel = made.channel AND m.digest_key = made.digest_key
"""


@dataclass(frozen=True, slots=True)
class Spent:
    """Wall seconds, and CPU seconds of this process and of the given server backends."""

    seconds: float
    cpu: float | None

    @classmethod
    async def measure(cls, backends: list[int], work: Any) -> tuple[Spent, Any]:
        before_cpu, before = _cpu(backends), time.perf_counter()
        result = await work
        seconds, after_cpu = time.perf_counter() - before, _cpu(backends)
        cpu = None if before_cpu is None or after_cpu is None else after_cpu - before_cpu
        return cls(seconds, cpu), result


def _cpu(backends: list[int]) -> float | None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    for pid in backends:
        times = support._proc_times(pid)
        if times is None:
            return None  # a server elsewhere: wall time only
        total += times[1]
    return total


async def run(admin_dsn: str, items: int, groups: int, batched: int, claims: int) -> dict[str, Any]:
    """Both phases, in throwaway databases."""
    result: dict[str, Any] = {}
    async with phases.throwaway_database(admin_dsn) as dsn:
        await phases.migrate(dsn)
        result["flush"] = await flush(dsn, items, groups)
    async with (
        phases.throwaway_database(admin_dsn) as alone,
        phases.throwaway_database(admin_dsn) as beside,
    ):
        await phases.migrate(alone)
        await phases.migrate(beside)
        result["claim"] = await claim_beside_batched(alone, beside, batched, claims)
    return result


async def flush(dsn: str, items: int, groups: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_PEOPLE, groups)
        await _fill(conn, items, groups, due_in=-60)
        floor, _ = await Spent.measure([await _pid(conn)], conn.execute(_FLOOR))
        folded = await conn.fetchval(
            "SELECT count(*) FROM outbox.message WHERE status = 'digested'"
        )
        await _fill(conn, items, groups, due_in=-60)
    finally:
        await conn.close()
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    try:
        flusher = DigestFlusher(
            PeopleStore(pool),
            DigestTemplates([resources.bundled_templates_dir()]),
            interval=60,
            batch=PeopleSettings().digest_batch,
        )
        ours, counts = await Spent.measure([await _pid(pool)], flusher.flush_due())
    finally:
        await pool.close()
    return {
        "items": counts.items,
        "digests": counts.digests,
        "seconds": round(ours.seconds, 3),
        "rate": counts.items / ours.seconds,
        "floor_items": folded,
        "floor_seconds": round(floor.seconds, 3),
        "floor_rate": folded / floor.seconds,
        "ratio": floor.seconds / ours.seconds,
        "cpu_us": _per_item(ours.cpu, counts.items),
        "floor_cpu_us": _per_item(floor.cpu, folded),
        "cpu_ratio": None if not (floor.cpu and ours.cpu) else floor.cpu / ours.cpu,
    }


async def claim_beside_batched(
    alone: str, beside: str, batched: int, claims: int
) -> dict[str, Any]:
    """The claim floor over ``claims`` due rows in ``alone`` and, in turns, in ``beside``,
    which also holds ``batched`` rows waiting for tomorrow."""
    conn = await asyncpg.connect(beside)
    try:
        await conn.execute(_PEOPLE, 10_000)
        await conn.execute(_BATCHED, batched, 10_000, 86_400.0)
    finally:
        await conn.close()
    runs: dict[str, list[Spent]] = {"alone": [], "beside": []}
    for _ in range(CLAIM_ROUNDS):
        for side, dsn in (("alone", alone), ("beside", beside)):
            await phases.fill_due(dsn, claims)
            runs[side].append(await _claim_floor(dsn))
    best = {side: claims / min(s.seconds for s in spent) for side, spent in runs.items()}
    cpu = {side: _median_cpu_us(spent, claims) for side, spent in runs.items()}
    return {
        "rows": claims,
        "batched": batched,
        "rate_alone": best["alone"],
        "rate_beside_batched": best["beside"],
        "ratio": best["beside"] / best["alone"],
        "cpu_us_alone": cpu["alone"],
        "cpu_us_beside_batched": cpu["beside"],
        "cpu_ratio": None if not (cpu["alone"] and cpu["beside"]) else cpu["alone"] / cpu["beside"],
    }


async def _claim_floor(dsn: str) -> Spent:
    """Claim 500 + one batched completion until nothing is due, as phases.floor does."""
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    try:
        store = Store(pool)

        async def drain() -> None:
            while claimed := await store.claim("email", 500, "bench-floor", 60):
                await store.complete_many(
                    [Completion(m.id, m.attempts, Status.SENT, provider="null") for m in claimed],
                    "bench-floor",
                )

        spent, _ = await Spent.measure([await _pid(pool)], drain())
    finally:
        await pool.close()
    return spent


def _per_item(cpu: float | None, items: int) -> float | None:
    return None if cpu is None else round(cpu * 1e6 / max(items, 1), 2)


def _median_cpu_us(spent: list[Spent], items: int) -> float | None:
    values = sorted(s.cpu for s in spent if s.cpu is not None)
    return _per_item(values[len(values) // 2], items) if values else None


async def _pid(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The server process of ``conn`` if it runs on this host, else -1."""
    pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    return pid if _is_postgres(pid) else -1


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("postgres")
    except OSError:
        return False


async def _fill(conn: asyncpg.Connection, items: int, groups: int, *, due_in: float) -> None:
    await conn.execute("TRUNCATE outbox.message CASCADE")
    await conn.execute(_BATCHED, items, groups, float(due_in))
    await conn.execute("VACUUM ANALYZE outbox.message")
