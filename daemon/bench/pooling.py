"""``outboxd bench --pgbouncer HOST:PORT``: the daemon's drain straight to PostgreSQL and
through PgBouncer in transaction mode, alternating, in one throwaway database.

The PgBouncer at HOST:PORT must run ``pool_mode = transaction`` and route any database
name to the configured server (a ``*`` entry), as the throwaway database is made per run.
Through it the daemon runs with ``OUTBOXD_DATABASE__POOL_MODE=transaction`` and LISTEN on
the direct DSN.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from daemon import db
from daemon.bench import phases
from daemon.settings import PoolMode, Settings


def _through(dsn: str, address: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    return urlunsplit(("postgresql", f"{user}@{address}", parts.path, "", ""))


async def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn, _ = db.resolve_dsn(settings)
    direct_settings = phases.daemon_settings(settings, args, None)
    rates: dict[str, list[float]] = {"direct": [], "pgbouncer": []}
    cpu: dict[str, list[float]] = {"direct": [], "pgbouncer": []}
    async with phases.throwaway_database(admin_dsn) as dsn:
        await phases.migrate(dsn)
        pooled_settings = direct_settings.model_copy(
            update={
                "database": direct_settings.database.model_copy(
                    update={"pool_mode": PoolMode.TRANSACTION, "listen_url": SecretStr(dsn)}
                )
            }
        )
        sides = {
            "direct": (dsn, direct_settings),
            "pgbouncer": (_through(dsn, args.pgbouncer), pooled_settings),
        }
        for _ in range(args.pool_rounds):
            for side, (side_dsn, side_settings) in sides.items():
                await phases.fill_due(dsn, args.messages)
                drained = await phases.drain(side_dsn, side_settings, args.messages)
                rates[side].append(drained["rate"])
                cpu[side].append(drained["cpu_us"].get("outboxd", 0.0))
    return {
        "messages": args.messages,
        "rounds": args.pool_rounds,
        "rates": rates,
        "outboxd_cpu_us": cpu,
        "ratio": statistics.median(
            p / d for p, d in zip(rates["pgbouncer"], rates["direct"], strict=True)
        ),
    }


def format_result(result: dict[str, Any]) -> str:
    rates = result["rates"]
    lines = [
        f"outboxd bench --pgbouncer: {result['messages']:,} messages, {result['rounds']} "
        "rounds alternating",
        *(
            f"  {side:<10} "
            + ", ".join(f"{r:,.0f}/s" for r in rates[side])
            + "   outboxd CPU us/message: "
            + ", ".join(f"{us:,.0f}" for us in result["outboxd_cpu_us"][side])
            for side in ("direct", "pgbouncer")
        ),
        f"  median ratio pgbouncer / direct: {result['ratio']:.2f}",
    ]
    return "\n".join(lines)
