"""The archive (migration 0016): finished messages move out of outbox.message in one
statement per batch, late feedback and idempotency follow them, retention drops months."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from daemon.delivery.reaper import Reaper
from daemon.delivery.retention import Retention
from daemon.feedback.sms_spend import SpendGate
from daemon.feedback.store import FeedbackStore
from daemon.settings import WorkerSettings
from outbox import NewMessage, enqueue, enqueue_many
from outbox.models import FeedbackEvent
from outbox.store import Store
from tests.integration.campaign_helpers import (
    add_campaign,
    add_list,
    add_people,
    mark_sent,
    subscribe,
)
from tests.integration.enqueue_helpers import enqueue_one
from tests.integration.test_cli import _env, outboxd


async def _finished(pool: asyncpg.Pool, *ids: int, age: str = "2 days") -> None:
    await pool.execute(
        "UPDATE outbox.message SET status = 'sent', sent_at = now(), "
        f"updated_at = now() - interval '{age}', provider_message_id = 'p-' || id "
        "WHERE id = ANY($1::bigint[])",
        list(ids),
    )


async def _columns(pool: asyncpg.Pool, table: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [row["attname"] for row in rows]


async def test_archive_has_the_columns_of_message_in_order(pool: asyncpg.Pool) -> None:
    # A migration that adds a column to outbox.message must add it to the archive too.
    message = await _columns(pool, "outbox.message")
    assert await _columns(pool, "outbox.message_archive") == [*message, "archived_at"]
    assert await _columns(pool, "outbox.message_all") == [*message, "archived_at"]


async def test_sweep_moves_only_old_finished_rows(pool: asyncpg.Pool) -> None:
    old, recent, pending = [
        int(await enqueue_one(pool, channel="email", recipient=f"u{i}@example.com", template="t"))
        for i in range(3)
    ]
    await _finished(pool, old)
    await _finished(pool, recent, age="1 minute")
    await pool.execute(
        "UPDATE outbox.message SET updated_at = now() - interval '3 days' WHERE id = $1", pending
    )
    await Reaper(Store(pool), WorkerSettings(archive_after_hours=24), gauges=False).sweep()

    assert sorted(await pool.fetch("SELECT id FROM outbox.message")) == sorted(
        [(recent,), (pending,)]
    )
    archived = await pool.fetchrow("SELECT * FROM outbox.message_archive")
    assert (archived["id"], archived["status"]) == (old, "sent")
    assert await pool.fetchval("SELECT count(*) FROM outbox.message_all") == 3
    # The console and `outboxd messages` lookups still find it.
    found = await Store(pool).message(old)
    assert found is not None and found["status"] == "sent"


async def test_late_feedback_reaches_an_archived_message(pool: asyncpg.Pool) -> None:
    message_id = await enqueue_one(pool, channel="email", recipient="ann@example.com", template="t")
    await _finished(pool, message_id)
    assert await Retention(pool).archive(3600) == 1
    outcome = await FeedbackStore(pool).record(
        FeedbackEvent(
            source_id="sns-late",
            event_type="bounce",
            provider_message_id=f"p-{message_id}",
            recipient="ann@example.com",
            occurred_at=datetime.now(UTC),
            payload={},
            bounce_type="Permanent",
        )
    )
    assert (outcome.message_id, outcome.status) == (message_id, "bounced")
    assert (
        await pool.fetchval("SELECT status FROM outbox.message_archive WHERE id = $1", message_id)
        == "bounced"
    )
    assert (
        await pool.fetchval(
            "SELECT reason FROM outbox.suppression WHERE recipient = 'ann@example.com'"
        )
        == "bounce"
    )


async def test_idempotency_keys_outlive_the_move_until_the_horizon(pool: asyncpg.Pool) -> None:
    first = await enqueue_one(
        pool, channel="email", recipient="a@example.com", template="t", idempotency_key="k1"
    )
    batch_first = await enqueue_one(
        pool, channel="email", recipient="b@example.com", template="t", idempotency_key="k2"
    )
    await _finished(pool, int(first), int(batch_first))
    assert await Retention(pool).archive(3600) == 2

    async with pool.acquire() as conn:
        again = await enqueue(
            conn, channel="email", recipient="a@example.com", template="t", idempotency_key="k1"
        )
        many = await enqueue_many(
            conn,
            [
                NewMessage("email", "b@example.com", "t", idempotency_key="k2"),
                NewMessage("email", "b@example.com", "t", idempotency_key="k2"),
                NewMessage("email", "c@example.com", "t", idempotency_key="k3"),
            ],
        )
    assert (int(again), again.created) == (int(first), False)
    assert [(int(r), r.created) for r in many[:2]] == [(int(batch_first), False)] * 2
    assert many[2].created
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 1  # only k3

    # Past the horizon the key is forgotten and the same key makes a new message.
    await pool.execute("UPDATE outbox.message_key SET archived_at = now() - interval '40 days'")
    assert await Retention(pool).forget_keys(30 * 86400) == 2
    later = await enqueue_one(
        pool, channel="email", recipient="a@example.com", template="t", idempotency_key="k1"
    )
    assert later.created and int(later) != int(first)


async def test_purge_drops_whole_months_only(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    old_part = await pool.fetchval("SELECT outbox.archive_partition(now() - interval '90 days')")
    this_month = await pool.fetchval("SELECT outbox.archive_partition(now())")
    for recipient in ("a@example.com", "b@example.com"):
        message_id = await enqueue_one(pool, channel="email", recipient=recipient, template="t")
        await _finished(pool, message_id)
        await Retention(pool).archive(3600)
        # The first one was archived three months ago (the update moves it to that month).
        await pool.execute(
            "UPDATE outbox.message_archive SET archived_at = now() - interval '90 days' "
            "WHERE recipient = 'a@example.com'"
        )
    assert await pool.fetchval("SELECT count(*) FROM outbox.message_archive") == 2

    purged = outboxd(
        _env(tmp_path, OUTBOXD_DATABASE_URL=database_url), "purge", "--older-than", "30"
    )
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines() == [
        "purged 0 message(s) and 0 event(s)",
        f"dropped 1 archive partition(s): {old_part}",
    ]
    assert await pool.fetchval("SELECT to_regclass('outbox.' || $1::text)", old_part) is None
    assert await pool.fetchval("SELECT to_regclass('outbox.' || $1::text)", this_month)
    assert await pool.fetchval("SELECT count(*) FROM outbox.message_archive") == 1


async def test_unsubscribing_from_an_archived_campaign_message_ends_the_subscription(
    pool: asyncpg.Pool,
) -> None:
    await add_people(pool, {"u1": {}})
    list_id = await add_list(pool)
    await subscribe(pool, "news", ["u1"])
    campaign_id = await add_campaign(pool, list_id)
    await pool.fetchval("SELECT outbox.start_campaign($1)", campaign_id)
    await mark_sent(pool, campaign_id)
    await pool.execute(
        "UPDATE outbox.message SET updated_at = now() - interval '2 days'; "
        "UPDATE outbox.campaign SET status = 'sent'"
    )
    assert await Retention(pool).archive(3600) == 1

    await FeedbackStore(pool).set_preference("email", "u1@example.com", "marketing", opted_out=True)
    status = "SELECT status FROM outbox.subscription WHERE recipient_key = 'u1'"
    assert await pool.fetchval(status) == "unsubscribed"
    stats = await pool.fetchrow(
        "SELECT sent, unsubscribed FROM outbox.campaign_stats WHERE campaign_id = $1", campaign_id
    )
    assert tuple(stats) == (1, 1)
    # Undoing it on the page restores the subscription the archived message ended.
    await FeedbackStore(pool).set_preference(
        "email", "u1@example.com", "marketing", opted_out=False
    )
    assert await pool.fetchval(status) == "active"


async def test_an_open_of_an_archived_message_still_reaches_the_webhooks(
    pool: asyncpg.Pool,
) -> None:
    # People open mail days after it was sent, when it has moved to the archive.
    await pool.execute(
        "INSERT INTO outbox.webhook_endpoint (url, secret) "
        "VALUES ('https://app.example.com/hooks', 'a-secret-of-16-chars')"
    )
    message_id = await enqueue_one(pool, channel="email", recipient="ann@example.com", template="t")
    await _finished(pool, message_id)
    assert await Retention(pool).archive(3600) == 1
    await pool.execute(
        "INSERT INTO outbox.event (message_id, source, source_id, event_type, payload)"
        " VALUES ($1, 'ses', 'open-1', 'open', '{}')",
        message_id,
    )
    rows = await pool.fetch(
        "SELECT type, data->>'message_id' AS id FROM outbox.webhook_delivery"
        " WHERE type = 'message.opened'"
    )
    assert [(r["type"], r["id"]) for r in rows] == [("message.opened", str(message_id))]


async def test_the_sms_spend_of_the_month_counts_archived_messages(pool: asyncpg.Pool) -> None:
    # The spend cap must not forget what was sent in the month's first days.
    message_id = await enqueue_one(pool, channel="sms", recipient="+14155550100", template="t")
    await _finished(pool, message_id)
    await pool.execute("UPDATE outbox.message SET price_usd = 0.25 WHERE id = $1", message_id)
    assert await Retention(pool).archive(3600) == 1
    gate = SpendGate(cap_usd=10.0, estimate_usd=0.01)
    await gate.refresh(pool)
    assert gate.spent_usd == 0.25
