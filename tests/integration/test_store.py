"""The SQL contract: enqueue functions, claim order, leases, guarded completion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

from outbox import NewMessage, enqueue, enqueue_cursor, enqueue_many, migrations
from outbox.models import Status
from outbox.store import Completion, Store
from tests.integration.enqueue_helpers import enqueue_one


async def test_migrate_is_idempotent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await migrations.migrate(conn) == []
        assert await migrations.pending(conn) == []
        versions = await migrations.applied_versions(conn)
    assert versions == {m.version for m in migrations.available()}


async def test_sql_enqueue_function_with_named_arguments(pool: asyncpg.Pool) -> None:
    message_id = await pool.fetchval(
        """SELECT outbox.enqueue(channel => 'email', recipient => ' ann@example.com ',
                                 template => 'welcome', context => '{"name": "Ann"}'::jsonb,
                                 priority => 3, tags => '{"campaign": "spring"}'::jsonb)"""
    )
    row = await pool.fetchrow("SELECT * FROM outbox.message WHERE id = $1", message_id)
    assert row["recipient"] == "ann@example.com"
    assert row["status"] == "pending"
    assert row["priority"] == 3
    assert row["category"] == "transactional"
    assert row["attempts"] == 0


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ("channel => 'fax', recipient => 'a', template => 't'", "channel must be"),
        ("channel => 'email', recipient => '  ', template => 't'", "recipient is empty"),
        ("channel => 'email', recipient => 'a@b.c', template => ''", "template is empty"),
        ("channel => 'email', recipient => 'a@b.c', template => 't', priority => 7", "priority"),
        ("channel => 'email', recipient => 'a@b.c', template => 't', context => '[]'", "context"),
    ],
)
async def test_sql_enqueue_rejects_bad_arguments(
    pool: asyncpg.Pool, args: str, complaint: str
) -> None:
    with pytest.raises(asyncpg.PostgresError, match=complaint):
        await pool.fetchval(f"SELECT outbox.enqueue({args})")
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 0


async def test_idempotency_key_returns_existing_id(pool: asyncpg.Pool) -> None:
    first = await enqueue_one(
        pool, channel="email", recipient="a@example.com", template="welcome", idempotency_key="k1"
    )
    second = await enqueue_one(
        pool, channel="email", recipient="b@example.com", template="other", idempotency_key="k1"
    )
    assert first == second
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 1


async def test_rolled_back_enqueue_leaves_nothing_and_sends_no_notify(
    pool: asyncpg.Pool, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    notified: list[str] = []
    await listener.add_listener("outbox_message", lambda *a: notified.append(a[3]))
    try:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await enqueue(conn, channel="email", recipient="a@example.com", template="t")
            await tx.rollback()
        await asyncio.sleep(0.2)
        assert notified == []
        assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 0
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, channel="email", recipient="a@example.com", template="t")
        for _ in range(50):
            if notified:
                break
            await asyncio.sleep(0.02)
        assert notified == [""]
    finally:
        await listener.close()


async def test_dbapi_cursor_helper_joins_the_callers_transaction(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cursor:
            message_id = enqueue_cursor(
                cursor,
                channel="sms",
                recipient="+14155550100",
                template="sms/verification_code",
                context={"code": "123456"},
                not_before=datetime.now(UTC) + timedelta(minutes=5),
                priority=2,
            )
        conn.rollback()
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM outbox.message WHERE id = %s", (message_id,))
            assert cursor.fetchone() == (0,)
            kept = enqueue_cursor(
                cursor, channel="email", recipient="a@example.com", template="welcome"
            )
        conn.commit()
        with conn.cursor() as cursor:
            cursor.execute("SELECT status FROM outbox.message WHERE id = %s", (kept,))
            assert cursor.fetchone() == ("pending",)


async def test_enqueue_many_copies_and_skips_known_idempotency_keys(pool: asyncpg.Pool) -> None:
    await enqueue_one(
        pool, channel="email", recipient="x@example.com", template="t", idempotency_key="dup"
    )
    batch = [NewMessage("email", f"user{i}@example.com", "welcome", {"i": i}) for i in range(500)]
    batch.append(NewMessage("email", "y@example.com", "t", idempotency_key="dup"))
    batch.append(NewMessage("email", "z@example.com", "t", idempotency_key="new"))
    batch.append(NewMessage("email", "z@example.com", "t", idempotency_key="new"))
    async with pool.acquire() as conn:
        results = await enqueue_many(conn, batch)
        # A second call in the same session reuses the staging table.
        results += await enqueue_many(
            conn, [NewMessage("sms", "+14155550100", "sms/verification_code")]
        )
    assert sum(r.created for r in results) == 502
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 503
    context = await pool.fetchval(
        "SELECT context FROM outbox.message WHERE recipient = 'user7@example.com'"
    )
    assert context == '{"i": 7}'


async def test_enqueue_many_rolls_back_with_the_caller(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await enqueue_many(conn, [NewMessage("email", "a@example.com", "t")] * 10)
        await tx.rollback()
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 0


async def test_claim_orders_by_priority_then_not_before_and_skips_future(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    specs = [
        ("low", 0, now - timedelta(seconds=30)),
        ("urgent", 3, now),
        ("normal-old", 1, now - timedelta(seconds=60)),
        ("normal-new", 1, now - timedelta(seconds=1)),
        ("future", 3, now + timedelta(hours=1)),
    ]
    for template, priority, not_before in specs:
        await enqueue_one(
            pool, channel="email", recipient="a@example.com", template=template,
            priority=priority, not_before=not_before,
        )  # fmt: skip
    store = Store(pool)
    claimed = await store.claim("email", 10, "w1", 60)
    assert [m.template for m in claimed] == ["urgent", "normal-old", "normal-new", "low"]
    assert all(m.attempts == 1 for m in claimed)
    assert await store.claim("sms", 10, "w1", 60) == []
    due = await store.next_due("email")
    assert due is not None and due > now


async def test_a_claim_resumes_after_the_given_position_of_each_priority(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    for template, priority, age in [("a", 1, 50), ("b", 1, 40), ("c", 1, 30), ("u", 3, 45)]:
        await enqueue_one(
            pool, channel="email", recipient="a@example.com", template=template,
            priority=priority, not_before=now - timedelta(seconds=age),
        )  # fmt: skip
    store = Store(pool)
    first = await store.claim("email", 2, "w", 60)
    assert [m.template for m in first] == ["u", "a"]
    positions = {m.priority: (m.not_before, m.id) for m in first if m.not_before}
    # Put "a" back to pending: it lies behind the position, only a scan from the head sees it.
    await pool.execute("UPDATE outbox.message SET status = 'pending', locked_by = NULL, "
                       "locked_until = NULL WHERE template = 'a'")  # fmt: skip
    resumed = await store.claim("email", 10, "w", 60, after=positions)
    assert [m.template for m in resumed] == ["b", "c"]
    from_head = await store.claim("email", 10, "w", 60)
    assert [m.template for m in from_head] == ["a"]


async def test_queue_gauges_count_unfinished_rows_and_the_oldest_due_one(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    for age in (90, 10, -3600):  # the last is scheduled an hour ahead
        await enqueue_one(pool, channel="email", recipient="a@example.com", template="t",
                          not_before=now - timedelta(seconds=age))  # fmt: skip
    await enqueue_one(pool, channel="sms", recipient="+14155552671", template="t")
    store = Store(pool)
    await store.claim("sms", 1, "w", 60)
    counts = {(r["channel"], r["status"]): r["n"] for r in await store.unfinished_counts()}
    assert counts == {("email", "pending"): 3, ("sms", "sending"): 1}
    oldest = await store.oldest_pending()
    assert set(oldest) == {"email"}
    assert 89 <= oldest["email"] < 120


async def test_concurrent_claims_never_overlap(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await enqueue_many(
            conn, [NewMessage("email", f"u{i}@example.com", "t") for i in range(300)]
        )
    store = Store(pool)
    results = await asyncio.gather(*(store.claim("email", 40, f"w{i}", 60) for i in range(10)))
    ids = [m.id for batch in results for m in batch]
    assert len(ids) == len(set(ids)) == 300


async def test_completion_is_guarded_by_the_lease(pool: asyncpg.Pool) -> None:
    message_id = await enqueue_one(pool, channel="email", recipient="a@example.com", template="t")
    store = Store(pool)
    [first] = await store.claim("email", 1, "w1", 60)
    # The lease runs out and the reaper hands the row to another worker.
    await pool.execute("UPDATE outbox.message SET locked_until = now() - interval '1s'")
    reaped = await store.reap_expired_leases(max_attempts=5)
    assert [(r["id"], r["status"]) for r in reaped] == [(message_id, "pending")]
    [second] = await store.claim("email", 1, "w2", 60)
    assert second.attempts == 2
    late = Completion(message_id, first.attempts, Status.SENT, provider="smtp")
    assert await store.complete_many([late], "w1") == 0
    # The same worker id with a stale attempt number is refused too.
    assert await store.complete_many([Completion(message_id, 1, Status.SENT)], "w2") == 0
    done = Completion(message_id, second.attempts, Status.SENT, provider="smtp",
                      provider_message_id="<m1>")  # fmt: skip
    assert await store.complete_many([done], "w2") == 1
    row = await store.message(message_id)
    assert row is not None
    assert (row["status"], row["provider_message_id"], row["locked_by"]) == ("sent", "<m1>", None)
    assert row["sent_at"] is not None


async def test_retry_and_refund_are_written_in_one_batch(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await enqueue_many(conn, [NewMessage("email", f"u{i}@example.com", "t") for i in range(3)])
    store = Store(pool)
    a, b, c = await store.claim("email", 3, "w", 60)
    written = await store.complete_many(
        [
            Completion(a.id, a.attempts, Status.PENDING, error="451 try later", retry_delay=30),
            Completion(b.id, b.attempts, Status.PENDING, error="throttled", refund=True),
            Completion(c.id, c.attempts, Status.FAILED, error="550 no such user"),
        ],
        "w",
    )
    assert written == 3
    rows = {r["id"]: r for r in await pool.fetch("SELECT * FROM outbox.message")}
    assert rows[a.id]["status"] == "pending" and rows[a.id]["attempts"] == 1
    assert rows[a.id]["not_before"] > datetime.now(UTC) + timedelta(seconds=25)
    assert rows[a.id]["last_error"] == "451 try later"
    assert rows[b.id]["attempts"] == 0
    assert rows[c.id]["status"] == "failed" and rows[c.id]["last_error"] == "550 no such user"


async def test_a_result_written_later_records_the_time_of_its_send(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await enqueue_many(conn, [NewMessage("email", f"u{i}@example.com", "t") for i in range(2)])
    store = Store(pool)
    sent, failed = await store.claim("email", 2, "w", 60)
    # Both outcomes were decided 30 s before the completer wrote them.
    decided = asyncio.get_running_loop().time() - 30
    written = await store.complete_many(
        [
            Completion(sent.id, sent.attempts, Status.SENT, provider="smtp", finished_at=decided),
            Completion(failed.id, failed.attempts, Status.PENDING, error="451 try later",
                       retry_delay=60, finished_at=decided),
        ],
        "w",
    )  # fmt: skip
    assert written == 2
    now = await pool.fetchval("SELECT now()")
    rows = {r["id"]: r for r in await pool.fetch("SELECT * FROM outbox.message")}
    # Before, sent_at was the write's time and the retry was due 60 s after the write.
    assert now - timedelta(seconds=31) < rows[sent.id]["sent_at"] < now - timedelta(seconds=29)
    # the row itself changed at the write
    assert rows[sent.id]["updated_at"] > rows[sent.id]["sent_at"] + timedelta(seconds=29)
    due = rows[failed.id]["not_before"]
    assert now + timedelta(seconds=29) < due < now + timedelta(seconds=31)


async def test_reaper_fails_rows_that_used_all_attempts(pool: asyncpg.Pool) -> None:
    message_id = await enqueue_one(pool, channel="email", recipient="a@b.example", template="t")
    store = Store(pool)
    await store.claim("email", 1, "w", 60)
    await pool.execute("UPDATE outbox.message SET locked_until = now() - interval '1s'")
    [row] = await store.reap_expired_leases(max_attempts=1)
    assert (row["id"], row["status"]) == (message_id, "failed")
    error = await pool.fetchval("SELECT last_error FROM outbox.message")
    assert "attempts exhausted" in error


async def test_cancel_only_pending(pool: asyncpg.Pool) -> None:
    a = await enqueue_one(pool, channel="email", recipient="a@b.example", template="t")
    b = await enqueue_one(pool, channel="email", recipient="b@b.example", template="t")
    await Store(pool).claim("email", 1, "w", 60)  # claims a
    assert await pool.fetchval("SELECT outbox.cancel($1)", a) is False
    assert await pool.fetchval("SELECT outbox.cancel($1)", b) is True
    assert await pool.fetchval("SELECT outbox.cancel($1)", b) is False


async def test_claim_reports_suppression_and_opt_out(pool: asyncpg.Pool) -> None:
    await pool.execute(
        """INSERT INTO outbox.suppression (channel, recipient, reason) VALUES
           ('email', 'bounced@example.com', 'bounce'),
           ('email', 'unsub@example.com', 'unsubscribe')"""
    )
    await pool.execute(
        """INSERT INTO outbox.preference (channel, recipient, category, opted_out)
           VALUES ('email', 'picky@example.com', 'marketing', true)"""
    )
    cases = [
        ("Bounced@Example.com", "transactional", "recipient suppressed (bounce)"),
        ("unsub@example.com", "marketing", "recipient suppressed (unsubscribe)"),
        ("unsub@example.com", "transactional", None),
        ("picky@example.com", "marketing", "recipient opted out of category 'marketing'"),
        ("picky@example.com", "transactional", None),
    ]
    for recipient, category, _ in cases:
        await enqueue_one(
            pool, channel="email", recipient=recipient, template="t", category=category
        )
    claimed = sorted(await Store(pool).claim("email", 10, "w", 60), key=lambda m: m.id)
    assert [m.suppressed_reason for m in claimed] == [expected for *_, expected in cases]


async def test_purge_deletes_only_old_finished_rows(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await enqueue_many(conn, [NewMessage("email", f"u{i}@example.com", "t") for i in range(5)])
    await pool.execute(
        "UPDATE outbox.message SET status = 'sent', updated_at = now() - interval '10 days' "
        "WHERE id IN (SELECT id FROM outbox.message ORDER BY id LIMIT 3)"
    )
    await pool.execute(
        "UPDATE outbox.message SET updated_at = now() - interval '10 days' WHERE status = 'pending'"
    )
    deleted, _ = await Store(pool).purge(older_than_seconds=86400 * 7)
    assert deleted == 3
    assert await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status='pending'") == 2
