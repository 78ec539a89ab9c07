"""The people layer end to end: notify -> rows per tier -> the daemon drains them with the
file provider -> .eml files, .sms.json files and rendered outbox.inbox items."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from outbox import enqueue, notify, upsert_recipient
from outbox.models import Status
from outbox.store import Completion, Store
from tests.integration.daemon_helpers import drain, make_settings, read_eml

BOOKING = {"what": "Dentist", "when": "Tuesday 14:30", "url": "https://app.example.com/b/7"}


async def add_person(conn: asyncpg.Connection, key: str = "u1", **fields: Any) -> None:
    profile: dict[str, Any] = {
        "email": "ann@example.com",
        "phone": "+14155550100",
        "attrs": {"first_name": "Ann"},
    }
    profile.update(fields)
    await upsert_recipient(conn, key, **profile)


async def rows_of(pool: asyncpg.Pool, notification_id: int) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM outbox.message WHERE notification_id = $1 ORDER BY id", notification_id
    )
    return {row["channel"]: dict(row) for row in rows}


async def inbox(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM outbox.inbox ORDER BY id")]


async def test_every_channel_of_the_tier_is_delivered_with_the_person_in_templates(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await add_person(conn)
        nid = await notify(
            conn, recipient_key="u1", template="booking/reminder", priority=3,
            category="reminders", context={**BOOKING, "data": {"booking": 7}},
        )  # fmt: skip
    await drain(make_settings(database_url, tmp_path), database_url)

    rows = await rows_of(pool, nid)
    assert {c: r["status"] for c, r in rows.items()} == {
        "sms": "sent",
        "email": "sent",
        "inapp": "sent",
    }
    outgoing = tmp_path / "outgoing"
    mail = read_eml(outgoing, rows["email"]["id"])
    assert mail["To"] == "ann@example.com"
    assert mail["Subject"] == "Reminder: Dentist, Tuesday 14:30"
    text = mail.get_body(("plain",))
    assert text is not None and "Hi Ann," in text.get_content()  # person.attrs.first_name
    # A person's email links to the person's own preference page, one-click included.
    assert "/preferences?token=p1." in str(mail["List-Unsubscribe"])
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    sms = json.loads((outgoing / f"{rows['sms']['id']}.sms.json").read_text())
    assert sms["to"] == "+14155550100"
    assert sms["body"].startswith("outboxd: reminder of Dentist, Tuesday 14:30.")

    [item] = await inbox(pool)
    assert item["recipient_key"] == "u1"
    assert (item["notification_id"], item["message_id"]) == (nid, rows["inapp"]["id"])
    assert item["title"] == "Reminder: Dentist, Tuesday 14:30"
    assert item["body"] == "Dentist, Tuesday 14:30."
    assert item["url"] == "https://app.example.com/b/7"
    assert json.loads(item["data"]) == {"booking": 7}  # the context's `data`, nothing else
    assert (item["category"], item["priority"]) == ("reminders", 3)
    assert (item["seen_at"], item["read_at"], item["archived_at"]) == (None, None, None)
    assert rows["inapp"]["provider"] == "inapp"
    assert rows["inapp"]["provider_message_id"] == str(item["id"])


async def test_the_persons_locale_is_the_default_locale(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    context = {"name": "Ann", "login_url": "https://app.example.com/login"}
    async with pool.acquire() as conn:
        await add_person(conn, "fr", locale="fr-CA")  # falls back to the fr parts
        await add_person(conn, "odd", email="odd@example.com", locale="French")
        await add_person(conn, "plain", email="plain@example.com")
        ids = {
            key: await notify(conn, recipient_key=key, template="welcome", context=context)
            for key in ("fr", "odd", "plain")
        }
    await drain(make_settings(database_url, tmp_path), database_url)

    subjects, titles = {}, {}
    for key, nid in ids.items():
        rows = await rows_of(pool, nid)
        assert {r["status"] for r in rows.values()} == {"sent"}, rows
        subjects[key] = read_eml(tmp_path / "outgoing", rows["email"]["id"])["Subject"]
        titles[key] = await pool.fetchval(
            "SELECT title || ' / ' || body FROM outbox.inbox WHERE recipient_key = $1", key
        )
    assert subjects["fr"] == "Bienvenue chez outboxd, Ann !"
    assert titles["fr"] == (
        "Bienvenue chez outboxd, Ann ! / "
        "Votre compte outboxd est prêt. Connectez-vous pour commencer."
    )
    # A profile locale that names no variant means the plain parts, not a failure.
    assert subjects["odd"] == subjects["plain"] == "Welcome to outboxd, Ann!"
    assert titles["odd"] == titles["plain"]


async def test_a_message_row_without_a_locale_takes_the_persons_current_one(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)  # no locale when notified
        nid = await notify(
            conn, recipient_key="u1", template="welcome", channels=["inapp"],
            context={"name": "Ann", "login_url": "https://x.example"},
        )  # fmt: skip
        await add_person(conn, locale="fr")
    await drain(make_settings(database_url, tmp_path), database_url)
    assert (await rows_of(pool, nid))["inapp"]["locale"] is None
    [item] = await inbox(pool)
    assert item["title"] == "Bienvenue chez outboxd, Ann !"


async def test_opt_outs_and_missing_addresses_make_no_rows(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn, phone=None)
        await conn.execute(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled)"
            " VALUES ('u1', 'email', 'reminders', false)"
        )
        nid = await notify(conn, recipient_key="u1", template="booking/reminder", priority=3,
                           category="reminders", context=BOOKING)  # fmt: skip
        skipped = await conn.fetchval("SELECT skipped FROM outbox.notification WHERE id = $1", nid)
        # Transactional notifications ignore the switch, not the missing phone.
        receipt = await notify(conn, recipient_key="u1", template="booking/reminder",
                               priority=3, context=BOOKING)  # fmt: skip
    assert json.loads(skipped) == {"sms": "no address", "email": "opted out"}
    await drain(make_settings(database_url, tmp_path), database_url)
    assert {c: r["status"] for c, r in (await rows_of(pool, nid)).items()} == {"inapp": "sent"}
    assert {c: r["status"] for c, r in (await rows_of(pool, receipt)).items()} == {
        "email": "sent",
        "inapp": "sent",
    }
    assert len(list((tmp_path / "outgoing").glob("*.sms.json"))) == 0
    assert len(await inbox(pool)) == 2


async def test_a_switch_turned_off_after_notify_suppresses_the_pending_rows(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        news = await notify(conn, recipient_key="u1", template="booking/reminder",
                            category="news", context=BOOKING)  # fmt: skip
        receipt = await notify(conn, recipient_key="u1", template="booking/reminder",
                               context=BOOKING)  # fmt: skip
        # Most specific wins: email off for everything, but on again for nothing here.
        await conn.execute(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled)"
            " VALUES ('u1', 'email', '*', false), ('u1', '*', 'news', true)"
        )
    await drain(make_settings(database_url, tmp_path), database_url)
    rows = await rows_of(pool, news)
    assert rows["email"]["status"] == "suppressed"
    assert rows["email"]["last_error"] == "person opted out of email for category 'news'"
    assert rows["inapp"]["status"] == "sent"
    # Transactional: the switches do not apply.
    assert {r["status"] for r in (await rows_of(pool, receipt)).values()} == {"sent"}


async def test_quiet_hours_hold_email_and_sms_but_not_the_inbox(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    zone = ZoneInfo("Asia/Tokyo")
    now = datetime.now(zone)
    # A window around the present moment, whatever the hour the test runs at.
    start, end = (now - timedelta(hours=1)).time(), (now + timedelta(hours=2)).time()
    async with pool.acquire() as conn:
        await add_person(conn, timezone="Asia/Tokyo", quiet_hours=(start, end))
        nid = await notify(conn, recipient_key="u1", template="booking/reminder",
                           category="reminders", channels=["email", "sms", "inapp"],
                           context=BOOKING)  # fmt: skip
    await drain(make_settings(database_url, tmp_path), database_url)
    rows = await rows_of(pool, nid)
    assert rows["inapp"]["status"] == "sent"
    assert len(await inbox(pool)) == 1
    for channel in ("email", "sms"):
        row = rows[channel]
        assert row["status"] == "pending", channel
        assert row["attempts"] == 0
        assert row["not_before"] > datetime.now(UTC) + timedelta(minutes=90)
        assert "quiet hours" in row["deferred_reason"]
    assert not list((tmp_path / "outgoing").glob("*.eml"))


async def test_a_deleted_person_gets_nothing_and_stops_nothing(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await add_person(conn, "u2", email="bob@example.com")
        gone = await notify(conn, recipient_key="u1", template="booking/reminder", priority=3,
                            context=BOOKING)  # fmt: skip
        kept = await notify(conn, recipient_key="u2", template="booking/reminder", priority=3,
                            context=BOOKING)  # fmt: skip
        await conn.execute("DELETE FROM outbox.recipient WHERE key = 'u1'")
    await drain(make_settings(database_url, tmp_path), database_url)
    for row in (await rows_of(pool, gone)).values():
        assert row["status"] == "suppressed"
        assert row["last_error"] == "person 'u1' is no longer in outbox.recipient"
    assert {r["status"] for r in (await rows_of(pool, kept)).values()} == {"sent"}
    assert [i["recipient_key"] for i in await inbox(pool)] == ["u2"]


async def test_an_item_lands_once_and_is_announced(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    announced: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener("outbox_inbox", lambda *args: announced.put_nowait(args[3]))
        async with pool.acquire() as conn:
            await add_person(conn)
            nid = await notify(conn, recipient_key="u1", template="booking/reminder",
                               channels=["inapp"], context=BOOKING)  # fmt: skip
        settings = make_settings(database_url, tmp_path)
        await drain(settings, database_url)
        [item] = await inbox(pool)
        payload = await asyncio.wait_for(announced.get(), 10)
        assert json.loads(payload) == {"kind": "item", "id": item["id"], "recipient_key": "u1"}

        # Delivery is at least once: a message delivered again finds its item there.
        message_id = (await rows_of(pool, nid))["inapp"]["id"]
        await pool.execute(
            "UPDATE outbox.message SET status = 'pending', provider_message_id = NULL,"
            " sent_at = NULL WHERE id = $1",
            message_id,
        )
        await drain(settings, database_url)
        row = (await rows_of(pool, nid))["inapp"]
        assert (row["status"], row["attempts"]) == ("sent", 2)
        assert row["provider_message_id"] == str(item["id"])
        assert await inbox(pool) == [item]
        assert announced.empty()  # nothing new to announce
    finally:
        await listener.close()


async def test_an_unsafe_url_fails_the_inapp_row_only(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        nid = await notify(conn, recipient_key="u1", template="booking/reminder",
                           context={**BOOKING, "url": "javascript:alert(1)"})  # fmt: skip
    await drain(make_settings(database_url, tmp_path), database_url)
    rows = await rows_of(pool, nid)
    assert rows["email"]["status"] == "sent"
    assert rows["inapp"]["status"] == "failed"
    assert rows["inapp"]["last_error"] == (
        "context url must be an http(s) URL or a path starting with /, got 'javascript:alert(1)'"
    )
    assert await inbox(pool) == []


async def test_a_template_without_an_inapp_part_gives_a_title_only_item(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await notify(conn, recipient_key="u1", template="password_reset", channels=["inapp"],
                     context={"reset_url": "https://x.example", "expires_minutes": 15})  # fmt: skip
    await drain(make_settings(database_url, tmp_path), database_url)
    [item] = await inbox(pool)
    assert (item["title"], item["body"], item["url"]) == ("Reset your outboxd password", "", None)


async def test_an_address_level_row_has_no_person(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        message_id = await enqueue(conn, channel="email", recipient="ann@example.com",
                                   template="booking/reminder", category="news",
                                   context=BOOKING)  # fmt: skip
    await drain(make_settings(database_url, tmp_path), database_url)
    mail = read_eml(tmp_path / "outgoing", message_id)
    text = mail.get_body(("plain",))
    assert text is not None and "Hi there," in text.get_content()
    assert "/unsubscribe?token=" in str(mail["List-Unsubscribe"])  # the address-level page


async def test_the_hourly_cap_setting_is_what_notify_applies(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await drain(make_settings(database_url, tmp_path, people={"hourly_cap": 2}), database_url)
    assert await pool.fetchval("SELECT person_hourly_cap FROM outbox.people_setting") == 2
    # All three due in one hour (the current one), whenever the test runs.
    hour = await pool.fetchval("SELECT date_trunc('hour', now())")
    async with pool.acquire() as conn:
        await add_person(conn)
        ids = [
            await notify(conn, recipient_key="u1", template="booking/reminder",
                         category="reminders", channels=["inapp"], context=BOOKING,
                         not_before=hour)
            for _ in range(3)
        ]  # fmt: skip
    reasons = [(await rows_of(pool, nid))["inapp"]["deferred_reason"] for nid in ids]
    assert reasons[:2] == [None, None]
    assert reasons[2].startswith("per-person hourly cap of 2 reached")
    # The setting is the truth: a daemon started without it lifts the cap.
    await drain(make_settings(database_url, tmp_path), database_url)
    assert await pool.fetchval("SELECT person_hourly_cap FROM outbox.people_setting") is None
    assert len(await inbox(pool)) == 2  # the third waits for the next hour


async def test_an_inbox_result_is_written_only_under_the_lease(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await notify(conn, recipient_key="u1", template="booking/reminder", channels=["inapp"],
                     context=BOOKING)  # fmt: skip
    store = Store(pool)
    [message] = await store.claim("inapp", 10, "w1", 60)
    assert (message.recipient_key, message.person) == (
        "u1",
        {"key": "u1", "locale": None, "timezone": "UTC", "attrs": {"first_name": "Ann"}},
    )
    from daemon.providers.inapp import InappProvider
    from outbox.models import Rendered

    receipt = await InappProvider().send(message, Rendered(subject="T", inapp="B"))
    result = Completion(message.id, message.attempts, Status.SENT, inbox=receipt.item)
    assert await store.complete_many([result], "someone-else") == 0
    assert await inbox(pool) == []
    assert await store.complete_many([result], "w1") == 1
    assert [(i["title"], i["body"]) for i in await inbox(pool)] == [("T", "B")]


async def test_a_failed_mixed_batch_leaves_nothing_half_written(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await add_person(conn)
        await notify(conn, recipient_key="u1", template="booking/reminder", context=BOOKING)
    store = Store(pool)
    [item_message] = await store.claim("inapp", 10, "w1", 60)
    [email_message] = await store.claim("email", 10, "w1", 60)
    from daemon.providers.inapp import InappProvider
    from outbox import errors
    from outbox.models import Rendered

    receipt = await InappProvider().send(item_message, Rendered(subject="T"))
    item = Completion(item_message.id, item_message.attempts, Status.SENT, inbox=receipt.item)
    # A retry delay no timestamp can hold (text is cleaned before it is written: a NUL in
    # it no longer makes a statement fail).
    unwritable = Completion(email_message.id, email_message.attempts, Status.PENDING,
                            error="later", retry_delay=float("inf"))  # fmt: skip
    with pytest.raises(errors.DatabaseError):
        await store.complete_many([item, unwritable], "w1")
    assert await inbox(pool) == []  # the item's write went back with the batch
    assert {r["status"] for r in await pool.fetch("SELECT status FROM outbox.message")} == {
        "sending"
    }
    fixed = unwritable._replace(retry_delay=1.0)
    assert await store.complete_many([item, fixed], "w1") == 2
    assert len(await inbox(pool)) == 1


async def test_a_claim_of_address_level_rows_looks_up_no_people(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pool.acquire() as conn:
        await enqueue(conn, channel="email", recipient="ann@example.com", template="welcome")
        await add_person(conn)
        await notify(conn, recipient_key="u1", template="welcome", channels=["email"])
    store = Store(pool)
    looked_up: list[list[int]] = []
    with_people = store.with_people

    async def spy(messages: list[Any]) -> list[Any]:
        looked_up.append([m.id for m in messages])
        return await with_people(messages)

    monkeypatch.setattr(store, "with_people", spy)
    [plain] = await store.claim("email", 1, "w1", 60)  # the enqueue row comes first
    assert (plain.recipient_key, plain.person, looked_up) == (None, None, [])
    [personal] = await store.claim("email", 1, "w1", 60)
    assert looked_up == [[personal.id]] and personal.person is not None
