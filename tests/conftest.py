"""Test PostgreSQL: OUTBOXD_TEST_DATABASE_URL, else testcontainers (when a Docker engine is
reachable), else an embedded server (pgserver). A migrated template database is built once
per session and cloned for every test that asks for ``database_url``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

import tests.port_guard  # noqa: F401  (installs its audit hook for the whole run)
from daemon.db import scratch_database, with_database
from outbox import migrations

__all__ = ["with_database"]

TEMPLATE_DB = "outboxd_test_template"
#: The data directory of the embedded test server, when that is what runs.
_embedded: list[Path] = []


def _docker_reachable() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
    except Exception:
        return False
    try:
        client.ping()
        return True
    except Exception:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _provision(tmp_dir: Path) -> Iterator[str]:
    env_dsn = os.environ.get("OUTBOXD_TEST_DATABASE_URL")
    if env_dsn:
        yield env_dsn
        return
    if _docker_reachable():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    import pgserver

    server = pgserver.get_server(tmp_dir / "pgdata", cleanup_mode="delete")
    _embedded.append(tmp_dir / "pgdata")
    try:
        yield server.get_uri()
    finally:
        _embedded.clear()
        server.cleanup()


async def _create_template(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(admin_dsn, TEMPLATE_DB))
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """A DSN with rights to create databases; the template is ready when it is yielded."""
    # Not under pytest's basetemp: pytest deletes old basetemps when another session
    # starts, which would pull the data directory from under a running server.
    with (
        tempfile.TemporaryDirectory(prefix="outboxd-test-pg-") as directory,
        _provision(Path(directory)) as dsn,
    ):
        asyncio.run(_create_template(dsn))
        yield dsn


@pytest.fixture
async def database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    name = f"outboxd_test_{uuid.uuid4().hex[:12]}"
    async with scratch_database(postgres_admin_dsn, name, template=TEMPLATE_DB) as dsn:
        yield dsn


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; the developer's OUTBOXD_* never leak in."""
    for name in list(os.environ):
        if name.startswith("OUTBOXD_") and name != "OUTBOXD_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


@pytest.fixture
def restart_postgres(postgres_admin_dsn: str) -> Callable[[], None]:
    """Restart the test server (fast shutdown: every connection drops). Embedded only."""
    if not _embedded:
        pytest.skip("only the embedded test server can be restarted by the tests")
    pgdata = _embedded[0]

    def restart() -> None:
        import pgserver

        user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs it as this user
        pgserver.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=user)

    return restart
