"""``outboxd migrate``: create or upgrade the outbox schema."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from daemon.cli.common import with_pool
from daemon.settings import Settings


def register(commands: Any) -> None:
    migrate = commands.add_parser("migrate", help="create or upgrade the outbox schema")
    migrate.set_defaults(handler=cmd_migrate)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from outbox import migrations

    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as conn:
            applied = await migrations.migrate(conn)
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        print(f"schema is at version {migrations.latest_version()}")
        return 0

    return with_pool(settings, work, check_schema=False)
