"""Engagement: the A/B winner chosen from a feedback stream, campaign_stats counting
distinct messages, and subscriptions ended by unsubscribes, hard bounces and complaints,
each linked to the message it came from."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from daemon.feedback.store import FeedbackStore
from outbox.models import FeedbackEvent
from tests.integration.campaign_helpers import (
    Service,
    add_campaign,
    add_event,
    add_list,
    add_people,
    campaign_messages,
    fetch,
    mark_sent,
    service,
    stats,
    subscribe,
    wait_until,
)

_ids = itertools.count(1)


async def feedback(pool: asyncpg.Pool, message: asyncpg.Record, kind: str, **extra: str) -> None:
    """One SES event about ``message``, through the feedback store as the webhook records it."""
    await FeedbackStore(pool).record(
        FeedbackEvent(
            source_id=f"sns-{next(_ids)}",
            event_type=kind,
            provider_message_id=message["provider_message_id"],
            recipient=message["recipient"],
            occurred_at=None,
            payload={"eventType": kind},
            bounce_type=extra.get("bounce_type"),
            complaint_type=extra.get("complaint_type"),
        )
    )


async def _campaign_status(pool: asyncpg.Pool, campaign: int) -> str:
    status: str = await pool.fetchval("SELECT status FROM outbox.campaign WHERE id = $1", campaign)
    return status


async def test_the_winner_by_opens_goes_to_the_rest(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    keys = [f"p{i:02}" for i in range(40)]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    variants = [{"subject": "Spring sale"}, {"subject": "20% off everything"}]
    campaign = await add_campaign(
        pool, 1, variants=variants, test_percent=50, winner_after="1 hour"
    )
    assert await pool.fetchval("SELECT outbox.start_campaign($1)", campaign) == 20
    async with service(database_url, tmp_path) as running:

        async def test_share_sent() -> bool:
            rows = await campaign_messages(pool, campaign)
            return all(r["status"] == "sent" for r in rows)

        await wait_until(test_share_sent, running.recorder.changed)
        test_share = await campaign_messages(pool, campaign)
        a = [r for r in test_share if r["variant"] == "A"]
        b = [r for r in test_share if r["variant"] == "B"]
        assert (len(a), len(b)) == (10, 10)
        # The feedback stream: 2 of A's messages opened, 6 of B's (one of them three times,
        # as SES reports each open); a click on A counts for clicks, not opens.
        for message in [*a[:2], *b[:6], b[0], b[0]]:
            await feedback(pool, message, "open")
        await feedback(pool, a[5], "click")
        assert await pool.fetchval("SELECT winner_variant FROM outbox.campaign") is None
        # winner_after has passed.
        await pool.execute(
            "UPDATE outbox.campaign SET started_at = started_at - interval '2 hours'"
        )

        async def sent() -> bool:
            return await _campaign_status(pool, campaign) == "sent"

        await wait_until(sent, running.recorder.changed)
    row = await pool.fetchrow("SELECT * FROM outbox.campaign WHERE id = $1", campaign)
    assert row["winner_variant"] == "B"
    assert json.loads(row["winner_rates"]) == {
        "A": {"sent": 10, "opened": 2, "rate": 0.2},
        "B": {"sent": 10, "opened": 6, "rate": 0.6},
    }
    assert row["winner_chosen_at"] is not None and row["audience"] == 40
    rest = [r for r in await campaign_messages(pool, campaign) if r["id"] not in
            {m["id"] for m in test_share}]  # fmt: skip
    assert len(rest) == 20 and {r["variant"] for r in rest} == {"B"}
    assert running.eml(rest[0]["id"])["Subject"] == "20% off everything"
    assert await stats(pool, campaign) == {
        "A": {"sent": 10, "delivered": 0, "opened": 2, "clicked": 1, "bounced": 0,
              "complained": 0, "unsubscribed": 0},
        "B": {"sent": 30, "delivered": 0, "opened": 6, "clicked": 0, "bounced": 0,
              "complained": 0, "unsubscribed": 0},
    }  # fmt: skip


async def _ab(pool: asyncpg.Pool, **fields: object) -> tuple[int, dict[str, list[int]]]:
    keys = [f"q{i}" for i in range(8)]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    campaign = await add_campaign(
        pool, 1, variants=[{"subject": "a"}, {"subject": "b"}], test_percent=50,
        winner_after="1 minute", **fields,
    )  # fmt: skip
    await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)
    await mark_sent(pool, campaign)
    ids: dict[str, list[int]] = {}
    for row in await campaign_messages(pool, campaign):
        ids.setdefault(row["variant"], []).append(row["id"])
    return campaign, ids


async def test_a_tie_goes_to_the_first_variant(pool: asyncpg.Pool) -> None:
    campaign, ids = await _ab(pool)
    await add_event(pool, ids["A"][0], "open", "o1")
    await add_event(pool, ids["B"][0], "open", "o2")
    assert await pool.fetchval("SELECT outbox.campaign_pick_winner($1)", campaign) == "A"
    assert await pool.fetchval("SELECT count(*) FROM outbox.message WHERE variant = 'A'") == 6
    with pytest.raises(asyncpg.InvalidParameterValueError, match="not an A/B test waiting"):
        await pool.fetchval("SELECT outbox.campaign_pick_winner($1)", campaign)


async def test_the_winner_by_clicks(pool: asyncpg.Pool) -> None:
    campaign, ids = await _ab(pool, winner_metric="clicked")
    for n, message in enumerate(ids["A"]):
        await add_event(pool, message, "open", f"o{n}")
    await add_event(pool, ids["B"][1], "click", "c1")
    await add_event(pool, ids["B"][1], "click", "c2")  # one message, counted once
    assert await pool.fetchval("SELECT outbox.campaign_pick_winner($1)", campaign) == "B"
    rates = json.loads(await pool.fetchval("SELECT winner_rates FROM outbox.campaign"))
    assert rates == {"A": {"sent": 2, "clicked": 0, "rate": 0},
                     "B": {"sent": 2, "clicked": 1, "rate": 0.5}}  # fmt: skip


async def test_stats_count_distinct_messages(pool: asyncpg.Pool) -> None:
    keys = ["m1", "m2", "m3", "m4", "m5"]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    campaign = await add_campaign(pool, 1)
    await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)
    await mark_sent(pool, campaign)
    await pool.execute(
        "UPDATE outbox.message SET status = 'pending', sent_at = NULL WHERE recipient_key = 'm5'"
    )
    m = {r["recipient_key"]: r["id"] for r in await campaign_messages(pool, campaign)}
    for source_id in ("o1", "o2", "o3"):  # three opens of one message
        await add_event(pool, m["m1"], "open", source_id)
    await pool.execute(
        "INSERT INTO outbox.event (message_id, source, source_id, event_type) "
        "VALUES ($1, 'tracking', $2, 'open'), ($1, 'tracking', $2 || ':x', 'click'), "
        "       ($1, 'tracking', $2 || ':y', 'click')",
        m["m1"],
        str(m["m1"]),
    )
    await add_event(pool, m["m1"], "delivery", "d1")
    await add_event(pool, m["m2"], "delivery", "d2")
    await add_event(pool, m["m2"], "bounce", "b1", "Transient")
    await add_event(pool, m["m2"], "bounce", "b2", "Permanent")
    await add_event(pool, m["m2"], "bounce", "b3", "Permanent")
    await add_event(pool, m["m3"], "complaint", "c1", "not-spam")
    await add_event(pool, m["m3"], "bounce", "b4", "Transient")
    await add_event(pool, m["m4"], "complaint", "c2", "abuse")
    await add_event(pool, m["m4"], "complaint", "c3", None)
    await add_event(pool, m["m4"], "unsubscribe", "u1")
    other = await pool.fetchval(
        "INSERT INTO outbox.message (channel, recipient, template) "
        "VALUES ('email', 'x@example.com', 'welcome') RETURNING id"
    )
    await add_event(pool, other, "open", "o9")
    assert await stats(pool, campaign) == {
        None: {"sent": 4, "delivered": 2, "opened": 1, "clicked": 1, "bounced": 1,
               "complained": 1, "unsubscribed": 1},
    }  # fmt: skip


@pytest.fixture
async def subscribed(pool: asyncpg.Pool) -> asyncpg.Pool:
    """u1 and u2 on two lists; u3 only on news."""
    await add_people(pool, {"u1": {}, "u2": {}, "u3": {}})
    await add_list(pool, "news")
    await add_list(pool, "promo")
    await subscribe(pool, "news", ["u1", "u2", "u3"])
    await subscribe(pool, "promo", ["u1", "u2"])
    return pool


async def _subscriptions(pool: asyncpg.Pool) -> dict[tuple[str, str], tuple[str, int | None]]:
    rows = await pool.fetch(
        "SELECT l.name, s.recipient_key, s.status, s.ended_by_message_id "
        "FROM outbox.subscription s JOIN outbox.list l ON l.id = s.list_id"
    )
    return {(r["name"], r["recipient_key"]): (r["status"], r["ended_by_message_id"]) for r in rows}


@pytest.fixture
async def sent_campaign(
    subscribed: asyncpg.Pool, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Service, int, dict[str, asyncpg.Record]]]:
    """A news campaign sent to u1..u3 by a running daemon."""
    pool = subscribed
    campaign = await add_campaign(pool, 1)
    async with service(database_url, tmp_path) as running:
        await pool.fetchval("SELECT outbox.start_campaign($1)", campaign)

        async def sent() -> bool:
            return await _campaign_status(pool, campaign) == "sent"

        await wait_until(sent, running.recorder.changed)
        rows = {r["recipient_key"]: r for r in await campaign_messages(pool, campaign)}
        yield running, campaign, rows


def _one_click_url(running: Service, message_id: int) -> str:
    header = running.eml(message_id)["List-Unsubscribe"]
    link = header.split("<", 1)[1].split(">", 1)[0]
    return running.local(link)


async def test_one_click_unsubscribe_ends_that_list_only_and_names_the_message(
    pool: asyncpg.Pool, sent_campaign: tuple[Service, int, dict[str, asyncpg.Record]]
) -> None:
    running, campaign, messages = sent_campaign
    u1 = messages["u1"]["id"]
    url = _one_click_url(running, u1)
    status, _, _ = await fetch(url, method="POST", data={"List-Unsubscribe": "One-Click"})
    assert status == 200
    subscriptions = await _subscriptions(pool)
    assert subscriptions[("news", "u1")] == ("unsubscribed", u1)
    assert subscriptions[("promo", "u1")] == ("active", None)
    assert subscriptions[("news", "u2")] == ("active", None)
    event = await pool.fetchrow("SELECT * FROM outbox.event WHERE event_type = 'unsubscribe'")
    assert (event["message_id"], event["source"], event["recipient"]) == (
        u1, "outboxd", "u1@example.com"
    )  # fmt: skip
    # A second click changes nothing and counts once.
    await fetch(url, method="POST", data={"List-Unsubscribe": "One-Click"})
    assert (await stats(pool, campaign))[None]["unsubscribed"] == 1
    # The next campaign to the list leaves them out.
    again = await add_campaign(pool, 1, name="Again")
    assert await pool.fetchval("SELECT outbox.start_campaign($1)", again) == 2
    # Switching the category back on, on the person's page, brings the subscription back.
    status, _, _ = await fetch(
        url, method="POST", data={"action": "save", "on": f"email:{messages['u1']['category']}"}
    )
    assert status == 200
    assert (await _subscriptions(pool))[("news", "u1")] == ("active", None)


async def test_unsubscribing_from_everything_ends_every_subscription(
    pool: asyncpg.Pool, sent_campaign: tuple[Service, int, dict[str, asyncpg.Record]]
) -> None:
    running, _, messages = sent_campaign
    url = _one_click_url(running, messages["u2"]["id"])
    status, _, _ = await fetch(url, method="POST", data={"action": "off"})  # everything
    assert status == 200
    subscriptions = await _subscriptions(pool)
    assert subscriptions[("news", "u2")] == ("unsubscribed", messages["u2"]["id"])
    assert subscriptions[("promo", "u2")][0] == "unsubscribed"
    assert subscriptions[("news", "u1")] == ("active", None)


async def test_a_persons_switches_end_subscriptions_unless_a_category_stays_on(
    subscribed: asyncpg.Pool,
) -> None:
    pool = subscribed
    # Everything off, but marketing email kept on: the most specific switch wins.
    await pool.execute(
        "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled) "
        "VALUES ('u1', '*', '*', false), ('u1', 'email', 'marketing', true)"
    )
    # Everything off, nothing kept: every subscription ends.
    await pool.execute(
        "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled) "
        "VALUES ('u2', 'email', '*', false)"
    )
    subscriptions = await _subscriptions(pool)
    assert subscriptions[("news", "u1")][0] == subscriptions[("promo", "u1")][0] == "active"
    assert subscriptions[("news", "u2")][0] == subscriptions[("promo", "u2")][0] == "unsubscribed"
    assert subscriptions[("news", "u3")][0] == "active"


async def test_hard_bounces_and_complaints_end_the_subscription(
    pool: asyncpg.Pool, sent_campaign: tuple[Service, int, dict[str, asyncpg.Record]]
) -> None:
    _, campaign, messages = sent_campaign
    # Another message of the list is still waiting for u1 when the bounce arrives.
    waiting = await pool.fetchval(
        "INSERT INTO outbox.message (channel, recipient, template, category, priority, "
        "not_before, recipient_key, list_id) VALUES ('email', 'u1@example.com', 'newsletter', "
        "'marketing', 0, now() + interval '1 day', 'u1', 1) RETURNING id"
    )
    await feedback(pool, messages["u3"], "bounce", bounce_type="Transient")
    await feedback(pool, messages["u2"], "complaint", complaint_type="not-spam")
    assert set((await _subscriptions(pool)).values()) == {("active", None)}
    await feedback(pool, messages["u1"], "bounce", bounce_type="Permanent")
    await feedback(pool, messages["u2"], "complaint", complaint_type="abuse")
    subscriptions = await _subscriptions(pool)
    assert subscriptions[("news", "u1")] == ("bounced", messages["u1"]["id"])
    assert subscriptions[("news", "u2")] == ("complained", messages["u2"]["id"])
    assert subscriptions[("promo", "u1")] == ("active", None)  # another list's subscription
    assert subscriptions[("news", "u3")] == ("active", None)
    counts = (await stats(pool, campaign))[None]
    assert (counts["bounced"], counts["complained"]) == (1, 1)
    cancelled = await pool.fetchrow("SELECT * FROM outbox.message WHERE id = $1", waiting)
    assert (cancelled["status"], cancelled["last_error"]) == (
        "cancelled", "bounced from list 1 before it was sent"
    )  # fmt: skip
