"""``outboxd migrate``: create or upgrade the outbox schema."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from daemon import db
from daemon.cli.common import with_pool
from daemon.settings import Settings


def register(commands: Any) -> None:
    migrate = commands.add_parser("migrate", help="create or upgrade the outbox schema")
    migrate.set_defaults(handler=cmd_migrate)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from outbox import migrations

    async def work(pool: asyncpg.Pool) -> int:
        applied = await db.apply_migrations(
            pool,
            direct_dsn=settings.direct_dsn,
            transaction_pooling=settings.transaction_pooling,
        )
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        print(f"schema is at version {migrations.latest_version()}")
        return 0

    return with_pool(settings, work, check_schema=False)
