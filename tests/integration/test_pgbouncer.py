"""The daemon behind a real PgBouncer in transaction mode: no prepared statements kept, no
session settings, LISTEN on a direct connection (or polling without one)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from daemon import db
from outbox import NewMessage, enqueue_many, migrations
from tests.integration import pgbouncer
from tests.integration.daemon_helpers import drain, make_settings, running, welcome_backlog
from tests.integration.enqueue_helpers import enqueue_one

pytestmark = pytest.mark.skipif(
    not pgbouncer.available(), reason=f"PgBouncer is not installed ({pgbouncer.BINARY})"
)


@pytest.fixture
def bouncer(postgres_admin_dsn: str) -> Iterator[int]:
    # Three server sessions for the daemon's pool of eight: statements of different
    # clients interleave on the same server sessions.
    with pgbouncer.pgbouncer(postgres_admin_dsn, pool_size=3) as port:
        yield port


def _settings(database_url: str, tmp_path: Path, bouncer: int, **database: str) -> object:
    return make_settings(
        pgbouncer.through(bouncer, database_url),
        tmp_path,
        email={"provider": "null"},
        worker={"concurrency": 64, "batch_size": 50},
        database={"pool_mode": "transaction", **database},
    )


async def test_session_settings_are_refused_by_a_transaction_pooler(
    database_url: str, bouncer: int
) -> None:
    # Why the mode exists: the start-up settings of a direct connection are refused.
    with pytest.raises(Exception, match="unsupported startup parameter"):
        await db.create_pool(pgbouncer.through(bouncer, database_url), min_size=1)
    pool = await db.create_pool(
        pgbouncer.through(bouncer, database_url), min_size=1, transaction_pooling=True
    )
    try:
        assert await pool.fetchval("SELECT current_setting('application_name')") == "outboxd"
    finally:
        await pool.close()


async def test_daemon_delivers_through_pgbouncer(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, bouncer: int
) -> None:
    await welcome_backlog(pool, 2000)
    settings = _settings(database_url, tmp_path, bouncer, listen_url=database_url)
    await drain(settings, pgbouncer.through(bouncer, database_url))
    counts = dict(await pool.fetch("SELECT status, count(*) FROM outbox.message GROUP BY 1"))
    assert counts == {"sent": 2000}


async def test_a_new_message_wakes_the_daemon_through_the_direct_listen_connection(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, bouncer: int
) -> None:
    settings = _settings(database_url, tmp_path, bouncer, listen_url=database_url)
    # Polling alone would take a minute: only the NOTIFY can deliver it in time.
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"poll_interval": 60.0})}
    )
    async with running(settings, pgbouncer.through(bouncer, database_url)) as (_, recorder):
        await enqueue_one(pool, channel="email", recipient="ann@example.com", template="welcome",
                          context={"name": "Ann", "login_url": "https://x.example"})  # fmt: skip
        await recorder.wait_for(1, within=20)


async def test_without_a_listen_url_the_daemon_polls(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, bouncer: int
) -> None:
    settings = _settings(database_url, tmp_path, bouncer)
    async with running(settings, pgbouncer.through(bouncer, database_url)) as (daemon, recorder):
        await enqueue_one(pool, channel="email", recipient="ann@example.com", template="welcome",
                          context={"name": "Ann", "login_url": "https://x.example"})  # fmt: skip
        await recorder.wait_for(1, within=20)
        assert daemon.listener is not None and not daemon.listener.connected


async def test_concurrent_migrations_through_pgbouncer_apply_once_and_leave_no_lock(
    postgres_admin_dsn: str, bouncer: int
) -> None:
    name = f"outboxd_bouncer_{uuid.uuid4().hex[:8]}"
    async with db.scratch_database(postgres_admin_dsn, name) as empty:
        pool = await db.create_pool(
            pgbouncer.through(bouncer, empty), min_size=2, max_size=4, transaction_pooling=True
        )
        try:
            both = await asyncio.gather(
                db.apply_migrations(pool, transaction_pooling=True),
                db.apply_migrations(pool, transaction_pooling=True),
            )
            assert sorted(len(applied) for applied in both) == [0, len(migrations.available())]
            # The lock ended with its transaction: no server session keeps it.
            locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            assert await pool.fetchval(locks) == 0
        finally:
            await pool.close()


async def test_bulk_enqueue_through_pgbouncer(
    database_url: str, pool: asyncpg.Pool, bouncer: int
) -> None:
    # COPY into a temporary table made on first use: each call is one transaction, which
    # the pooler keeps on one server connection, whichever it is.
    conn = await asyncpg.connect(pgbouncer.through(bouncer, database_url), statement_cache_size=0)
    try:
        for round_ in range(3):
            results = await enqueue_many(
                conn,
                [
                    NewMessage(
                        "email",
                        f"u{round_}-{i}@example.com",
                        "welcome",
                        idempotency_key=f"k{round_}-{i % 5}",
                    )
                    for i in range(10)
                ],
            )
            assert [r.created for r in results] == [True] * 5 + [False] * 5
    finally:
        await conn.close()
    assert await pool.fetchval("SELECT count(*) FROM outbox.message") == 15
