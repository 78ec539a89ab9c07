"""Campaigns: the audience expanded in one statement, A/B variants, scheduling, cancelling,
the status following the messages, and campaign mail waiting behind transactional mail."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from outbox import enqueue
from tests.integration.campaign_helpers import (
    add_campaign,
    add_list,
    add_people,
    campaign_messages,
    mark_sent,
    service,
    subscribe,
    wait_until,
)

PRO = {"attr": "plan", "op": "eq", "value": "pro"}


async def test_the_audience(pool: asyncpg.Pool) -> None:
    """Active subscribers in the segment, minus suppressed addresses and opt-outs."""
    pro = {"plan": "pro"}
    await add_people(
        pool,
        {k: pro for k in ["a", "c", "d", "e", "f", "g", "h", "j", "k"]} | {"b": {"plan": "free"}},
    )
    await add_people(pool, {"i": pro}, email=False)
    await add_list(pool, "news", double_opt_in=True)
    await pool.execute(
        "INSERT INTO outbox.subscription (list_id, recipient_key, status) "
        "SELECT 1, key, CASE key WHEN 'c' THEN 'pending' WHEN 'd' THEN 'unsubscribed' "
        "ELSE 'active' END FROM outbox.recipient"
    )
    await pool.execute(
        "INSERT INTO outbox.suppression (channel, recipient, reason) "
        "VALUES ('email', 'e@example.com', 'bounce'), ('email', 'k@example.com', 'unsubscribe')"
    )
    await pool.execute(
        "INSERT INTO outbox.preference (channel, recipient, category) "
        "VALUES ('email', 'f@example.com', 'marketing'), ('email', 'j@example.com', 'news')"
    )
    await pool.execute(
        "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled) "
        "VALUES ('g', 'email', 'marketing', false), "
        "       ('h', '*', '*', false), ('h', 'email', 'marketing', true)"
    )
    campaign = await add_campaign(pool, 1, segment=PRO, context={"body": "Hello"})
    assert await pool.fetchval("SELECT outbox.start_campaign($1)", campaign) == 3
    rows = await campaign_messages(pool, campaign)
    assert [r["recipient_key"] for r in rows] == ["a", "h", "j"]
    first = rows[0]
    assert (first["channel"], first["recipient"], first["template"], first["category"]) == (
        "email", "a@example.com", "newsletter", "marketing"
    )  # fmt: skip
    assert (first["priority"], first["list_id"], first["variant"], first["status"]) == (
        0, 1, None, "pending"
    )  # fmt: skip
    assert json.loads(first["context"]) == {"body": "Hello"}
    row = await pool.fetchrow("SELECT * FROM outbox.campaign WHERE id = $1", campaign)
    assert (row["status"], row["audience"], row["started_at"] is not None) == ("sending", 3, True)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="is already sending"):
        await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)
    # segment_count counts active subscribers before suppressions and opt-outs (and knows
    # nothing of addresses): a e f g h i j. Unsubscribing from everything (k's suppression)
    # ended k's subscription.
    count = await pool.fetchval("SELECT outbox.segment_count('news', $1::jsonb)", json.dumps(PRO))
    assert count == 7


async def test_a_rolled_back_start_leaves_nothing(pool: asyncpg.Pool) -> None:
    await add_people(pool, {"a": {}, "b": {}})
    await add_list(pool, "news")
    await subscribe(pool, "news", ["a", "b"])
    campaign = await add_campaign(pool, 1)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        assert await conn.fetchval("SELECT outbox.start_campaign($1)", campaign) == 2
        await transaction.rollback()
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 0
    assert await pool.fetchval("SELECT status FROM outbox.campaign") == "draft"


async def test_variants_are_dealt_evenly_with_their_subjects(pool: asyncpg.Pool) -> None:
    keys = [f"p{i:02}" for i in range(30)]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    variants = [{"subject": "Spring sale"}, {"subject": "20% off", "preheader": "Today"},
                {"subject": "Last chance"}]  # fmt: skip
    campaign = await add_campaign(pool, 1, variants=variants)
    assert await pool.fetchval("SELECT outbox.start_campaign($1)", campaign) == 30
    rows = await campaign_messages(pool, campaign)
    by_label: dict[str, list[str]] = {}
    for row in rows:
        context = json.loads(row["context"])
        expected = variants[ord(row["variant"]) - ord("A")]
        assert {k: context[k] for k in expected} == expected
        by_label.setdefault(row["variant"], []).append(row["recipient_key"])
    assert sorted(by_label) == ["A", "B", "C"]
    assert [len(v) for v in by_label.values()] == [10, 10, 10]
    # Not dealt in subscription order: the first ten are not all A.
    assert {row["variant"] for row in rows[:10]} != {"A"}


async def test_a_test_share_goes_first(pool: asyncpg.Pool) -> None:
    keys = [f"p{i:02}" for i in range(40)]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    campaign = await add_campaign(
        pool, 1, variants=[{"subject": "A"}, {"subject": "B"}], test_percent=25,
        winner_after="1 hour",
    )  # fmt: skip
    assert await pool.fetchval("SELECT outbox.start_campaign($1)", campaign) == 10
    labels = [r["variant"] for r in await campaign_messages(pool, campaign)]
    assert sorted(labels) == ["A"] * 5 + ["B"] * 5
    # The rest waits for the winner: nothing finishes the campaign meanwhile.
    await mark_sent(pool, campaign)
    assert await pool.fetchval("SELECT outbox.campaign_finish()") == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"variants": [{"subject": "A"}], "test_percent": 10, "winner_after": "1 hour"},
         "test_percent needs at least two variants"),
        ({"variants": [{"subject": "A"}, {"subject": "B"}], "test_percent": 10},
         "test_percent needs winner_after"),
        ({"variants": [{"subject": "A"}, {"subject": "B"}], "test_percent": 100,
          "winner_after": "1 hour"}, "test_percent must be more than 0 and less than 100"),
        ({"variants": [{"subject": ""}]}, r"variants\[0\] must be an object with a non-empty"),
        ({"variants": [{"title": "x"}]}, r"variants\[0\] must be an object"),
        ({"variants": {"subject": "x"}}, "variants must be an array of 1 to 26 objects"),
        ({"category": "transactional"}, "category must name a category people can opt out of"),
        ({"template": " "}, "template is empty"),
        ({"status": "sending"}, "a new campaign is draft or scheduled"),
        ({"winner_metric": "revenue"}, "campaign_winner_metric_check"),
    ],
)  # fmt: skip
async def test_bad_campaigns_are_refused(
    pool: asyncpg.Pool, fields: dict[str, object], message: str
) -> None:
    await add_list(pool, "news")
    with pytest.raises(asyncpg.PostgresError, match=message):
        await add_campaign(pool, 1, **fields)


async def test_what_was_sent_stays_as_it_was_sent(pool: asyncpg.Pool) -> None:
    await add_list(pool, "news")
    campaign = await add_campaign(pool, 1)
    await pool.execute("UPDATE outbox.campaign SET template = 'other' WHERE id = $1", campaign)
    await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)
    assert await pool.fetchval("SELECT status FROM outbox.campaign") == "sent"  # nobody to send to
    with pytest.raises(asyncpg.InvalidParameterValueError, match="can no longer change"):
        await pool.execute("UPDATE outbox.campaign SET template = 'x' WHERE id = $1", campaign)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="cannot go from sent to draft"):
        await pool.execute("UPDATE outbox.campaign SET status = 'draft' WHERE id = $1", campaign)


async def test_cancel_stops_what_is_pending(pool: asyncpg.Pool) -> None:
    keys = [f"p{i}" for i in range(6)]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    campaign = await add_campaign(pool, 1)
    await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)
    ids = [r["id"] for r in await campaign_messages(pool, campaign)]
    await pool.execute(
        "UPDATE outbox.message SET status = 'sent', sent_at = now() WHERE id = ANY($1::bigint[])",
        ids[:2],
    )
    await pool.execute(
        "UPDATE outbox.message SET status = 'sending', locked_by = 'w', "
        "locked_until = now() + interval '1 minute' WHERE id = $1",
        ids[2],
    )
    assert await pool.fetchval("SELECT outbox.cancel_campaign($1)", campaign) == 3
    rows = await campaign_messages(pool, campaign)
    assert sorted(r["status"] for r in rows) == ["cancelled"] * 3 + ["sending"] + ["sent"] * 2
    cancelled = [r for r in rows if r["status"] == "cancelled"]
    assert {r["last_error"] for r in cancelled} == {f"campaign {campaign} cancelled"}
    assert await pool.fetchval("SELECT status FROM outbox.campaign") == "cancelled"
    assert await pool.fetchval("SELECT outbox.cancel_campaign($1)", campaign) == 0
    with pytest.raises(asyncpg.InvalidParameterValueError, match="is already cancelled"):
        await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)
    sent = await add_campaign(pool, 1, segment={"any": []})
    await pool.fetchval("SELECT outbox.start_campaign($1)", sent)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="has been sent"):
        await pool.fetchval("SELECT outbox.cancel_campaign($1)", sent)


async def test_the_daemon_starts_at_send_at_and_marks_sent_when_all_is_sent(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    keys = [f"p{i}" for i in range(5)]
    await add_people(pool, {k: {"first_name": k.upper()} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    later = await add_campaign(pool, 1, send_at="2999-01-01T00:00:00Z")
    assert await pool.fetchval("SELECT outbox.start_campaign($1)", later) == 0
    assert await pool.fetchval("SELECT status FROM outbox.campaign WHERE id = $1", later) == (
        "scheduled"
    )
    soon = await add_campaign(
        pool, 1, name="Soon", status="scheduled", context={"subject": "Spring", "body": "News"}
    )
    async with service(database_url, tmp_path) as running:

        async def sent() -> bool:
            status = await pool.fetchval("SELECT status FROM outbox.campaign WHERE id = $1", soon)
            return bool(status == "sent")

        await wait_until(sent, running.recorder.changed)
    rows = await campaign_messages(pool, soon)
    assert [(r["status"], r["last_error"]) for r in rows] == [("sent", None)] * 5
    assert all(r["provider_message_id"] for r in rows)
    eml = running.eml(rows[0]["id"])
    assert eml["Subject"] == "Spring"  # no variants: the template's own subject
    assert "Hi P0," in eml.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert eml["List-Unsubscribe"] is not None
    finished = await pool.fetchrow(
        "SELECT status, finished_at FROM outbox.campaign WHERE id = $1", soon
    )
    assert finished["finished_at"] is not None
    assert await pool.fetchval("SELECT status FROM outbox.campaign WHERE id = $1", later) == (
        "scheduled"
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM outbox.message WHERE campaign_id = $1", later)
        == 0
    )


async def test_a_start_that_fails_goes_back_to_draft_and_stops_nothing_else(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await add_people(pool, {"a": {}})
    await add_list(pool, "news")
    await subscribe(pool, "news", ["a"])
    await pool.execute(
        """CREATE FUNCTION test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF NEW.template = 'boom' THEN RAISE EXCEPTION 'no room for boom'; END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER test_boom BEFORE INSERT ON outbox.message
               FOR EACH ROW EXECUTE FUNCTION test_boom();"""
    )
    bad = await add_campaign(pool, 1, name="Bad", template="boom", status="scheduled")
    good = await add_campaign(pool, 1, name="Good", status="scheduled")
    async with service(database_url, tmp_path) as running:

        async def settled() -> bool:
            rows = await pool.fetch("SELECT status FROM outbox.campaign ORDER BY id")
            return [r["status"] for r in rows] == ["draft", "sent"]

        await wait_until(settled, running.recorder.changed)
    row = await pool.fetchrow("SELECT * FROM outbox.campaign WHERE id = $1", bad)
    assert row["last_error"] == "start failed: no room for boom"
    assert (
        await pool.fetchval("SELECT count(*) FROM outbox.message WHERE campaign_id = $1", good) == 1
    )


@pytest.mark.slow
async def test_a_campaign_backlog_never_delays_a_password_reset(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Campaign mail (priority 0) and transactional mail share the cluster-wide rate limit;
    a reset enqueued behind thousands of campaign messages goes out at the next claim."""
    keys = [f"p{i:05}" for i in range(3000)]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await pool.execute(
        "INSERT INTO outbox.subscription (list_id, recipient_key, status) "
        "SELECT 1, key, 'active' FROM outbox.recipient"
    )
    campaign = await add_campaign(pool, 1)
    assert await pool.fetchval("SELECT outbox.start_campaign($1)", campaign) == 3000
    pending = "SELECT count(*) FROM outbox.message WHERE campaign_id = $1 AND status = 'pending'"
    async with service(database_url, tmp_path, email={"provider": "null", "rate": 100}) as running:
        await running.recorder.wait_for(50, within=60)  # the campaign is draining
        async with pool.acquire() as conn:
            reset = await enqueue(
                conn, channel="email", recipient="ann@example.com", template="password_reset",
                context={"name": "Ann", "reset_url": "https://x.example/r", "expires_minutes": 30},
                priority=3,
            )  # fmt: skip

        async def reset_sent() -> bool:
            status = await pool.fetchval("SELECT status FROM outbox.message WHERE id = $1", reset)
            return bool(status == "sent")

        await wait_until(reset_sent, running.recorder.changed, within=60)
        left = await pool.fetchval(pending, campaign)
    # Sent while most of the campaign still waited its turn under the rate limit.
    assert left > 2000
