"""Outbound webhooks against a real HTTP receiver on loopback: signed, retried, never lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from daemon.settings import Settings
from tests.integration.daemon_helpers import make_settings, running, welcome_backlog
from tests.integration.hook_receiver import SECRET, Receiver, receiver

__all__ = ["receiver"]


def hook_settings(database_url: str, tmp_path: Path, **hooks: Any) -> Settings:
    values = {
        "allow_private": "127.0.0.1",
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "poll_interval": 0.2,
        "breaker_seconds": 0.2,
        **hooks,
    }
    return make_settings(database_url, tmp_path, hooks=values)


async def add_endpoint(pool: asyncpg.Pool, url: str, events: list[str] | None = None) -> int:
    endpoint_id: int = await pool.fetchval(
        "INSERT INTO outbox.webhook_endpoint (url, secret, events) VALUES ($1, $2, $3) "
        "RETURNING id",
        url, SECRET, events or ["*"],
    )  # fmt: skip
    return endpoint_id


async def statuses(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM outbox.webhook_delivery GROUP BY status"
    )
    return {row["status"]: row["n"] for row in rows}


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    """Wait until ``check()`` is true (polled: the database is the test signal)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def wait_delivered(pool: asyncpg.Pool, total: int, within: float = 30) -> None:
    async def done() -> bool:
        return (await statuses(pool)).get("delivered", 0) >= total

    await eventually(done, within)


async def test_each_sent_message_is_posted_once_signed(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    await add_endpoint(pool, receiver.url)
    settings = hook_settings(database_url, tmp_path)
    async with running(settings, database_url):
        await welcome_backlog(pool, 20)
        await wait_delivered(pool, 20)
    assert len(receiver.received) == 20
    assert all(r.valid for r in receiver.received)
    events = [r.event for r in receiver.received]
    assert {e["type"] for e in events} == {"message.sent"}
    assert sorted(e["data"]["recipient"] for e in events) == sorted(
        f"user{i}@example.com" for i in range(20)
    )
    assert {e["data"]["status"] for e in events} == {"sent"}
    assert set(events[0]) == {"id", "type", "created_at", "data"}
    assert len(receiver.ids()) == 20
    # A signature made with another secret, or of another body, does not verify.
    from daemon.hooks import signing

    first = receiver.received[0]
    body = b'{"tampered": true}'
    assert not signing.verify(SECRET, body, first.signature)
    assert not signing.verify("another-secret-0123456789", body, first.signature)


async def test_failed_attempts_are_retried_with_the_same_event_id(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    await add_endpoint(pool, receiver.url)
    settings = hook_settings(database_url, tmp_path, breaker_failures=1000)
    async with running(settings, database_url):
        await welcome_backlog(pool, 10)
        await wait_delivered(pool, 10)
    assert all(r.valid for r in receiver.received)
    # Each event: two 500s, then the 200; the same id every time.
    assert dict(receiver.ids()) == {event_id: 3 for event_id in receiver.ids()}
    assert len(receiver.ids()) == 10
    rows = await pool.fetch("SELECT attempts, last_status FROM outbox.webhook_delivery")
    assert {(r["attempts"], r["last_status"]) for r in rows} == {(3, 200)}


async def test_an_endpoint_down_for_a_while_loses_nothing(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    await add_endpoint(pool, receiver.url)
    await receiver.stop()  # connections refused: the circuit opens, then probes
    settings = hook_settings(database_url, tmp_path, breaker_failures=3)

    async def retried() -> bool:
        attempts = await pool.fetchval("SELECT max(attempts) FROM outbox.webhook_delivery")
        return bool(attempts and attempts >= 3)

    async with running(settings, database_url):
        await welcome_backlog(pool, 30)
        await eventually(retried)
        assert (await statuses(pool)).get("delivered", 0) == 0
        await receiver.start()
        await wait_delivered(pool, 30)
    assert len(receiver.ids()) == 30
    assert all(r.valid for r in receiver.received)


async def test_a_rolled_back_change_writes_no_event(pool: asyncpg.Pool, receiver: Receiver) -> None:
    await add_endpoint(pool, receiver.url)
    message_id = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'email', recipient => 'a@example.com', "
        "template => 'welcome')"
    )
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("UPDATE outbox.message SET status = 'sent' WHERE id = $1", message_id)
        assert await conn.fetchval("SELECT count(*) FROM outbox.webhook_delivery") == 1
        await tx.rollback()
    assert await pool.fetchval("SELECT count(*) FROM outbox.webhook_delivery") == 0
    await pool.execute("UPDATE outbox.message SET status = 'sent' WHERE id = $1", message_id)
    assert await pool.fetchval("SELECT count(*) FROM outbox.webhook_delivery") == 1


async def test_retention_purges_finished_deliveries_only(pool: asyncpg.Pool) -> None:
    from daemon.hooks.store import HookStore

    endpoint = await add_endpoint(pool, "https://hooks.example.com/h")
    await pool.execute(
        "INSERT INTO outbox.webhook_delivery (event_id, endpoint_id, type, data, status, "
        "created_at) SELECT gen_random_uuid(), $1, 'message.sent', '{}', s, now() - a "
        "FROM unnest(ARRAY['delivered', 'failed', 'pending', 'delivered']) "
        "WITH ORDINALITY AS x(s, i), LATERAL (SELECT CASE WHEN i < 4 THEN interval '40 days' "
        "ELSE interval '1 day' END) AS t(a)",
        endpoint,
    )
    assert await HookStore(pool).purge(30 * 86400) == 2
    left = await pool.fetch("SELECT status FROM outbox.webhook_delivery ORDER BY id")
    assert [r["status"] for r in left] == ["pending", "delivered"]
