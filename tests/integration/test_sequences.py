"""Drip sequences: enrollment by subscribing or by the app, steps as ordinary messages,
skip_if and exit_if rules, and leaving on unsubscribe."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from tests.integration.campaign_helpers import (
    add_list,
    add_people,
    service,
    subscribe,
    wait_until,
)


async def add_sequence(
    pool: asyncpg.Pool, name: str = "welcome", list_id: int | None = None, **extra: object
) -> int:
    sequence_id: int = await pool.fetchval(
        "INSERT INTO outbox.sequence (name, list_id, exit_if) VALUES ($1, $2, $3::jsonb) "
        "RETURNING id",
        name,
        list_id,
        json.dumps(extra["exit_if"]) if "exit_if" in extra else None,
    )
    return sequence_id


async def add_step(
    pool: asyncpg.Pool, sequence_id: int, position: int, delay: str = "0", **extra: object
) -> None:
    await pool.execute(
        "INSERT INTO outbox.sequence_step (sequence_id, position, delay, template, context, "
        "skip_if) VALUES ($1, $2, $3::text::interval, 'newsletter', $4::jsonb, $5::jsonb)",
        sequence_id,
        position,
        delay,
        json.dumps({"subject": f"Step {position}", "body": "Hello"}),
        json.dumps(extra["skip_if"]) if "skip_if" in extra else None,
    )


async def advance(pool: asyncpg.Pool) -> int:
    handled: int = await pool.fetchval("SELECT outbox.advance_sequences()")
    return handled


async def enrollments(pool: asyncpg.Pool) -> dict[str, tuple[str, int, str | None]]:
    rows = await pool.fetch("SELECT * FROM outbox.sequence_enrollment")
    return {r["recipient_key"]: (r["status"], r["step"], r["exit_reason"]) for r in rows}


async def steps_sent(pool: asyncpg.Pool) -> dict[str, list[int]]:
    rows = await pool.fetch(
        "SELECT recipient_key, (tags->>'step')::int AS step FROM outbox.message "
        "WHERE tags ? 'sequence' ORDER BY id"
    )
    sent: dict[str, list[int]] = {}
    for row in rows:
        sent.setdefault(row["recipient_key"], []).append(row["step"])
    return sent


async def _due_now(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "UPDATE outbox.sequence_enrollment SET next_at = now() WHERE next_at > now()"
    )


async def test_subscribers_go_through_the_steps(pool: asyncpg.Pool) -> None:
    await add_people(pool, {"u1": {"plan": "free"}, "u2": {"plan": "pro"}})
    news = await add_list(pool, "news")
    welcome = await add_sequence(pool, list_id=news, exit_if={"attr": "converted", "op": "exists"})
    await add_step(pool, welcome, 1)
    await add_step(pool, welcome, 2, skip_if={"attr": "plan", "op": "eq", "value": "pro"})
    await add_step(pool, welcome, 5, "2 days")
    await subscribe(pool, "news", ["u1", "u2"])
    assert await enrollments(pool) == {"u1": ("active", 0, None), "u2": ("active", 0, None)}

    assert await advance(pool) == 2
    # Steps without a delay follow at once; the pro plan skips step 2.
    assert await steps_sent(pool) == {"u1": [1, 2], "u2": [1]}
    assert await enrollments(pool) == {"u1": ("active", 2, None), "u2": ("active", 2, None)}
    next_at = await pool.fetchval("SELECT min(next_at) - now() FROM outbox.sequence_enrollment")
    assert next_at.days in (1, 2)
    assert await advance(pool) == 0  # nothing due for two days

    message = await pool.fetchrow("SELECT * FROM outbox.message ORDER BY id LIMIT 1")
    assert (message["category"], message["priority"], message["list_id"]) == ("marketing", 0, news)
    assert message["idempotency_key"].startswith("sequence:")
    assert message["recipient_key"] == "u1"  # templates see the person when it is sent
    assert "person" not in json.loads(message["context"])

    await pool.execute(
        "UPDATE outbox.recipient SET attrs = attrs || '{\"converted\": true}' WHERE key = 'u1'"
    )
    await _due_now(pool)
    assert await advance(pool) == 2
    assert await steps_sent(pool) == {"u1": [1, 2], "u2": [1, 5]}
    assert await enrollments(pool) == {
        "u1": ("exited", 2, "matched exit_if"),
        "u2": ("completed", 5, None),
    }


async def test_the_app_enrolls_and_unenrolls(pool: asyncpg.Pool) -> None:
    await add_people(pool, {"u1": {}})
    onboarding = await add_sequence(pool, "onboarding")
    await add_step(pool, onboarding, 1, "1 hour")
    first = await pool.fetchval("SELECT outbox.enroll('onboarding', 'u1')")
    assert await pool.fetchval("SELECT outbox.enroll('onboarding', 'u1')") == first
    assert await advance(pool) == 0
    assert await pool.fetchval("SELECT outbox.unenroll('onboarding', 'u1')") is True
    assert await pool.fetchval("SELECT outbox.unenroll('onboarding', 'u1')") is False
    assert await enrollments(pool) == {"u1": ("exited", 0, "unenrolled")}
    with pytest.raises(asyncpg.InvalidParameterValueError, match="no sequence named 'nope'"):
        await pool.fetchval("SELECT outbox.enroll('nope', 'u1')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="'ghost' is not in"):
        await pool.fetchval("SELECT outbox.enroll('onboarding', 'ghost')")


async def test_unsubscribing_leaves_the_sequence_and_cancels_its_pending_step(
    pool: asyncpg.Pool,
) -> None:
    await add_people(pool, {"u1": {}, "u2": {}})
    news = await add_list(pool, "news", double_opt_in=True)
    welcome = await add_sequence(pool, list_id=news)
    await add_step(pool, welcome, 1)
    await add_step(pool, welcome, 2, "1 day")
    await subscribe(pool, "news", ["u1", "u2"])
    assert await enrollments(pool) == {}  # pending subscribers are not enrolled yet
    await pool.execute("SELECT outbox.confirm_subscription($1, 'u1')", news)
    await pool.execute("SELECT outbox.confirm_subscription($1, 'u2')", news)
    await advance(pool)
    step_one = await pool.fetchval(
        "SELECT id FROM outbox.message WHERE recipient_key = 'u1' AND tags ? 'sequence'"
    )
    assert await pool.fetchval("SELECT outbox.unsubscribe('news', 'u1')") is True
    assert (await enrollments(pool))["u1"] == ("exited", 1, "unsubscribed from the list")
    row = await pool.fetchrow(
        "SELECT status, last_error FROM outbox.message WHERE id = $1", step_one
    )
    assert (row["status"], row["last_error"]) == (
        "cancelled", f"unsubscribed from list {news} before it was sent"
    )  # fmt: skip
    # Suppressed by the time the next step is due: leaves then.
    await pool.execute(
        "INSERT INTO outbox.suppression (channel, recipient, reason) "
        "VALUES ('email', 'u2@example.com', 'complaint')"
    )
    await _due_now(pool)
    await advance(pool)
    assert (await enrollments(pool))["u2"] == ("exited", 1, "suppressed (complaint)")


async def test_opting_out_of_the_category_leaves_at_the_next_step(pool: asyncpg.Pool) -> None:
    await add_people(pool, {"u1": {}})
    tips = await add_sequence(pool, "tips")
    await add_step(pool, tips, 1)
    await pool.execute(
        "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled) "
        "VALUES ('u1', '*', 'marketing', false)"
    )
    await pool.fetchval("SELECT outbox.enroll('tips', 'u1')")
    await advance(pool)
    assert await enrollments(pool) == {"u1": ("exited", 0, "opted out of marketing")}
    assert await steps_sent(pool) == {}


async def test_two_daemons_never_double_a_step(pool: asyncpg.Pool) -> None:
    keys = [f"p{i:03}" for i in range(200)]
    await add_people(pool, {k: {} for k in keys})
    news = await add_list(pool, "news")
    welcome = await add_sequence(pool, list_id=news)
    await add_step(pool, welcome, 1)
    await subscribe(pool, "news", keys)

    async def one_daemon() -> int:
        total = 0
        async with pool.acquire() as conn:
            while handled := await conn.fetchval("SELECT outbox.advance_sequences(20)"):
                total += handled
        return total

    handled = await asyncio.gather(one_daemon(), one_daemon())
    assert sum(handled) == 200
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 200
    assert await pool.fetchval("SELECT count(DISTINCT recipient_key) FROM outbox.message") == 200


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("INSERT INTO outbox.sequence (name, exit_if) VALUES ('s', '{\"attr\": \"a\"}')",
         "needs \"attr\" and \"op\"|op: must be a string"),
        ("INSERT INTO outbox.sequence_step (sequence_id, position, template, skip_if) "
         "VALUES (1, 1, 't', '{\"attr\": \"a\", \"op\": \"near\", \"value\": 1}')",
         "unknown op 'near'"),
        ("INSERT INTO outbox.sequence_step (sequence_id, position, delay, template) "
         "VALUES (1, 1, '-1 day', 't')", "sequence_step_delay_check"),
        ("INSERT INTO outbox.sequence_step (sequence_id, position, template) "
         "VALUES (1, 0, 't')", "sequence_step_position_check"),
    ],
)  # fmt: skip
async def test_bad_sequences_are_refused(pool: asyncpg.Pool, statement: str, message: str) -> None:
    await add_sequence(pool, "first")
    with pytest.raises(asyncpg.PostgresError, match=message):
        await pool.execute(statement)


async def test_the_daemon_runs_the_steps(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await add_people(pool, {"u1": {"first_name": "Ann"}})
    news = await add_list(pool, "news")
    welcome = await add_sequence(pool, list_id=news)
    await add_step(pool, welcome, 1)
    async with service(database_url, tmp_path) as running:
        await subscribe(pool, "news", ["u1"])

        async def sent() -> bool:
            status = await pool.fetchval(
                "SELECT status FROM outbox.message WHERE tags ? 'sequence'"
            )
            return bool(status == "sent")

        await wait_until(sent, running.recorder.changed)
        message_id = await pool.fetchval("SELECT id FROM outbox.message")
        assert running.eml(message_id)["Subject"] == "Step 1"
    assert await enrollments(pool) == {"u1": ("completed", 1, None)}
