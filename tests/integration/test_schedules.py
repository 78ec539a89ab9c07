"""Recurring schedules: refused at the INSERT when malformed, planned in the person's time
zone, each occurrence one notify() even with two daemons, catch-up after an outage."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from cronsim import CronSim, CronSimError
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.people.schedules import Scheduler
from daemon.people.store import PeopleStore
from outbox import upsert_recipient
from tests.integration.daemon_helpers import make_settings, running

MONDAY_9_NEW_YORK = datetime(2026, 3, 9, 13, tzinfo=UTC)  # 09:00 EDT, the day after the jump


async def add_person(conn: asyncpg.Connection, key: str = "u1", **fields: Any) -> None:
    await upsert_recipient(conn, key, email=f"{key}@example.com", **fields)


async def add_schedule(conn: asyncpg.Connection, **fields: Any) -> int:
    values: dict[str, Any] = {
        "name": "weekly",
        "recipient_key": "u1",
        "template": "weekly_summary",
        "cron": "0 9 * * 1",
        "context": json.dumps({"name": "Ann"}),
    }
    values.update(fields)
    columns = ", ".join(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    schedule_id: int = await conn.fetchval(
        f"INSERT INTO outbox.schedule ({columns}) VALUES ({placeholders}) RETURNING id",
        *values.values(),
    )
    return schedule_id


def scheduler(pool: asyncpg.Pool, catch_up: int = 1, batch: int = 200) -> Scheduler:
    return Scheduler(PeopleStore(pool), interval=60, catch_up=catch_up, batch=batch)


async def notifications(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM outbox.notification ORDER BY id")]


# Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "0 24 * * *"}, "cron '0 24 * * *' is invalid: the hour field '24' is not a list"),
        ({"cron": "0 9 * * 1 2026"}, "it has 6 fields, not the 5 of minute hour"),
        ({"cron": "*/0 * * * *"}, "the minute field '*/0'"),
        (
            {"cron": "0 9 * foo *"},
            "the month field 'foo' is not a list of values 1-12 (or jan-dec)",
        ),
        ({"cron": "0 9 30 2 *"}, "day-of-month 30 never occurs in month 2"),
        ({"cron": "0 9 L * *"}, "the day-of-month field 'L'"),
        ({"cron": "  "}, "cron '  ' is invalid: it is empty"),
        ({"recipient_key": "nobody"}, "recipient_key 'nobody' is not in outbox.recipient"),
        ({"template": ""}, "template is empty"),
        ({"name": " "}, "name is empty"),
        ({"category": "*"}, "category must be a name, got '*'"),
        ({"priority": 4}, "priority must be an integer 0..3, got 4"),
        ({"context": "[1]"}, "context must be a JSON object, got array"),
    ],
)
async def test_a_bad_schedule_is_refused_at_the_insert_with_a_clear_error(
    pool: asyncpg.Pool, fields: dict[str, Any], message: str
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        with pytest.raises(asyncpg.InvalidParameterValueError) as raised:
            await add_schedule(conn, **fields)
    assert message in str(raised.value)
    assert str(raised.value).startswith("outbox.schedule: ")


async def test_an_unknown_time_zone_is_refused_where_the_person_is_written(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidParameterValueError, match="not a known IANA time zone"):
            await add_person(conn, timezone="Mars/Olympus")


_FIELD_ITEMS = st.one_of(
    st.just("*"),
    st.integers(0, 70).map(str),
    st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda r: f"{r[0]}-{r[1]}"),
    st.sampled_from(["jan", "DEC", "mon", "Sun", "sat-mon", "mon-fri", "x", "", "7", "1#2"]),
)
_FIELDS = st.tuples(_FIELD_ITEMS, st.one_of(st.none(), st.integers(0, 70))).map(
    lambda t: t[0] if t[1] is None else f"{t[0]}/{t[1]}"
)
_EXPRESSIONS = st.lists(st.lists(_FIELDS, min_size=1, max_size=3).map(",".join),
                        min_size=4, max_size=6).map(" ".join)  # fmt: skip


def test_the_sql_check_accepts_exactly_what_the_daemons_parser_does(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:

        @settings(max_examples=400, deadline=None)
        @given(_EXPRESSIONS)
        def agree(expression: str) -> None:
            row = conn.execute("SELECT outbox.cron_problem(%s)", (expression,)).fetchone()
            assert row is not None
            try:
                CronSim(expression, datetime(2026, 1, 1, tzinfo=UTC))
                parsed = len(expression.split()) == 5 and "#" not in expression
            except CronSimError:
                parsed = False
            assert (row[0] is None) == parsed, (expression, row[0])

        agree()


# Planning and firing ---------------------------------------------------------------------


async def test_a_schedule_fires_at_its_local_time_as_one_idempotent_notify(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, timezone="America/New_York")
        sid = await add_schedule(conn, category="reports", priority=2)
        written = await conn.fetchval("SELECT updated_at FROM outbox.schedule")
    # Planned from the moment it was written: the next Monday 09:00 New York time.
    assert await scheduler(pool).fire_due(as_of=written) == 0
    next_at = await pool.fetchval("SELECT next_at FROM outbox.schedule")
    assert next_at > written and next_at.astimezone(UTC).minute == 0
    assert next(CronSim("0 9 * * 1", written.astimezone(_zone("America/New_York")))) == next_at

    await pool.execute("UPDATE outbox.schedule SET next_at = $1", MONDAY_9_NEW_YORK)
    assert await scheduler(pool).fire_due(as_of=MONDAY_9_NEW_YORK - timedelta(seconds=1)) == 0
    assert await scheduler(pool).fire_due(as_of=MONDAY_9_NEW_YORK + timedelta(seconds=2)) == 1
    [made] = await notifications(pool)
    assert made["idempotency_key"] == f"schedule:{sid}:2026-03-09T13:00:00Z"
    assert (made["recipient_key"], made["template"]) == ("u1", "weekly_summary")
    assert (made["category"], made["priority"]) == ("reports", 2)
    assert json.loads(made["context"]) == {"name": "Ann", "scheduled_for": "2026-03-09T13:00:00Z"}
    row = await pool.fetchrow("SELECT * FROM outbox.schedule")
    assert row["next_at"] == datetime(2026, 3, 16, 13, tzinfo=UTC)
    assert (row["last_fired_at"], row["last_error"]) == (MONDAY_9_NEW_YORK, None)
    # Firing the same occurrence again (as a second daemon would) creates nothing.
    await pool.execute("UPDATE outbox.schedule SET next_at = $1", MONDAY_9_NEW_YORK)
    await scheduler(pool).fire_due(as_of=MONDAY_9_NEW_YORK + timedelta(seconds=3))
    assert len(await notifications(pool)) == 1


async def test_two_daemons_at_once_fire_each_occurrence_once(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbox.recipient (key, email)"
            " SELECT 'p' || i, 'p' || i || '@example.com' FROM generate_series(1, 300) AS i"
        )
        await conn.execute(
            "INSERT INTO outbox.schedule (name, recipient_key, template, cron, next_at)"
            " SELECT 'daily', 'p' || i, 'daily', '0 9 * * *', $1 FROM generate_series(1, 300) i",
            datetime(2026, 6, 1, 9, tzinfo=UTC),
        )
    other = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    at = datetime(2026, 6, 1, 9, 0, 5, tzinfo=UTC)
    try:
        fired = await asyncio.gather(
            scheduler(pool, batch=20).fire_due(as_of=at),
            scheduler(other, batch=20).fire_due(as_of=at),
        )
    finally:
        await other.close()
    assert sum(fired) == 300
    keys = [n["idempotency_key"] for n in await notifications(pool)]
    assert len(keys) == len(set(keys)) == 300
    assert await pool.fetchval(
        "SELECT count(*) FROM outbox.schedule WHERE next_at = '2026-06-02 09:00Z'"
    ) == 300  # fmt: skip


async def test_a_daemon_that_was_down_catches_up_to_the_limit_and_says_what_it_skipped(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        sid = await add_schedule(
            conn, cron="0 * * * *", next_at=datetime(2026, 6, 1, 4, tzinfo=UTC)
        )
    with caplog.at_level(logging.WARNING, logger="daemon.people.schedules"):
        fired = await scheduler(pool, catch_up=2).fire_due(
            as_of=datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
        )
    assert fired == 2
    keys = [n["idempotency_key"] for n in await notifications(pool)]
    assert keys == [f"schedule:{sid}:2026-06-01T08:00:00Z", f"schedule:{sid}:2026-06-01T09:00:00Z"]
    assert f"schedule {sid}: skipped 4 missed occurrences older than the newest 2" in caplog.text
    assert await pool.fetchval("SELECT next_at FROM outbox.schedule") == datetime(
        2026, 6, 1, 10, tzinfo=UTC
    )


async def test_a_disabled_schedule_waits_and_enabling_it_plans_afresh_from_then(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await add_schedule(conn, cron="0 * * * *", next_at=datetime(2026, 6, 1, 4, tzinfo=UTC),
                           enabled=False)  # fmt: skip
    assert await scheduler(pool).fire_due(as_of=datetime(2026, 6, 1, 9, 30, tzinfo=UTC)) == 0
    await pool.execute("UPDATE outbox.schedule SET enabled = true")
    row = await pool.fetchrow("SELECT next_at, updated_at FROM outbox.schedule")
    assert row["next_at"] is None  # no catch-up for the time it was off
    await scheduler(pool).fire_due(as_of=row["updated_at"])
    assert await notifications(pool) == []
    assert await pool.fetchval("SELECT next_at FROM outbox.schedule") > row["updated_at"]


async def test_editing_the_cron_or_the_persons_time_zone_plans_afresh(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, timezone="Europe/Berlin")
        await add_schedule(conn, next_at=datetime(2030, 1, 7, 8, tzinfo=UTC))
        await conn.execute("UPDATE outbox.schedule SET last_error = 'x', context = '{\"a\": 1}'")
        row = await conn.fetchrow("SELECT * FROM outbox.schedule")
        assert (row["last_error"], row["next_at"]) == (None, datetime(2030, 1, 7, 8, tzinfo=UTC))
        await conn.execute("UPDATE outbox.schedule SET cron = '0  10 * * 1'")
        row = await conn.fetchrow("SELECT * FROM outbox.schedule")
        assert (row["cron"], row["next_at"]) == ("0 10 * * 1", None)
        await conn.execute("UPDATE outbox.schedule SET next_at = '2030-01-07 09:00Z'")
        await upsert_recipient(conn, "u1", email="u1@example.com", timezone="Asia/Tokyo")
        assert await conn.fetchval("SELECT next_at FROM outbox.schedule") is None
    await scheduler(pool).fire_due()
    planned = await pool.fetchval("SELECT next_at FROM outbox.schedule")
    assert planned.astimezone(_zone("Asia/Tokyo")).hour == 10


async def test_a_schedule_whose_notify_fails_records_why_and_the_others_still_fire(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        for name, template in [("a", "fine"), ("b", "broken"), ("c", "fine")]:
            await add_schedule(conn, name=name, template=template, cron="0 9 * * *",
                               next_at=datetime(2026, 6, 1, 9, tzinfo=UTC))  # fmt: skip
    # Stands for anything that makes notify() fail for one schedule.
    await pool.execute("""
        CREATE FUNCTION public.refuse_broken() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.template = 'broken' THEN
                RAISE EXCEPTION 'template % is switched off', NEW.template;
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_broken BEFORE INSERT ON outbox.notification
            FOR EACH ROW EXECUTE FUNCTION public.refuse_broken();
    """)  # fmt: skip
    fired = await scheduler(pool).fire_due(as_of=datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC))
    assert fired == 2
    assert [n["template"] for n in await notifications(pool)] == ["fine", "fine"]
    errors = dict(await pool.fetch("SELECT name, last_error FROM outbox.schedule ORDER BY name"))
    assert errors["a"] is None and errors["c"] is None
    assert errors["b"] == "notify() failed: template broken is switched off"
    # It waits until someone edits it, instead of failing every poll.
    assert await scheduler(pool).fire_due(as_of=datetime(2026, 6, 2, 9, 0, 1, tzinfo=UTC)) == 2
    await pool.execute("DROP TRIGGER refuse_broken ON outbox.notification")
    await pool.execute("UPDATE outbox.schedule SET template = 'fixed' WHERE name = 'b'")
    assert await scheduler(pool).fire_due(as_of=datetime(2026, 6, 2, 9, 0, 2, tzinfo=UTC)) == 1


async def test_the_daemon_fires_due_schedules_and_sends_them(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        context = {"name": "Ann", "stats": [{"label": "Earnings", "value": "$1,234"}],
                   "dashboard_url": "https://app.example/d"}  # fmt: skip
        await add_schedule(conn, context=json.dumps(context),
                           next_at=datetime(2026, 6, 1, 9, tzinfo=UTC))  # fmt: skip
    settings = make_settings(database_url, tmp_path)
    async with running(settings, database_url) as (_, recorder):
        await recorder.wait_for(1, within=30)
    [message] = await pool.fetch("SELECT * FROM outbox.message WHERE channel = 'email'")
    assert (message["template"], message["status"]) == ("weekly_summary", "sent")


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


async def test_the_readme_example_runs_as_written(pool: asyncpg.Pool) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Digests and recurring schedules", 1)[1]
    example = section.split("```sql\n", 1)[1].split("```", 1)[0]
    for _ in range(2):  # and again: the upserts hold (and a second item joins the group)
        await pool.execute(example)
    rows = await pool.fetch("SELECT status, digest_key FROM outbox.message ORDER BY id")
    assert {tuple(r) for r in rows} == {("batched", "comments:post-7")}
    await scheduler(pool).fire_due()
    row = await pool.fetchrow("SELECT * FROM outbox.schedule")
    assert (row["category"], row["last_error"]) == ("reports", None)
    assert row["next_at"].astimezone(_zone("Europe/Berlin")).strftime("%a %H:%M") == "Mon 09:00"
