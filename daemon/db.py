"""Database connections: the DSN (or an embedded PostgreSQL), the pool, schema checks."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from daemon.settings import Settings
from outbox import errors, migrations
from outbox.store import DRIVER_ERRORS

logger = logging.getLogger(__name__)


#: Where pgserver's account of starting and stopping the embedded server goes (initdb and
#: pg_ctl output, ~70 lines), beside its data: not on the console.
EMBEDDED_LOG = "embedded-postgres.log"


def embedded_dsn(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under ``data_dir`` and return its DSN.

    The server is shared by every outboxd process using the same directory and stops when
    the last of them exits.
    """
    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log_path = pgdata.parent / EMBEDDED_LOG
    _log_pgserver_to(log_path)
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then locks in /tmp.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver  # imported lazily: only the embedded development default needs it

            server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:
        raise errors.DatabaseError(
            f"the embedded PostgreSQL under {pgdata} did not start: {exc} (see {log_path})"
        ) from exc
    uri: str = server.get_uri()
    return uri


def _log_pgserver_to(path: Path) -> None:
    pg_logger = logging.getLogger("pgserver")
    if any(isinstance(h, logging.FileHandler) for h in pg_logger.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    pg_logger.addHandler(handler)
    pg_logger.setLevel(logging.INFO)
    pg_logger.propagate = False


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` (TCP and unix-socket DSNs alike)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def scratch_database(
    admin_dsn: str, name: str, *, template: str | None = None
) -> AsyncIterator[str]:
    """Create database ``name`` (optionally from ``template``), yield its DSN, drop it."""
    clause = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def resolve_dsn(settings: Settings) -> tuple[str, bool]:
    """The DSN to use and whether it is the embedded server."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    return embedded_dsn(settings.data_dir), True


#: Session settings sent at connection start-up, so that no pooled session ever carries
#: state of its own (see _nothing_to_reset).
SERVER_SETTINGS = {
    # Keep a stuck statement from holding a row lock for long; claims and completions
    # are short by design.
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
    # asyncpg prepares every statement; after five runs PostgreSQL may switch to a generic
    # plan, which for the array-driven completion UPDATE is 5x slower (measured: 4.4k vs
    # 25k rows/s claim + batched completion). Planning a batch costs well under 1 ms.
    "plan_cache_mode": "force_custom_plan",
    "application_name": "outboxd",
}


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: asyncpg has already rolled back an open transaction.

    The default reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) is one more round
    trip for every claim and every completion. outboxd's pooled sessions have nothing else
    to undo: settings are start-up options, LISTEN has a connection of its own, and the
    migration lock is released in a ``finally``.
    """


#: Behind a transaction pooler each transaction may run on another server session: start-up
#: settings are refused (PgBouncer: "unsupported startup parameter") and would not follow
#: the client anyway; set statement_timeout and idle_in_transaction_session_timeout on the
#: role instead (docs/SCALING.md).
POOLED_SERVER_SETTINGS = {"application_name": "outboxd"}


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    transaction_pooling: bool = False,
    **kwargs: Any,
) -> asyncpg.Pool:
    """A pool whose connections are recycled after errors; raises DatabaseError on failure.

    With ``transaction_pooling`` (PgBouncer in transaction mode) no named prepared
    statement is kept: asyncpg then sends each statement as an unnamed Parse, Describe
    and Flush followed by Bind, Execute and Sync, which the pooler keeps on one server
    session. Unnamed statements are planned for their parameters each time, as
    ``plan_cache_mode=force_custom_plan`` asks for in session mode.
    """
    if transaction_pooling:
        kwargs.setdefault("statement_cache_size", 0)
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            server_settings=POOLED_SERVER_SETTINGS if transaction_pooling else SERVER_SETTINGS,
            max_inactive_connection_lifetime=300,
            command_timeout=60,
            reset=_nothing_to_reset,
            **kwargs,
        )
    except DRIVER_ERRORS as exc:
        raise errors.DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    return pool


async def schema_status(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int | None, int]:
    """(applied version or None, version this code expects)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return await schema_status(c)
    applied = await migrations.applied_versions(conn)
    return (max(applied) if applied else None), migrations.latest_version()


async def apply_migrations(
    pool: asyncpg.Pool, *, direct_dsn: str | None = None, transaction_pooling: bool = False
) -> list[migrations.Migration]:
    """Apply pending migrations; returns those applied by this call.

    Migrations hold a session advisory lock across several transactions, which a
    transaction pooler would leave on whichever server session took it: behind one they run
    on ``direct_dsn`` (a connection of their own to PostgreSQL), or else all in one
    transaction under a transaction-scoped lock, which the pooler keeps on one server
    session.
    """
    if direct_dsn is not None:
        try:
            conn = await asyncpg.connect(direct_dsn, timeout=10)
        except DRIVER_ERRORS as exc:
            raise errors.DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            return await migrations.migrate(conn)
        finally:
            await conn.close()
    async with pool.acquire() as conn:
        return await migrations.migrate(conn, one_transaction=transaction_pooling)


async def ensure_schema(
    pool: asyncpg.Pool,
    *,
    migrate: bool,
    direct_dsn: str | None = None,
    transaction_pooling: bool = False,
) -> None:
    """Apply pending migrations, or check there are none; raise SchemaError otherwise."""
    if migrate:
        applied = await apply_migrations(
            pool, direct_dsn=direct_dsn, transaction_pooling=transaction_pooling
        )
        for m in applied:
            logger.info("applied migration %04d_%s", m.version, m.name, extra={"action": "migrate"})
        return
    async with pool.acquire() as conn:
        current, expected = await schema_status(conn)
    if current != expected:
        raise errors.SchemaError(
            f"database schema is at version {current or 'none'}, this outboxd needs {expected}: "
            "run `outboxd migrate`"
        )
