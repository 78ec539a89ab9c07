"""The client library's promises: new or duplicate, ids in input order, the caller's
transaction or a clear refusal, and the SQL function's checks for bulk enqueue too."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import asyncpg
import psycopg
import pytest

from outbox import Enqueued, NewMessage, enqueue, enqueue_cursor, enqueue_many
from tests.integration.lock_waits import wait_until_blocked


async def _count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM outbox.message")
    return count


async def test_enqueue_tells_a_new_row_from_an_idempotent_duplicate(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await enqueue(
            conn, channel="email", recipient="a@example.com", template="t", idempotency_key="k"
        )
        again = await enqueue(
            conn, channel="email", recipient="b@example.com", template="u", idempotency_key="k"
        )
        other = await enqueue(conn, channel="email", recipient="a@example.com", template="t")
    assert (first.created, again.created, other.created) == (True, False, True)
    assert again == first and other != first
    # Still the plain id existing callers store, print and pass on.
    assert isinstance(first, int) and str(first) == str(int(first)) and f"{first}" == str(first)
    assert pickle.loads(pickle.dumps(again)).created is False
    assert (
        await pool.fetchval("SELECT recipient FROM outbox.message WHERE id = $1", again)
        == "a@example.com"
    )
    assert await _count(pool) == 2


async def test_enqueue_cursor_tells_new_from_duplicate_and_rolls_back_with_the_caller(
    database_url: str, pool: asyncpg.Pool
) -> None:
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cursor:
            new = enqueue_cursor(
                cursor, channel="sms", recipient="+14155550100", template="t",
                idempotency_key="k",
            )  # fmt: skip
            duplicate = enqueue_cursor(
                cursor, channel="sms", recipient="+14155550101", template="t",
                idempotency_key="k",
            )  # fmt: skip
        assert (new.created, duplicate.created, duplicate == new) == (True, False, True)
        conn.rollback()
        assert await _count(pool) == 0
        with conn.cursor() as cursor:
            kept = enqueue_cursor(cursor, channel="email", recipient="a@example.com", template="t")
        conn.commit()
    assert kept.created
    assert await pool.fetchval("SELECT status FROM outbox.message WHERE id = $1", kept) == "pending"


async def test_enqueue_many_returns_ids_in_input_order_with_existing_ids_for_duplicates(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        existing = await enqueue(
            conn, channel="email", recipient="old@example.com", template="t",
            idempotency_key="known",
        )  # fmt: skip
        batch = [
            NewMessage("email", "first@example.com", "t"),
            NewMessage("email", "dup@example.com", "t", idempotency_key="known"),
            NewMessage("email", "in-batch@example.com", "t", idempotency_key="twice"),
            NewMessage("sms", "+14155550100", "t"),
            NewMessage("email", "in-batch-again@example.com", "t", idempotency_key="twice"),
        ]
        results = await enqueue_many(conn, batch)
    assert all(isinstance(r, Enqueued) for r in results)
    assert [r.created for r in results] == [True, False, True, True, False]
    assert results[1] == existing
    assert results[4] == results[2]
    rows = await pool.fetch("SELECT id, recipient FROM outbox.message")
    recipient_of = {row["id"]: row["recipient"] for row in rows}
    assert [recipient_of[r] for r in results] == [
        "first@example.com", "old@example.com", "in-batch@example.com", "+14155550100",
        "in-batch@example.com",
    ]  # fmt: skip
    assert await _count(pool) == 4
    async with pool.acquire() as conn:
        assert await enqueue_many(conn, []) == []


async def test_a_pool_or_another_object_is_refused_before_anything_is_written(
    pool: asyncpg.Pool, database_url: str
) -> None:
    one: dict[str, Any] = {"channel": "email", "recipient": "a@example.com", "template": "t"}
    with pytest.raises(TypeError, match=r"got a Pool: acquire a connection"):
        await enqueue(pool, **one)
    with pytest.raises(TypeError, match=r"got a Pool: acquire a connection"):
        await enqueue_many(pool, [NewMessage("email", "a@example.com", "t")])
    with psycopg.connect(database_url) as conn:
        with pytest.raises(TypeError, match=r"expected an asyncpg connection, got Connection"):
            await enqueue(conn, **one)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"expected a DB-API cursor, got Connection"):
            enqueue_cursor(conn, **one)  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        with pytest.raises(TypeError, match=r"expected a DB-API cursor, got PoolConnectionProxy"):
            enqueue_cursor(conn, **one)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="NewMessage"):
            await enqueue_many(conn, [one])  # type: ignore[list-item]
    assert await _count(pool) == 0


# Each bad message, as NewMessage fields and as the same arguments to the SQL function.
REFUSED = [
    pytest.param(("fax", "a@example.com", "t", 1), id="channel"),
    pytest.param((None, "a@example.com", "t", 1), id="channel-null"),
    pytest.param(("it's", "a@example.com", "t", 1), id="channel-quoted"),
    pytest.param(("email", "   ", "t", 1), id="recipient-blank"),
    pytest.param(("email", "", "t", 1), id="recipient-empty"),
    pytest.param(("sms", "+14155550100", "  ", 1), id="template"),
    pytest.param(("email", "a@example.com", "t", 7), id="priority"),
    pytest.param(("email", "a@example.com", "t", -1), id="priority-negative"),
    pytest.param(("email", "a@example.com", "t", None), id="priority-null"),
]


@pytest.mark.parametrize("fields", REFUSED)
async def test_enqueue_many_refuses_what_the_sql_function_refuses_with_its_message(
    pool: asyncpg.Pool, fields: tuple[Any, ...]
) -> None:
    channel, recipient, template, priority = fields
    with pytest.raises(asyncpg.PostgresError) as by_sql:
        await pool.fetchval(
            "SELECT outbox.enqueue(channel => $1, recipient => $2, template => $3,"
            " priority => $4)",
            channel, recipient, template, priority,
        )  # fmt: skip
    good = NewMessage("email", "good@example.com", "t")
    bad = NewMessage(channel, recipient, template, priority=priority)
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.PostgresError) as by_many:
            await enqueue_many(conn, [good, good, bad, good])
        assert by_many.value.args[0] == by_sql.value.args[0]
        assert type(by_many.value) is type(by_sql.value)
        # Refused before anything was written, and the caller's transaction goes on.
        assert await conn.fetchval("SELECT count(*) FROM outbox.message") == 0
        assert await enqueue(conn, channel="email", recipient="c@example.com", template="t")
    assert await _count(pool) == 1


async def test_everything_rolls_back_with_the_callers_transaction(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        one = await enqueue(conn, channel="email", recipient="a@example.com", template="t")
        many = await enqueue_many(conn, [NewMessage("email", "b@example.com", "t")] * 3)
        assert one.created and all(r.created for r in many)
        assert await conn.fetchval("SELECT count(*) FROM outbox.message") == 4
        await tx.rollback()
        # The staging rows went with it: the next batch sees only its own.
        again = await enqueue_many(conn, [NewMessage("sms", "+14155550100", "t")])
    assert [r.created for r in again] == [True]
    assert await pool.fetchval("SELECT array_agg(id) FROM outbox.message") == [again[0]]


async def test_bool_and_fractional_priorities_are_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for priority in (True, 2.5, "2"):
            with pytest.raises(ValueError, match=r"priority must be an integer from 0 to 3"):
                await enqueue(
                    conn, channel="email", recipient="a@example.com", template="t",
                    priority=priority,  # type: ignore[arg-type]
                )  # fmt: skip
    assert await _count(pool) == 0


async def test_enqueue_many_returns_the_id_a_concurrent_enqueue_committed_meanwhile(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        theirs = await enqueue(
            first, channel="email", recipient="a@example.com", template="t", idempotency_key="k"
        )
        # The batch waits on the uncommitted key, then finds the row once it commits.
        batch = asyncio.create_task(
            enqueue_many(second, [NewMessage("email", "b@example.com", "t", idempotency_key="k")])
        )
        await wait_until_blocked(pool, second.get_server_pid())
        await tx.commit()
        [ours] = await batch
    assert (ours, ours.created) == (theirs, False)
    assert await _count(pool) == 1


async def test_the_sql_functions_say_new_or_duplicate_and_keep_their_contract(
    pool: asyncpg.Pool,
) -> None:
    call = (
        "SELECT * FROM outbox.enqueue_result(channel => 'email', recipient => 'a@example.com',"
        " template => 't', idempotency_key => 'k')"
    )
    first, again = await pool.fetchrow(call), await pool.fetchrow(call)
    assert (first["created"], again["created"], again["id"]) == (True, False, first["id"])
    same = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'sms', recipient => '+14155550100', template => 't',"
        " idempotency_key => 'k')"
    )
    assert same == first["id"]
    assert await _count(pool) == 1
