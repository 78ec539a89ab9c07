"""When notify()'s rows may go: quiet hours, do-not-disturb, DST, re-timing, the per-person
cap and escalation.

Every instant is fixed, and the sessions run in a time zone of their own (Chatham, +12:45
or +13:45) so that no result can come from the server's or the session's zone by accident.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from outbox import notify, upsert_recipient
from tests.integration.lock_waits import wait_until_blocked


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn:
        await conn.execute("SET TimeZone = 'Pacific/Chatham'")
        yield conn
        await conn.execute("RESET TimeZone")


async def person(conn: asyncpg.Connection, **fields: object) -> None:
    profile: dict[str, object] = {"email": "ann@example.com", "phone": "+14155550100",
                                  "timezone": "Europe/Berlin"}  # fmt: skip
    profile.update(fields)
    await upsert_recipient(conn, "u1", **profile)  # type: ignore[arg-type]


async def due(conn: asyncpg.Connection, nid: int) -> dict[str, tuple[datetime, str | None]]:
    rows = await conn.fetch(
        "SELECT channel, not_before, deferred_reason FROM outbox.message"
        " WHERE notification_id = $1",
        nid,
    )
    return {r["channel"]: (r["not_before"], r["deferred_reason"]) for r in rows}


async def send(conn: asyncpg.Connection, at: datetime, **options: object) -> int:
    arguments: dict[str, object] = {"category": "social", "priority": 2,
                                    "channels": ["email", "sms", "inapp"]}  # fmt: skip
    arguments.update(options)
    return await notify(conn, recipient_key="u1", template="t", not_before=at, **arguments)  # type: ignore[arg-type]


# Quiet hours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "at", "released"),
    [
        # 22:00-07:00 wraps midnight; Berlin is UTC+2 in June.
        (("22:00", "07:00"), "2026-06-10 21:30", "2026-06-11 05:00"),  # 23:30 local
        (("22:00", "07:00"), "2026-06-10 01:00", "2026-06-10 05:00"),  # 03:00 local
        (("22:00", "07:00"), "2026-06-10 20:00", "2026-06-11 05:00"),  # the start is inside
        (("22:00", "07:00"), "2026-06-10 05:00", None),  # 07:00 local: the end is not
        (("22:00", "07:00"), "2026-06-10 12:00", None),
        (("12:00", "14:00"), "2026-06-10 10:30", "2026-06-10 12:00"),  # a daytime window
        (("12:00", "14:00"), "2026-06-10 21:30", None),
    ],
)
async def test_quiet_hours_hold_email_and_sms_until_the_window_ends(
    conn: asyncpg.Connection, window: tuple[str, str], at: str, released: str | None
) -> None:
    await person(conn, quiet_hours=window)
    rows = await due(conn, await send(conn, utc(at)))
    expected = utc(released) if released else utc(at)
    assert rows["email"][0] == rows["sms"][0] == expected
    assert rows["inapp"] == (utc(at), None)  # in-app items never wake anyone
    if released:
        assert rows["email"][1] == f"quiet hours {window[0]}-{window[1]} Europe/Berlin until " + (
            utc(released) + timedelta(hours=2)
        ).strftime("%Y-%m-%d %H:%M")
    else:
        assert rows["email"][1] is None


@pytest.mark.parametrize(("category", "priority"), [("transactional", 1), ("social", 3)])
async def test_transactional_and_urgent_are_never_held(
    conn: asyncpg.Connection, category: str, priority: int
) -> None:
    await person(conn, quiet_hours=("22:00", "07:00"), dnd_until=utc("2026-06-12 00:00"))
    at = utc("2026-06-10 23:00")
    rows = await due(conn, await send(conn, at, category=category, priority=priority))
    assert rows == {c: (at, None) for c in ("email", "sms", "inapp")}
    assert await conn.fetchval("SELECT count(*) FROM outbox.message"
                               " WHERE original_not_before IS NOT NULL") == 0  # fmt: skip


async def test_do_not_disturb_holds_until_it_ends_then_quiet_hours_apply(
    conn: asyncpg.Connection,
) -> None:
    dnd_until = utc("2026-06-10 15:00")  # 17:00 in Berlin
    await person(conn, dnd_until=dnd_until)
    held = await due(conn, await send(conn, utc("2026-06-10 13:00")))
    reason = "do not disturb until 2026-06-10 17:00 Europe/Berlin"
    assert held["email"] == held["sms"] == (dnd_until, reason)
    assert held["inapp"] == (utc("2026-06-10 13:00"), None)

    # DND ends inside the quiet window (17:00 local in 16:30-18:00): both reasons.
    await person(conn, dnd_until=dnd_until, quiet_hours=("16:30", "18:00"))
    both = await due(conn, await send(conn, utc("2026-06-10 14:45")))
    quiet = "quiet hours 16:30-18:00 Europe/Berlin until 2026-06-10 18:00"
    assert both["email"] == (utc("2026-06-10 16:00"), f"{reason}; {quiet}")

    free = await due(conn, await send(conn, utc("2026-06-10 16:00")))
    assert free["email"] == (utc("2026-06-10 16:00"), None)


# DST -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "window", "at", "released"),
    [
        # New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC): 07:00 local
        # is 11:00 UTC, not the 12:00 that the evening's offset would give.
        ("America/New_York", ("22:00", "07:00"), "2026-03-08 04:00", "2026-03-08 11:00"),
        # ... and falls back 2026-11-01 02:00 EDT -> 01:00 EST: 07:00 local is 12:00 UTC.
        ("America/New_York", ("22:00", "07:00"), "2026-11-01 03:00", "2026-11-01 12:00"),
        # A window ending at 02:30, which does not exist that night: released when the
        # clock jumps to 03:00 EDT (07:00 UTC), not at "03:30".
        ("America/New_York", ("22:00", "02:30"), "2026-03-08 04:00", "2026-03-08 07:00"),
        # A window ending at 01:30, which happens twice: at the first one (EDT) for a row
        # held since the evening, at the second (EST) for one due in the repeated hour.
        ("America/New_York", ("22:00", "01:30"), "2026-11-01 03:00", "2026-11-01 05:30"),
        ("America/New_York", ("22:00", "01:30"), "2026-11-01 06:10", "2026-11-01 06:30"),
        # Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
        ("Europe/Berlin", ("23:00", "06:00"), "2026-03-28 23:00", "2026-03-29 04:00"),
        ("Europe/Berlin", ("23:00", "06:00"), "2026-10-24 22:00", "2026-10-25 05:00"),
        ("Europe/Berlin", ("01:00", "02:30"), "2026-03-29 00:15", "2026-03-29 01:00"),
    ],
)
async def test_quiet_hours_across_dst_transitions(
    conn: asyncpg.Connection, tz: str, window: tuple[str, str], at: str, released: str
) -> None:
    await person(conn, timezone=tz, quiet_hours=window)
    rows = await due(conn, await send(conn, utc(at)))
    assert rows["email"][0] == rows["sms"][0] == utc(released)


# Re-timing -------------------------------------------------------------------------------


async def test_changing_quiet_hours_retimes_pending_rows_from_their_original_time(
    conn: asyncpg.Connection,
) -> None:
    await person(conn)
    at = utc("2026-06-10 21:30")  # 23:30 in Berlin
    nid = await send(conn, at)
    done = await send(conn, at)
    await conn.execute("UPDATE outbox.message SET status = 'sent' WHERE notification_id = $1", done)
    assert (await due(conn, nid))["email"] == (at, None)

    await person(conn, quiet_hours=("22:00", "07:00"))
    rows = await due(conn, nid)
    assert rows["email"][0] == rows["sms"][0] == utc("2026-06-11 05:00")
    assert rows["email"][1].startswith("quiet hours 22:00-07:00")
    assert rows["inapp"] == (at, None)
    assert (await due(conn, done))["email"] == (at, None)  # finished rows stay as they were

    await person(conn, quiet_hours=("23:00", "06:00"))  # moving the window moves the rows
    assert (await due(conn, nid))["email"][0] == utc("2026-06-11 04:00")
    await person(conn, timezone="UTC", quiet_hours=("23:00", "06:00"))  # 21:30 UTC: free
    assert (await due(conn, nid))["email"] == (at, None)


async def test_shortening_or_clearing_dnd_releases_rows(conn: asyncpg.Connection) -> None:
    await person(conn, dnd_until=utc("2026-06-20 00:00"))
    at = utc("2026-06-10 12:00")
    nid = await send(conn, at)
    assert (await due(conn, nid))["sms"][0] == utc("2026-06-20 00:00")
    await person(conn, dnd_until=utc("2026-06-15 00:00"))
    assert (await due(conn, nid))["sms"][0] == utc("2026-06-15 00:00")
    await conn.execute("UPDATE outbox.recipient SET dnd_until = NULL WHERE key = 'u1'")
    assert (await due(conn, nid))["sms"] == (at, None)
    original = await conn.fetchval(
        "SELECT original_not_before FROM outbox.message"
        " WHERE notification_id = $1 AND channel = 'sms'",
        nid,
    )
    assert original == at


async def test_rows_the_daemon_has_tried_keep_their_retry_time(conn: asyncpg.Connection) -> None:
    await person(conn)
    nid = await send(conn, utc("2026-06-10 12:00"))
    retry_at = utc("2026-06-10 12:30")
    await conn.execute(
        "UPDATE outbox.message SET attempts = 1, not_before = $2"
        " WHERE notification_id = $1 AND channel = 'email'",
        nid,
        retry_at,
    )
    await person(conn, dnd_until=utc("2026-06-20 00:00"))
    rows = await due(conn, nid)
    assert rows["email"][0] == retry_at
    assert rows["sms"][0] == utc("2026-06-20 00:00")


# The per-person cap ----------------------------------------------------------------------


async def test_the_hourly_cap_defers_the_excess_to_the_next_hour_with_room(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("UPDATE outbox.people_setting SET person_hourly_cap = 2")
    await person(conn)
    at = utc("2026-06-10 10:15")
    sent = [await send(conn, at + timedelta(minutes=i)) for i in range(5)]
    hours = [(await due(conn, nid))["email"][0] for nid in sent]
    assert hours == [at, at + timedelta(minutes=1), utc("2026-06-10 11:00"),
                     utc("2026-06-10 11:00"), utc("2026-06-10 12:00")]  # fmt: skip
    third = await due(conn, sent[2])
    reason = ("per-person hourly cap of 2 reached for 2026-06-10 10:00 UTC;"
              " deferred to 2026-06-10 11:00 UTC")  # fmt: skip
    # The whole notification waits, in-app item included, and every row says why.
    assert third == {c: (utc("2026-06-10 11:00"), reason) for c in ("email", "sms", "inapp")}

    # Transactional and urgent notifications neither count nor wait.
    for options in ({"category": "transactional"}, {"priority": 3}):
        rows = await due(conn, await send(conn, at, **options))
        assert rows["email"] == (at, None)
    assert await conn.fetchval("SELECT count(*) FROM outbox.notification"
                               " WHERE cap_hour IS NOT NULL") == 5  # fmt: skip


async def test_a_capped_row_that_lands_in_quiet_hours_says_both(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE outbox.people_setting SET person_hourly_cap = 1")
    await person(conn, quiet_hours=("01:00", "07:00"))  # Berlin: 23:00-05:00 UTC
    await send(conn, utc("2026-06-10 22:10"))
    nid = await send(conn, utc("2026-06-10 22:20"))
    rows = await due(conn, nid)
    assert rows["inapp"][0] == utc("2026-06-10 23:00")
    assert rows["email"][0] == utc("2026-06-11 05:00")
    assert rows["email"][1].startswith("per-person hourly cap of 1 reached")
    assert "; quiet hours 01:00-07:00" in rows["email"][1]
    # Clearing the quiet hours releases the row to the cap's hour, not to the asked time.
    await person(conn)
    rows = await due(conn, nid)
    assert rows["email"][0] == utc("2026-06-10 23:00")
    assert rows["email"][1].startswith("per-person hourly cap of 1 reached")


async def test_without_a_cap_nothing_is_deferred(conn: asyncpg.Connection) -> None:
    await person(conn)
    at = utc("2026-06-10 10:15")
    for _ in range(5):
        assert (await due(conn, await send(conn, at)))["email"] == (at, None)


# Escalation ------------------------------------------------------------------------------


async def test_escalation_sends_in_app_at_once_and_the_rest_later(
    conn: asyncpg.Connection,
) -> None:
    await person(conn)
    at = utc("2026-06-10 12:00")
    nid = await send(conn, at, escalate_after=timedelta(minutes=15))
    rows = await due(conn, nid)
    reason = "escalation: waits 00:15:00 for the in-app item to be read"
    assert rows["inapp"] == (at, None)
    assert rows["email"] == rows["sms"] == (at + timedelta(minutes=15), reason)
    stored = await conn.fetchval(
        "SELECT escalate_after FROM outbox.notification WHERE id = $1", nid
    )
    assert stored == timedelta(minutes=15)


async def test_escalation_without_an_in_app_item_sends_at_once(conn: asyncpg.Connection) -> None:
    await person(conn)
    await conn.execute("INSERT INTO outbox.channel_preference (recipient_key, channel, category,"
                       " enabled) VALUES ('u1', 'inapp', '*', false)")  # fmt: skip
    at = utc("2026-06-10 12:00")
    nid = await send(conn, at, escalate_after=timedelta(minutes=15))
    assert await due(conn, nid) == {"email": (at, None), "sms": (at, None)}
    assert await conn.fetchval("SELECT escalate_after FROM outbox.notification") is None


async def test_escalate_after_defaults_to_now(conn: asyncpg.Connection) -> None:
    await person(conn)
    async with conn.transaction():
        now = await conn.fetchval("SELECT now()")
        nid = await notify(conn, recipient_key="u1", template="t", priority=3,
                           escalate_after=timedelta(minutes=15))  # fmt: skip
        rows = await due(conn, nid)
    assert rows["inapp"][0] == now
    assert rows["sms"][0] == rows["email"][0] == now + timedelta(minutes=15)


async def test_concurrent_notifies_to_one_person_cannot_both_take_the_last_place(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute("UPDATE outbox.people_setting SET person_hourly_cap = 1")
    at = utc("2026-06-10 10:15")
    async with pool.acquire() as first, pool.acquire() as second:
        await person(first)
        tx = first.transaction()
        await tx.start()
        await send(first, at)
        racing = asyncio.create_task(send(second, at))
        await wait_until_blocked(pool, second.get_server_pid())
        await tx.commit()
        rows = await due(second, await racing)
    assert rows["email"][0] == utc("2026-06-10 11:00")
