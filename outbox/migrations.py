"""Numbered SQL migrations (``sql/migrations/NNNN_name.sql``), applied in order.

Each migration runs in its own transaction and is recorded in ``outbox.schema_migration``.
A session advisory lock serialises concurrent ``migrate`` calls (several daemons starting
at once), so applying is idempotent and safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from outbox import resources

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6F7574626F78  # "outbox" as an integer: arbitrary but stable advisory-lock key

_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS outbox;
CREATE TABLE IF NOT EXISTS outbox.schema_migration (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def available(directory: Path | None = None) -> list[Migration]:
    """All migrations shipped with this version, in order."""
    directory = directory or resources.sql_dir() / "migrations"
    found = []
    for path in directory.iterdir():
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], path))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in {directory}")
    return found


def latest_version() -> int:
    return available()[-1].version


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    """Versions recorded in the database; empty if outboxd was never migrated there."""
    exists = await conn.fetchval("SELECT to_regclass('outbox.schema_migration') IS NOT NULL")
    if not exists:
        return set()
    rows = await conn.fetch("SELECT version FROM outbox.schema_migration")
    return {row["version"] for row in rows}


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    """Migrations not yet applied."""
    done = await applied_versions(conn)
    return [m for m in available() if m.version not in done]


async def migrate(conn: asyncpg.Connection, *, one_transaction: bool = False) -> list[Migration]:
    """Apply every pending migration; returns those applied by this call.

    With ``one_transaction`` everything runs in one transaction under a transaction-scoped
    lock, for connections through a transaction pooler (PgBouncer), where a session lock
    would stay behind on whichever server session took it.
    """
    if one_transaction:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            return await _apply(conn)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        return await _apply(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _apply(conn: asyncpg.Connection) -> list[Migration]:
    async with conn.transaction():
        await conn.execute(_BOOKKEEPING)
    applied = []
    for migration in await pending(conn):
        async with conn.transaction():
            await conn.execute(migration.sql())
            await conn.execute(
                "INSERT INTO outbox.schema_migration (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        applied.append(migration)
    return applied
