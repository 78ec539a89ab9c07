"""Digests: batched rows folded into one message per group once the window has closed.

Windows are opened at fixed instants (``not_before``) and flushed "as of" fixed instants,
so no test depends on when it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.people.digests import DigestFlusher, DigestTemplates
from daemon.people.store import FlushCounts, PeopleStore
from outbox import notify, resources, upsert_recipient
from tests.integration.daemon_helpers import drain, make_settings, read_eml, running

T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=10)


async def add_person(conn: asyncpg.Connection, key: str = "u1", **fields: Any) -> None:
    profile: dict[str, Any] = {"email": f"{key}@example.com", "phone": "+14155550100"}
    profile.update(fields)
    await upsert_recipient(conn, key, **profile)


async def comment(
    conn: asyncpg.Connection, n: int, *, key: str = "u1", at: datetime = T0, **args: Any
) -> int:
    values: dict[str, Any] = {
        "recipient_key": key, "template": "comment", "category": "social",
        "context": {"title": f"comment {n}"}, "digest_key": "post:7", "digest_window": WINDOW,
        "not_before": at,
    }  # fmt: skip
    values.update(args)
    return await notify(conn, **values)


def flusher(pool: asyncpg.Pool, *directories: Path, batch: int = 500) -> DigestFlusher:
    templates = DigestTemplates([*directories, resources.bundled_templates_dir()])
    return DigestFlusher(PeopleStore(pool), templates, interval=60, batch=batch)


async def rows(pool: asyncpg.Pool, where: str = "true") -> list[dict[str, Any]]:
    found = await pool.fetch(f"SELECT * FROM outbox.message WHERE {where} ORDER BY id")
    return [dict(row) for row in found]


async def digests(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return await rows(pool, "idempotency_key LIKE 'outboxd:digest:%'")


# Windows ---------------------------------------------------------------------------------


async def test_a_group_waits_for_its_window_then_becomes_one_pending_digest(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, locale="fr")
        for n in range(3):
            await comment(conn, n, at=T0 + timedelta(minutes=2 * n), channels=["email"],
                          priority=n % 2, tags={"post": 7})  # fmt: skip
    flush = flusher(pool)
    assert await flush.flush_due(as_of=T0 + WINDOW - timedelta(seconds=1)) == FlushCounts()
    assert await digests(pool) == []

    assert await flush.flush_due(as_of=T0 + WINDOW) == FlushCounts(digests=1, items=3)
    [digest] = await digests(pool)
    items = await rows(pool, "status = 'digested'")
    assert [item["digest_message_id"] for item in items] == [digest["id"]] * 3
    assert (digest["status"], digest["template"], digest["channel"]) == (
        "pending",
        "digest",
        "email",
    )
    assert (digest["recipient"], digest["recipient_key"], digest["locale"]) == (
        "u1@example.com", "u1", "fr",
    )  # fmt: skip
    assert (digest["category"], digest["priority"], digest["digest_key"]) == ("social", 1, "post:7")
    assert json.loads(digest["tags"]) == {"post": 7}
    context = json.loads(digest["context"])
    assert context["count"] == 3
    assert [item["title"] for item in context["items"]] == ["comment 0", "comment 1", "comment 2"]
    for item, row in zip(context["items"], items, strict=True):
        assert item["created_at"].endswith("Z")
        assert datetime.fromisoformat(item["created_at"]) == row["created_at"]
    # Nothing is left to flush, however often it runs.
    assert await flush.flush_due(as_of=T0 + 2 * WINDOW) == FlushCounts()


async def test_the_window_counts_from_the_first_item_and_a_later_item_starts_a_new_one(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await comment(conn, 0, at=T0, channels=["email"])
        await comment(conn, 1, at=T0 + timedelta(minutes=9), channels=["email"])
    flush = flusher(pool)
    assert (await flush.flush_due(as_of=T0 + WINDOW)).items == 2
    async with pool.acquire() as conn:
        await comment(conn, 2, at=T0 + timedelta(minutes=11), channels=["email"])
    assert await flush.flush_due(as_of=T0 + timedelta(minutes=20)) == FlushCounts()
    assert await flush.flush_due(as_of=T0 + timedelta(minutes=21)) == FlushCounts(1, 1)
    contexts = [json.loads(d["context"]) for d in await digests(pool)]
    assert [c["count"] for c in contexts] == [2, 1]


async def test_groups_are_per_person_channel_and_digest_key(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for key in ("u1", "u2"):
            await add_person(conn, key)
            for post in (7, 8):
                for n in range(2):
                    await comment(conn, n, key=key, digest_key=f"post:{post}")
    assert await flusher(pool).flush_due(as_of=T0 + WINDOW) == FlushCounts(8, 16)
    groups = Counter(
        (d["recipient_key"], d["channel"], d["digest_key"]) for d in await digests(pool)
    )
    assert len(groups) == 8 and set(groups.values()) == {1}
    assert {channel for _, channel, _ in groups} == {"email", "inapp"}


# Cancellation, expiry, what is never digested --------------------------------------------


async def test_cancelled_items_are_left_out_and_an_all_cancelled_group_sends_nothing(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        kept = [await comment(conn, n, channels=["email"]) for n in range(3)]
        gone = [await comment(conn, n, channels=["email"], digest_key="post:8") for n in range(2)]
        for notification_id in [kept[1], *gone]:
            cancelled = await conn.fetchval(
                "SELECT outbox.cancel(id) FROM outbox.message WHERE notification_id = $1",
                notification_id,
            )
            assert cancelled is True
    assert await flusher(pool).flush_due(as_of=T0 + WINDOW) == FlushCounts(1, 2)
    [digest] = await digests(pool)
    titles = [item["title"] for item in json.loads(digest["context"])["items"]]
    assert titles == ["comment 0", "comment 2"]
    statuses = Counter(row["status"] for row in await rows(pool, "template = 'comment'"))
    assert statuses == {"digested": 2, "cancelled": 3}


async def test_an_item_that_expired_while_waiting_is_not_sent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await comment(conn, 0, channels=["email"], expires_at=T0 + timedelta(minutes=5))
        await comment(conn, 1, channels=["email"])
        await comment(conn, 2, channels=["email"], digest_key="post:8",
                      expires_at=T0 + timedelta(minutes=5))  # fmt: skip
    assert await flusher(pool).flush_due(as_of=T0 + WINDOW) == FlushCounts(1, 1, 2)
    [digest] = await digests(pool)
    assert json.loads(digest["context"])["count"] == 1
    expired = await rows(pool, "status = 'expired'")
    assert [row["last_error"] for row in expired] == ["expired while waiting for its digest"] * 2


async def test_transactional_urgent_and_escalated_notifications_are_never_digested(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await conn.execute(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, frequency)"
            " VALUES ('u1', '*', '*', 'daily')"
        )
        plain = await notify(conn, recipient_key="u1", template="t", category="social")
        others = [
            await notify(conn, recipient_key="u1", template="t"),
            await notify(conn, recipient_key="u1", template="t", category="social", priority=3),
            await notify(
                conn,
                recipient_key="u1",
                template="t",
                category="social",
                escalate_after=timedelta(minutes=5),
            ),
            await notify(
                conn, recipient_key="u1", template="t", digest_key="k", digest_window=WINDOW
            ),
        ]
        statuses = {
            nid: {r["status"] for r in await conn.fetch(
                "SELECT status FROM outbox.message WHERE notification_id = $1", nid)}
            for nid in [plain, *others]
        }  # fmt: skip
    assert statuses[plain] == {"batched"}
    assert all(statuses[nid] == {"pending"} for nid in others)


# Frequencies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frequency", "zone", "at", "closes"),
    [
        # New York springs forward on 2026-03-08 at 02:00 and falls back on 2026-11-01.
        ("daily", "America/New_York", "2026-03-07T15:00Z", "2026-03-08T12:00Z"),  # 08:00 EDT
        ("daily", "America/New_York", "2026-03-08T11:59Z", "2026-03-08T12:00Z"),
        ("daily", "America/New_York", "2026-03-08T12:00Z", "2026-03-09T12:00Z"),
        ("daily", "America/New_York", "2026-10-31T13:00Z", "2026-11-01T13:00Z"),  # 08:00 EST
        ("weekly", "America/New_York", "2026-03-04T12:00Z", "2026-03-09T12:00Z"),  # Monday
        ("weekly", "America/New_York", "2026-03-09T11:00Z", "2026-03-09T12:00Z"),
        ("weekly", "America/New_York", "2026-03-09T12:30Z", "2026-03-16T12:00Z"),
        ("weekly", "America/New_York", "2026-11-01T05:00Z", "2026-11-02T13:00Z"),
        ("hourly", "America/New_York", "2026-11-01T05:10Z", "2026-11-01T06:00Z"),  # 01:10 EDT
        ("hourly", "America/New_York", "2026-11-01T06:10Z", "2026-11-01T07:00Z"),  # 01:10 EST
        ("hourly", "Asia/Kolkata", "2026-03-07T15:10Z", "2026-03-07T15:30Z"),  # UTC+05:30
        ("daily", "Europe/Berlin", "2026-03-29T05:00Z", "2026-03-29T06:00Z"),  # 08:00 CEST
    ],
)
async def test_a_frequency_batches_the_category_until_the_next_local_hour_or_eight_oclock(
    pool: asyncpg.Pool, frequency: str, zone: str, at: str, closes: str
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, timezone=zone)
        await conn.execute(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, frequency)"
            " VALUES ('u1', 'email', 'social', $1)",
            frequency,
        )
        nid = await notify(conn, recipient_key="u1", template="t", category="social",
                           not_before=datetime.fromisoformat(at))  # fmt: skip
        found = {r["channel"]: r for r in await conn.fetch(
            "SELECT * FROM outbox.message WHERE notification_id = $1", nid)}  # fmt: skip
    email = found["email"]
    assert (email["status"], email["digest_key"]) == ("batched", f"frequency:{frequency}:social")
    assert email["not_before"] == datetime.fromisoformat(closes)
    assert email["deferred_reason"].startswith(f"digest frequency:{frequency}:social: its window")
    assert found["inapp"]["status"] == "pending"  # the person takes in-app items at once

    flush = flusher(pool)
    due = datetime.fromisoformat(closes)
    assert await flush.flush_due(as_of=due - timedelta(seconds=1)) == FlushCounts()
    assert await flush.flush_due(as_of=due) == FlushCounts(1, 1)


async def test_the_most_specific_preference_sets_the_frequency(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await conn.executemany(
            "INSERT INTO outbox.channel_preference"
            " (recipient_key, channel, category, enabled, frequency) VALUES ('u1', $1, $2, $3, $4)",
            [("*", "social", True, "daily"), ("email", "social", True, "instant"),
             ("*", "*", True, "weekly"), ("inapp", "news", False, "hourly")],
        )  # fmt: skip
        result = {}
        for category in ("social", "news", "billing"):
            nid = await notify(conn, recipient_key="u1", template="t", category=category)
            result[category] = {
                r["channel"]: r["digest_key"] or r["status"]
                for r in await conn.fetch(
                    "SELECT * FROM outbox.message WHERE notification_id = $1", nid
                )
            }
    assert result["social"] == {"email": "pending", "inapp": "frequency:daily:social"}
    # inapp is switched off for news: no row at all, whatever its frequency says.
    assert result["news"] == {"email": "frequency:weekly:news"}
    assert result["billing"] == {"email": "frequency:weekly:billing",
                                 "inapp": "frequency:weekly:billing"}  # fmt: skip


async def test_the_frequency_wins_over_the_callers_digest_key(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await conn.execute(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, frequency)"
            " VALUES ('u1', 'email', '*', 'daily')"
        )
        await comment(conn, 0)
        await comment(conn, 1, template="like", digest_key="likes")
        keys = [(r["channel"], r["digest_key"]) for r in await rows(pool)]
    assert keys == [("email", "frequency:daily:social"), ("inapp", "post:7"),
                    ("email", "frequency:daily:social"), ("inapp", "likes")]  # fmt: skip
    assert await flusher(pool).flush_due(as_of=T0 + timedelta(days=2)) == FlushCounts(3, 4)
    [daily] = [d for d in await digests(pool) if d["channel"] == "email"]
    # Items of different templates: the generic digest.
    assert (daily["template"], json.loads(daily["context"])["count"]) == ("digest", 2)


# Templates and delivery -------------------------------------------------------------------


async def test_a_templates_own_digest_variant_is_used_when_every_item_has_that_template(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    variant = tmp_path / "comment" / "digest"
    variant.mkdir(parents=True)
    for part in ("subject.j2", "text.j2"):
        (variant / part).write_text("{{ count }} comments")
    async with pool.acquire() as conn:
        await add_person(conn, "u1")
        await add_person(conn, "u2")
        for n in range(2):
            await comment(conn, n, key="u1")
        await comment(conn, 0, key="u2")
        await comment(conn, 1, key="u2", template="like")
    assert (await flusher(pool, tmp_path).flush_due(as_of=T0 + WINDOW)).digests == 4
    chosen = {(d["recipient_key"], d["channel"]): d["template"] for d in await digests(pool)}
    assert chosen == {
        ("u1", "email"): "comment/digest",
        ("u1", "inapp"): "digest",  # the variant has no in-app parts
        ("u2", "email"): "digest",  # mixed templates
        ("u2", "inapp"): "digest",
    }


async def test_the_bundled_digest_is_rendered_and_sent_from_any_template_directory(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    own = tmp_path / "templates"
    (own / "comment").mkdir(parents=True)  # the app's templates: no digest among them
    async with pool.acquire() as conn:
        await add_person(conn)
        context = {"title": "Bob: <b>nice</b>", "url": "https://app.example/p/7"}
        await comment(conn, 0, channels=["email"], context=context)
        await comment(conn, 1, channels=["email"], context={"title": "Eve replied"})
    assert (await flusher(pool, own).flush_due(as_of=T0 + WINDOW)).digests == 1
    settings = make_settings(database_url, tmp_path, templates_dir=own, brand_name="Acme")
    await drain(settings, database_url)
    [digest] = await digests(pool)
    assert (digest["status"], digest["last_error"]) == ("sent", None)
    mail = read_eml(tmp_path / "outgoing", digest["id"])
    assert mail["Subject"] == "2 new updates from Acme"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "* Bob: <b>nice</b> (" in text and "https://app.example/p/7" in text
    assert "* Eve replied (" in text
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Bob: &lt;b&gt;nice&lt;/b&gt;" in html and "<b>nice" not in html
    assert "List-Unsubscribe" in mail  # non-transactional: the category can be left


async def test_quiet_hours_and_dnd_hold_a_digest_email_but_not_its_in_app_item(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, timezone="Europe/Berlin")
        await comment(conn, 0)
        until = await conn.fetchval("SELECT date_trunc('second', now()) + interval '3 days'")
        await conn.execute("UPDATE outbox.recipient SET dnd_until = $1", until)
    await flusher(pool).flush_due(as_of=T0 + WINDOW)
    found = {d["channel"]: d for d in await digests(pool)}
    assert found["email"]["not_before"] == until
    assert found["email"]["deferred_reason"].startswith("do not disturb until")
    assert found["inapp"]["deferred_reason"] is None
    # Clearing DND releases the digest like any held row.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE outbox.recipient SET dnd_until = NULL")
        assert await conn.fetchval(
            "SELECT not_before <= now() FROM outbox.message WHERE id = $1", found["email"]["id"]
        )


# Exactly once -------------------------------------------------------------------------------


async def _groups_of_items(pool: asyncpg.Pool, persons: int, per_group: int) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbox.recipient (key, email)"
            " SELECT 'p' || i, 'p' || i || '@example.com' FROM generate_series(1, $1) AS i",
            persons,
        )
        await conn.execute(
            """SELECT outbox.notify(recipient_key => 'p' || i, template => 'comment',
                                    category => 'social', channels => ARRAY['email'],
                                    context => jsonb_build_object('n', n),
                                    digest_key => 'post', digest_window => '10 minutes',
                                    not_before => $2::timestamptz + i * interval '1 second')
                 FROM generate_series(1, $1) AS i, generate_series(1, $3) AS n""",
            persons,
            T0,
            per_group,
        )


async def _assert_each_group_digested_once(pool: asyncpg.Pool, groups: int, per_group: int) -> None:
    made = await digests(pool)
    assert len(made) == groups
    assert len({(d["recipient_key"], d["channel"], d["digest_key"]) for d in made}) == groups
    by_id = {d["id"]: d for d in made}
    items = await rows(pool, "template = 'comment'")
    assert {item["status"] for item in items} == {"digested"}
    assert Counter(item["digest_message_id"] for item in items) == Counter(
        {digest_id: per_group for digest_id in by_id}
    )
    for item in items:
        assert by_id[item["digest_message_id"]]["recipient_key"] == item["recipient_key"]
    assert {json.loads(d["context"])["count"] for d in made} == {per_group}


async def test_two_flushers_at_once_make_exactly_one_digest_per_group(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await _groups_of_items(pool, persons=400, per_group=3)
    other = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        results = await asyncio.gather(
            flusher(pool, batch=25).flush_due(as_of=T0 + timedelta(hours=1)),
            flusher(other, batch=25).flush_due(as_of=T0 + timedelta(hours=1)),
        )
    finally:
        await other.close()
    # A group whose bucket the other flusher held at the time waits for the next pass.
    results.append(await flusher(pool).flush_due(as_of=T0 + timedelta(hours=1)))
    assert sum(r.digests for r in results) == 400
    assert sum(r.items for r in results) == 1200
    await _assert_each_group_digested_once(pool, 400, 3)


async def test_a_group_that_cannot_be_flushed_does_not_hold_up_the_others(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await _groups_of_items(pool, persons=40, per_group=2)
    first = await pool.fetchval("SELECT min(id) FROM outbox.message WHERE recipient_key = 'p17'")
    # A row already holding the digest's guard key: that one group's flush fails.
    await pool.execute(
        "INSERT INTO outbox.message (channel, recipient, template, status, idempotency_key)"
        " VALUES ('email', 'x@example.com', 't', 'cancelled', $1)",
        f"outboxd:digest:{first}",
    )
    with caplog.at_level(logging.ERROR, logger="daemon.people.digests"):
        counts = await flusher(pool, batch=16).flush_due(as_of=T0 + timedelta(hours=1))
    assert counts == FlushCounts(39, 78)
    assert "digest post of p17 on email cannot be flushed" in caplog.text
    assert await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status = 'batched'") == 2


# The loop ---------------------------------------------------------------------------------


async def test_the_loop_wakes_when_the_next_window_closes(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await comment(conn, 0, channels=["email"], at=None, digest_window=timedelta(seconds=1))
    stopping = asyncio.Event()
    # An interval far longer than the test's deadline: the window's close must wake it.
    loop = asyncio.create_task(flusher(pool).run(stopping))
    try:
        for _ in range(600):  # up to 30 s
            if await digests(pool):
                break
            await asyncio.sleep(0.05)
        assert await digests(pool)
    finally:
        stopping.set()
        await loop


async def test_the_daemon_flushes_digests_and_sends_them(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
    settings = make_settings(database_url, tmp_path, people={"digest_interval": 0.2})
    async with running(settings, database_url) as (_, recorder):
        async with pool.acquire() as conn:
            for n in range(2):
                await comment(conn, n, channels=["email"], at=None,
                              digest_window=timedelta(milliseconds=300))  # fmt: skip
        await recorder.wait_for(1, within=30)
    [digest] = await digests(pool)
    assert [c.message_id for c in recorder.completions] == [digest["id"]]
    assert (digest["status"], json.loads(digest["context"])["count"]) == ("sent", 2)
