"""The people layer in ``outboxd bench``: what a ``notify`` costs against the ``enqueue``
calls it stands for, and a backlog of which a share comes from ``notify``.

Both are measured in the bench's throwaway database beside the plain phases, so that their
ratios come from one run on one machine state.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from daemon.bench import phases, support

#: People the bench notifies, round robin: each has an email address and a phone number.
PEOPLE = 1000
#: Category of the timed notify calls: not transactional, so every rule of notify runs
#: (the person's switches, quiet hours, the hourly cap setting), though none holds a row.
CATEGORY = "reminders"

_PEOPLE = """
INSERT INTO outbox.recipient (key, email, phone, attrs)
SELECT 'bench' || g, 'person' || g || '@example.com', '+1415555' || lpad(g::text, 4, '0'),
       jsonb_build_object('first_name', 'Person ' || g)
  FROM generate_series(0, $1 - 1) AS g
ON CONFLICT (key) DO NOTHING
"""
_CONTEXT = "jsonb_build_object('name', 'User ' || {n}, 'login_url', 'https://app.example.com/login?u=' || {n})"  # noqa: E501
#: One three-channel notify (the urgent tier: sms, email, inapp) ...
_NOTIFY = f"""
SELECT outbox.notify(recipient_key => 'bench' || ($1::integer % {PEOPLE}), template => 'welcome',
                     category => '{CATEGORY}', priority => 3,
                     context => {_CONTEXT.format(n="$1::integer")})
"""
#: ... against three enqueue calls in one statement: as many round trips and commits, so
#: the ratio is the database's work alone. outbox.enqueue makes no in-app rows: the
#: third is a second email.
_ENQUEUE = (
    "outbox.enqueue(channel => '{channel}', recipient => {recipient}, template => 'welcome',"
    f" category => '{CATEGORY}', priority => 3, context => {_CONTEXT.format(n='$1::integer')})"
)
_ENQUEUE_3 = "SELECT " + ", ".join(
    _ENQUEUE.format(channel=channel, recipient=recipient)
    for channel, recipient in (
        ("sms", "'+14155550000'"),
        ("email", "'p' || $1::integer || '@example.com'"),
        ("email", "'q' || $1::integer || '@example.com'"),
    )
)
#: Priority 1: each notify makes an email and an in-app row. The category is notify's
#: default, as the plain backlog's rows have enqueue's: the two backlogs differ only in
#: where their rows come from. (A non-transactional category adds, for either, an
#: unsubscribe link and headers, and for a person's row one probe of their switches.)
_FILL_NOTIFY = f"""
SELECT count(outbox.notify(recipient_key => 'bench' || (g % {PEOPLE}), template => 'welcome',
                           context => {_CONTEXT.format(n="g")}))
  FROM generate_series(1, $1) AS g
"""


async def add_people(conn: asyncpg.Connection) -> None:
    await conn.execute(_PEOPLE, PEOPLE)
    await conn.execute("ANALYZE outbox.recipient")


async def notify_cost(dsn: str, calls: int, block: int = 100) -> dict[str, Any]:
    """Microseconds per three-channel notify and per three enqueue calls, alternating in
    blocks so that both see the same machine; each call is its own transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        await add_people(conn)
        first: int = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox.message")
        meter = await support.CpuMeter.of(conn)
        spent = {"notify": 0.0, "enqueue": 0.0}
        database = {"notify": 0.0, "enqueue": 0.0}
        for start in range(0, calls, block):
            for side, statement in (("notify", _NOTIFY), ("enqueue", _ENQUEUE_3)):
                before, started = meter.read(), time.perf_counter()
                for n in range(start, min(start + block, calls)):
                    await conn.fetchval(statement, n)
                spent[side] += time.perf_counter() - started
                after = meter.read()
                if after.database is not None and before.database is not None:
                    database[side] += after.database - before.database
        rows = await conn.fetchval("SELECT count(*) FROM outbox.message WHERE id > $1", first)
        await conn.execute("DELETE FROM outbox.message WHERE id > $1", first)
        await conn.execute("TRUNCATE outbox.notification")
    finally:
        await conn.close()
    result = {
        "calls": calls,
        "rows": rows,
        "notify_us": spent["notify"] * 1e6 / calls,
        "enqueue3_us": spent["enqueue"] * 1e6 / calls,
    }
    result["ratio"] = result["notify_us"] / result["enqueue3_us"]
    if database["enqueue"]:
        result["postgres_cpu_ratio"] = database["notify"] / database["enqueue"]
    return result


async def fill_mixed(dsn: str, count: int, share: float) -> dict[str, int]:
    """A due backlog of ``count`` rows, ``share`` of them from notify (email + in-app)."""
    notifies = round(count * share / 2)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM outbox.message WHERE not_before <= now()")
        await conn.execute("TRUNCATE outbox.inbox, outbox.notification")
        await add_people(conn)
        await conn.execute("VACUUM ANALYZE outbox.message")
    finally:
        await conn.close()
    await phases.fill(dsn, count - 2 * notifies)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.fetchval(_FILL_NOTIFY, notifies)
        await conn.execute("ANALYZE outbox.message")
    finally:
        await conn.close()
    return {"enqueued": count - 2 * notifies, "notified": notifies, "notify_rows": 2 * notifies}
