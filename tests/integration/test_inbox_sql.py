"""The inbox in SQL (migration 0008): the functions for the app's backend, the signals the
streams listen to, escalation cancelled by reading, and retention."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import asyncpg
import pytest

from daemon.delivery.reaper import Reaper
from daemon.settings import WorkerSettings
from outbox import notify, upsert_recipient
from outbox.store import Store


async def _person(conn: asyncpg.Connection, key: str = "u1") -> None:
    await upsert_recipient(conn, key, email=f"{key}@example.com", phone="+14155550100")


async def _items(conn: asyncpg.Connection, key: str, n: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO outbox.inbox (recipient_key, title)"
        " SELECT $1, 'n' || g FROM generate_series(1, $2) g RETURNING id",
        key, n,
    )  # fmt: skip
    return [r["id"] for r in rows]


async def test_functions_for_the_apps_backend(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await _person(conn, "u1")
        await _person(conn, "u2")
        a, b, c = await _items(conn, "u1", 3)
        (theirs,) = await _items(conn, "u2", 1)

        async def counts() -> tuple[int, int]:
            row = await conn.fetchrow(
                "SELECT outbox.inbox_unread_count('u1') AS r, outbox.inbox_unseen_count('u1') AS s"
            )
            return row["r"], row["s"]

        assert await counts() == (3, 3)
        # Another person's id is ignored, an already-read one counts once.
        assert await conn.fetchval("SELECT outbox.inbox_mark_read('u1', $1)", [a, a, theirs]) == 1
        assert await conn.fetchval("SELECT outbox.inbox_mark_read('u1', $1)", [a]) == 0
        assert await counts() == (2, 2)
        assert await conn.fetchval("SELECT read_at FROM outbox.inbox WHERE id = $1", theirs) is None
        assert await conn.fetchval("SELECT outbox.inbox_mark_unread('u1', $1)", [a]) == 1
        assert await counts() == (3, 2)  # unread again, still seen
        assert await conn.fetchval("SELECT outbox.inbox_archive('u1', $1)", [b, theirs]) == 1
        assert await counts() == (2, 1)
        assert await conn.fetchval("SELECT outbox.inbox_mark_seen('u1')") == 1
        assert await counts() == (2, 0)
        assert await conn.fetchval("SELECT outbox.inbox_mark_all_read('u1')") == 3
        assert await counts() == (0, 0)
        assert await conn.fetchval("SELECT outbox.inbox_unread_count('u2')") == 1
        assert c


async def test_unread_count_uses_the_partial_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(
            "EXPLAIN SELECT count(*) FROM outbox.inbox i"
            " WHERE i.recipient_key = 'u1' AND i.read_at IS NULL AND i.archived_at IS NULL"
        )
        assert "inbox_unread_idx" in "\n".join(r[0] for r in rows)


class Signals:
    """Payloads received on channel outbox_inbox."""

    def __init__(self) -> None:
        self.received: list[dict[str, object]] = []
        self.arrived = asyncio.Event()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.received.append(json.loads(payload))
        self.arrived.set()

    async def wait(self, n: int) -> list[dict[str, object]]:
        async with asyncio.timeout(10):
            while len(self.received) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


async def test_signals_on_commit_for_new_items_and_changed_counts(
    pool: asyncpg.Pool, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    signals = Signals()
    await listener.add_listener("outbox_inbox", signals)
    try:
        async with pool.acquire() as conn:
            await _person(conn)
            async with conn.transaction():
                ids = await _items(conn, "u1", 2)
                assert signals.received == []  # nothing before the commit
            got = await signals.wait(2)
            assert got == [{"kind": "item", "id": i, "recipient_key": "u1"} for i in ids]

            # A rolled-back insert and a redelivered message (ON CONFLICT) signal nothing;
            # neither does an update that changes no count. A marker signal proves it.
            tx = conn.transaction()
            await tx.start()
            await _items(conn, "u1", 1)
            await tx.rollback()
            await conn.execute(
                "INSERT INTO outbox.inbox (recipient_key, title, message_id) VALUES ('u1', 'x', 7)"
            )
            await conn.execute(
                "INSERT INTO outbox.inbox (recipient_key, title, message_id) VALUES ('u1', 'x', 7)"
                " ON CONFLICT (message_id) DO NOTHING"
            )
            await conn.execute("UPDATE outbox.inbox SET title = 'renamed'")
            # Reading every item is one signal for the person, whatever the number of rows.
            assert await conn.fetchval("SELECT outbox.inbox_mark_all_read('u1')") == 3
            got = await signals.wait(4)
            assert [s["kind"] for s in got[2:]] == ["item", "count"]
            assert got[3]["recipient_key"] == "u1"
    finally:
        await listener.close()


async def test_a_key_too_long_for_a_notify_payload_is_left_out(
    pool: asyncpg.Pool, database_url: str
) -> None:
    key = "\u0001" * 3000  # 18,000 bytes once escaped in JSON
    listener = await asyncpg.connect(database_url)
    signals = Signals()
    await listener.add_listener("outbox_inbox", signals)
    try:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO outbox.recipient (key) VALUES ($1)", key)
            (item,) = await _items(conn, key, 1)  # the insert must not fail
            assert await signals.wait(1) == [{"kind": "item", "id": item}]
    finally:
        await listener.close()


# Escalation -----------------------------------------------------------------------------


async def _escalating(conn: asyncpg.Connection, **kwargs: object) -> int:
    """notify() in-app and email, the email escalating after an hour; the in-app item
    delivered the way the inapp provider does it."""
    args: dict[str, object] = {"escalate_after": timedelta(hours=1), **kwargs}
    notification = await notify(
        conn, recipient_key="u1", template="welcome", channels=["inapp", "email"],
        context={"name": "Ann", "login_url": "https://x.example"}, **args,  # type: ignore[arg-type]
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO outbox.inbox (recipient_key, notification_id, message_id, title)"
        " SELECT recipient_key, notification_id, id, 'Welcome' FROM outbox.message"
        " WHERE notification_id = $1 AND channel = 'inapp'",
        notification,
    )
    return notification


async def _by_channel(conn: asyncpg.Connection, notification: int) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM outbox.message WHERE notification_id = $1", notification)
    return {r["channel"]: r for r in rows}


async def _item_of(conn: asyncpg.Connection, notification: int) -> int:
    item_id: int = await conn.fetchval(
        "SELECT id FROM outbox.inbox WHERE notification_id = $1", notification
    )
    return item_id


@pytest.mark.parametrize(
    "how",
    [
        "SELECT outbox.inbox_mark_read('u1', ARRAY[$1::bigint])",
        "SELECT outbox.inbox_mark_all_read('u1') + $1 * 0",
        "UPDATE outbox.inbox SET read_at = now() WHERE id = $1",  # the app's own UPDATE
    ],
    ids=["mark_read", "mark_all_read", "plain-update"],
)
async def test_reading_the_item_cancels_the_pending_escalation(
    pool: asyncpg.Pool, how: str
) -> None:
    async with pool.acquire() as conn:
        await _person(conn)
        notification = await _escalating(conn)
        before = await _by_channel(conn, notification)
        assert before["email"]["status"] == "pending"
        assert "escalation" in before["email"]["deferred_reason"]
        await conn.execute(how, await _item_of(conn, notification))
        after = await _by_channel(conn, notification)
        assert after["email"]["status"] == "cancelled"
        assert after["email"]["last_error"].startswith("escalation cancelled: in-app item")
        assert "was read at" in after["email"]["last_error"]
        assert after["inapp"]["status"] == before["inapp"]["status"]  # left alone


async def test_an_item_without_notification_id_is_traced_through_its_message(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await _person(conn)
        notification = await _escalating(conn)
        await conn.execute("UPDATE outbox.inbox SET notification_id = NULL")
        await conn.execute("SELECT outbox.inbox_mark_all_read('u1')")
        assert (await _by_channel(conn, notification))["email"]["status"] == "cancelled"


async def test_reading_leaves_other_rows_alone(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await _person(conn)
        # Without escalate_after the email is not an escalation: reading does not stop it.
        plain = await _escalating(conn, escalate_after=None)
        # An escalation already claimed by a daemon is too late to stop.
        claimed = await _escalating(conn)
        await conn.execute(
            "UPDATE outbox.message SET status = 'sending', locked_by = 'w',"
            " locked_until = now() + interval '1 minute', attempts = 1"
            " WHERE notification_id = $1 AND channel = 'email'",
            claimed,
        )
        # Archiving is not reading.
        archived = await _escalating(conn)
        await conn.execute(
            "SELECT outbox.inbox_archive('u1', ARRAY[$1::bigint])", await _item_of(conn, archived)
        )
        assert (await _by_channel(conn, archived))["email"]["status"] == "pending"
        await conn.execute(
            "SELECT outbox.inbox_mark_read('u1', ARRAY[$1::bigint, $2::bigint])",
            await _item_of(conn, plain), await _item_of(conn, claimed),
        )  # fmt: skip
        assert (await _by_channel(conn, plain))["email"]["status"] == "pending"
        assert (await _by_channel(conn, claimed))["email"]["status"] == "sending"


# Retention ------------------------------------------------------------------------------


async def test_retention_purges_old_read_and_archived_items_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await _person(conn)
        old_read, old_archived, recent_read, old_unread, unread_old_seen = await _items(
            conn, "u1", 5
        )
        await conn.execute("UPDATE outbox.inbox SET created_at = now() - interval '90 days'")
        await conn.execute(
            "UPDATE outbox.inbox SET read_at = now() - interval '40 days' WHERE id = $1", old_read
        )
        await conn.execute(
            "UPDATE outbox.inbox SET archived_at = now() - interval '31 days' WHERE id = $1",
            old_archived,
        )
        await conn.execute(
            "UPDATE outbox.inbox SET read_at = now() - interval '1 day' WHERE id = $1",
            recent_read,
        )
        await conn.execute(
            "UPDATE outbox.inbox SET seen_at = now() - interval '60 days' WHERE id = $1",
            unread_old_seen,
        )
    reaper = Reaper(Store(pool), WorkerSettings(retention_days=30), gauges=False)
    await reaper.sweep()
    left = {r["id"] for r in await pool.fetch("SELECT id FROM outbox.inbox")}
    assert left == {recent_read, old_unread, unread_old_seen}
    # Unset retention keeps everything.
    await Reaper(Store(pool), WorkerSettings(), gauges=False).sweep()
    assert await pool.fetchval("SELECT count(*) FROM outbox.inbox") == 3
