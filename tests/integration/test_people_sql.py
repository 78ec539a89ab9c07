"""The people layer in SQL: outbox.recipient, tiers, preferences and outbox.notify().

Every time is given explicitly (``not_before``, ``dnd_until``), so no test depends on the
hour it runs at.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

from outbox import notify, notify_cursor, upsert_recipient, upsert_recipient_cursor
from outbox.store import Store
from tests.integration.lock_waits import wait_until_blocked

T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # 14:00 in Berlin: outside any test window


async def add_person(conn: asyncpg.Connection, key: str = "u1", **fields: object) -> None:
    profile: dict[str, object] = {"email": "ann@example.com", "phone": "+14155550100"}
    profile.update(fields)
    await upsert_recipient(conn, key, **profile)  # type: ignore[arg-type]


async def messages(conn: asyncpg.Connection, notification_id: int) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT * FROM outbox.message WHERE notification_id = $1 ORDER BY id", notification_id
    )
    return {row["channel"]: row for row in rows}


async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM outbox.notification) AS n,"
        " (SELECT count(*) FROM outbox.message) AS m"
    )
    return row["n"], row["m"]


# Fan-out ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "channels"),
    [
        (3, {"sms", "email", "inapp"}),
        (2, {"sms", "inapp"}),
        (1, {"email", "inapp"}),
        (0, {"inapp"}),
    ],
)
async def test_fan_out_follows_the_priority_tier(
    pool: asyncpg.Pool, priority: int, channels: set[str]
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, locale="fr", attrs={"plan": "pro"})
        nid = await notify(
            conn, recipient_key="u1", template="booking/changed", priority=priority,
            context={"ref": "B-7"}, tags={"campaign": "x"}, not_before=T0,
        )  # fmt: skip
        rows = await messages(conn, nid)
        notification = await conn.fetchrow("SELECT * FROM outbox.notification WHERE id = $1", nid)
    assert set(rows) == channels
    addresses = {"email": "ann@example.com", "sms": "+14155550100", "inapp": "u1"}
    for channel, row in rows.items():
        assert row["recipient"] == addresses[channel]
        assert (row["status"], row["locale"], row["recipient_key"]) == ("pending", "fr", "u1")
        assert (row["priority"], row["category"], row["not_before"]) == (
            priority,
            "transactional",
            T0,
        )
        assert json.loads(row["context"]) == {"ref": "B-7"}
        assert json.loads(row["tags"]) == {"campaign": "x"}
        assert row["deferred_reason"] is None
    assert notification["template"] == "booking/changed"
    assert set(notification["channels"]) == channels


async def test_channels_override_the_tier_and_repeats_count_once(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        nid = await notify(conn, recipient_key="u1", template="t", priority=0,
                           channels=["sms", "email", "sms"])  # fmt: skip
        rows = await messages(conn, nid)
    assert list(rows) == ["sms", "email"]


async def test_a_channel_without_an_address_is_skipped_not_failed(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, phone=None, email="  ")  # blank is missing
        nid = await notify(conn, recipient_key="u1", template="t", priority=3)
        rows = await messages(conn, nid)
        skipped = await conn.fetchval("SELECT skipped FROM outbox.notification WHERE id = $1", nid)
    assert list(rows) == ["inapp"]
    assert json.loads(skipped) == {"email": "no address", "sms": "no address"}


# Preferences ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("switches", "channels"),
    [
        ([("email", "marketing", False)], {"sms", "inapp"}),
        ([("email", "*", False)], {"sms", "inapp"}),
        ([("*", "marketing", False)], set()),
        ([("*", "*", False), ("inapp", "*", True)], {"inapp"}),
        # channel + '*' is more specific than '*' + category
        ([("*", "marketing", False), ("sms", "*", True)], {"sms"}),
        # channel + category is the most specific
        ([("email", "*", False), ("email", "marketing", True)], {"sms", "email", "inapp"}),
        ([("*", "news", False)], {"sms", "email", "inapp"}),
    ],
)
async def test_opt_outs_by_channel_category_or_both_with_wildcards(
    pool: asyncpg.Pool, switches: list[tuple[str, str, bool]], channels: set[str]
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await conn.executemany(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled)"
            " VALUES ('u1', $1, $2, $3)",
            switches,
        )
        nid = await notify(conn, recipient_key="u1", template="t", priority=3,
                           category="marketing")  # fmt: skip
        rows = await messages(conn, nid)
        skipped = await conn.fetchval("SELECT skipped FROM outbox.notification WHERE id = $1", nid)
    assert set(rows) == channels
    assert set(json.loads(skipped)) == {"sms", "email", "inapp"} - channels


async def test_transactional_ignores_opt_outs_but_not_a_missing_address(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, phone=None)
        await conn.execute(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled)"
            " VALUES ('u1', '*', '*', false)"
        )
        nid = await notify(conn, recipient_key="u1", template="t", priority=3)
        rows = await messages(conn, nid)
    assert set(rows) == {"email", "inapp"}


# Transactions and idempotency -----------------------------------------------------------


async def test_the_same_idempotency_key_returns_the_first_id_and_creates_nothing(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        first = await notify(conn, recipient_key="u1", template="a", idempotency_key="k")
        second = await notify(conn, recipient_key="u1", template="b", priority=3,
                              idempotency_key="k")  # fmt: skip
        assert first == second
        assert await counts(conn) == (1, 2)


async def test_a_rolled_back_notify_leaves_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        tx = conn.transaction()
        await tx.start()
        await notify(conn, recipient_key="u1", template="t", priority=3)
        await tx.rollback()
        assert await counts(conn) == (0, 0)


# Arguments after recipient_key => 'u1', template => 't' (or replacing them), and the
# refusal each gets: the message always names the argument.
_NOTIFY_REFUSALS = [
    ("recipient_key => 'nobody'", "recipient_key 'nobody' is not in outbox.recipient"),
    ("recipient_key => ''", "recipient_key is empty"),
    ("template => ''", "template is empty"),
    ("channels => '{email,fax}'", "channels contains unknown channel 'fax'"),
    ("channels => '{}'", "channels is empty"),
    ("priority => 3.9", r"priority must be an integer 0\.\.3, got 3\.9"),
    ("priority => 4", r"priority must be an integer 0\.\.3, got 4"),
    ("category => '*'", "category must be a name"),
    ("context => '[]'", "context must be a JSON object"),
    ("digest_key => 'd', digest_window => '40 days'",
     "digest_window must be more than 0 and at most 31 days, got 40 days"),
    ("digest_key => 'd', digest_window => '0'", "digest_window must be more than 0"),
    ("digest_window => '1 hour'", "digest_key and digest_window go together"),
    ("escalate_after => '-1 minute'", "escalate_after must be positive"),
    ("channels => '{email}', escalate_after => '5 minutes'",
     "escalate_after needs the inapp channel"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "complaint"), _NOTIFY_REFUSALS)
async def test_notify_refuses_bad_input_naming_the_argument(
    pool: asyncpg.Pool, args: str, complaint: str
) -> None:
    named = {"recipient_key": "'u1'", "template": "'t'"}
    for assignment in args.split(", "):
        name, value = assignment.split(" => ")
        named[name] = value
    call = ", ".join(f"{name} => {value}" for name, value in named.items())
    async with pool.acquire() as conn:
        await add_person(conn)
        with pytest.raises(
            asyncpg.InvalidParameterValueError, match=f"^outbox.notify: {complaint}"
        ):
            await conn.fetchval(f"SELECT outbox.notify({call})")
        assert await counts(conn) == (0, 0)


@pytest.mark.parametrize(
    ("columns", "complaint"),
    [
        ("timezone => 'Mars/Base'", "timezone 'Mars/Base' is not a known IANA time zone name"),
        # A POSIX rule PostgreSQL itself would accept, but no IANA library does.
        ("timezone => 'Mars3'", "timezone 'Mars3' is not a known IANA time zone name"),
        ("quiet_hours_start => '22:00', quiet_hours_end => '22:00'",
         "quiet_hours_start and quiet_hours_end are both 22:00"),
        ("quiet_hours_start => '22:00'", "quiet_hours_start and quiet_hours_end go together"),
        ("key => ''", "key is empty"),
        ("attrs => '[1]'", "attrs must be a JSON object"),
    ],
)  # fmt: skip
async def test_recipient_refuses_bad_input_naming_the_column(
    pool: asyncpg.Pool, columns: str, complaint: str
) -> None:
    values = {"key": "'u9'", "timezone": "'UTC'", "quiet_hours_start": "NULL",
              "quiet_hours_end": "NULL", "attrs": "'{}'"}  # fmt: skip
    for assignment in columns.split(", "):
        name, value = assignment.split(" => ")
        values[name] = value
    sql = "INSERT INTO outbox.recipient ({}) VALUES ({})".format(
        ", ".join(values), ", ".join(values.values())
    )
    with pytest.raises(asyncpg.InvalidParameterValueError, match=f"^outbox.recipient: {complaint}"):
        await pool.execute(sql)
    assert await pool.fetchval("SELECT count(*) FROM outbox.recipient") == 0


async def test_recipient_writes_are_normalised(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_recipient(conn, "u1", email=" ann@example.com ", phone="",
                               timezone="europe/berlin", locale=" ")  # fmt: skip
        row = await conn.fetchrow("SELECT * FROM outbox.recipient WHERE key = 'u1'")
    assert (row["email"], row["phone"], row["locale"]) == ("ann@example.com", None, None)
    assert row["timezone"] == "Europe/Berlin"


# The claim lanes see notify's rows like any other -------------------------------------------


async def test_the_email_lane_claims_notify_rows_and_leaves_other_channels(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await notify(conn, recipient_key="u1", template="t", priority=3,
                     not_before=T0 - timedelta(minutes=1))  # fmt: skip
        await notify(conn, recipient_key="u1", template="d", priority=1, category="social",
                     digest_key="comments:7", digest_window=timedelta(minutes=10),
                     not_before=T0 - timedelta(minutes=1))  # fmt: skip
    claimed = await Store(pool).claim("email", 10, "w1", 60)
    assert [(m.template, m.recipient) for m in claimed] == [("t", "ann@example.com")]
    statuses = await pool.fetch(
        "SELECT channel, status FROM outbox.message WHERE template = 'd' ORDER BY channel"
    )
    assert [tuple(r) for r in statuses] == [("email", "batched"), ("inapp", "batched")]


async def test_digests_batch_only_plain_notifications(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        window = timedelta(minutes=10)
        kinds = {"plain": ("social", 1), "transactional": ("transactional", 1),
                 "urgent": ("social", 3)}  # fmt: skip
        found = {}
        for name, (category, priority) in kinds.items():
            nid = await notify(conn, recipient_key="u1", template="t", category=category,
                               priority=priority, digest_key="k", digest_window=window)  # fmt: skip
            found[name] = {(r["status"], r["digest_key"], r["digest_window"])
                           for r in (await messages(conn, nid)).values()}  # fmt: skip
    assert found["plain"] == {("batched", "k", window)}
    assert found["transactional"] == {("pending", None, None)}
    assert found["urgent"] == {("pending", None, None)}


# Helpers: asyncpg and DB-API -------------------------------------------------------------


async def test_asyncpg_helpers_refuse_a_pool(pool: asyncpg.Pool) -> None:
    with pytest.raises(TypeError, match="got a Pool"):
        await notify(pool, recipient_key="u1", template="t")
    with pytest.raises(TypeError, match="got a Pool"):
        await upsert_recipient(pool, "u1", email="ann@example.com")
    assert await pool.fetchval("SELECT count(*) FROM outbox.recipient") == 0


async def test_upsert_recipient_replaces_the_whole_profile(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_recipient(conn, "u1", email="ann@example.com", phone="+14155550100",
                               quiet_hours=("22:00", "07:00"), attrs={"plan": "pro"})  # fmt: skip
        created = await conn.fetchval("SELECT updated_at FROM outbox.recipient")
        # The same profile again is not rewritten.
        await upsert_recipient(conn, "u1", email="ann@example.com", phone="+14155550100",
                               quiet_hours=("22:00", "07:00"), attrs={"plan": "pro"})  # fmt: skip
        assert await conn.fetchval("SELECT updated_at FROM outbox.recipient") == created
        await upsert_recipient(conn, "u1", email="ann@example.org")
        row = await conn.fetchrow("SELECT * FROM outbox.recipient")
    assert (row["email"], row["phone"], row["quiet_hours_start"]) == ("ann@example.org", None, None)
    assert json.loads(row["attrs"]) == {}


async def test_python_helpers_pass_a_fractional_priority_through_to_its_refusal(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        with pytest.raises(
            asyncpg.InvalidParameterValueError,
            match=r"priority must be an integer 0\.\.3, got 3\.9\b",
        ):
            await notify(conn, recipient_key="u1", template="t", priority=3.9)  # type: ignore[arg-type]
    with (
        psycopg.connect(database_url) as dbapi,
        dbapi.cursor() as cursor,
        pytest.raises(
            psycopg.errors.InvalidParameterValue,
            match=r"priority must be an integer 0\.\.3, got 3\.9\b",
        ),
    ):
        notify_cursor(cursor, recipient_key="u1", template="t", priority=3.9)  # type: ignore[arg-type]


async def test_dbapi_helpers_join_the_callers_transaction(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cursor:
            upsert_recipient_cursor(cursor, "u1", email="ann@example.com", timezone="Europe/Berlin",
                                    quiet_hours=("22:00", "07:00"))  # fmt: skip
            notify_cursor(cursor, recipient_key="u1", template="t", priority=3)
        conn.rollback()
        with conn.cursor() as cursor:
            cursor.execute("SELECT (SELECT count(*) FROM outbox.recipient),"
                           " (SELECT count(*) FROM outbox.message)")  # fmt: skip
            assert cursor.fetchone() == (0, 0)
            upsert_recipient_cursor(cursor, "u1", email="ann@example.com")
            nid = notify_cursor(cursor, recipient_key="u1", template="t", priority=1,
                                category="social", context={"n": 1},
                                digest_key="k", digest_window=timedelta(minutes=5),
                                not_before=T0)  # fmt: skip
        conn.commit()
        with conn.cursor() as cursor:
            cursor.execute("SELECT channel, status, context FROM outbox.message"
                           " WHERE notification_id = %s ORDER BY channel", (nid,))  # fmt: skip
            assert cursor.fetchall() == [("email", "batched", {"n": 1}),
                                         ("inapp", "batched", {"n": 1})]  # fmt: skip


async def test_a_concurrent_call_with_the_same_key_returns_the_committed_id(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as first, pool.acquire() as second:
        await add_person(first)
        tx = first.transaction()
        await tx.start()
        winner = await notify(first, recipient_key="u1", template="t", idempotency_key="k")
        racing = asyncio.create_task(
            notify(second, recipient_key="u1", template="t", priority=3, idempotency_key="k")
        )
        await wait_until_blocked(pool, second.get_server_pid())
        await tx.commit()
        assert await racing == winner
        assert await counts(first) == (1, 2)
