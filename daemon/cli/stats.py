"""``outboxd stats``: queue depth, age of the oldest due message, recent outcomes."""

from __future__ import annotations

import argparse
import json
from typing import Any

import asyncpg

from daemon.cli.common import with_pool
from daemon.feedback.sms_spend import SpendGate
from daemon.hooks.store import HookStore
from daemon.settings import Settings
from outbox.store import Store

#: SES reviews accounts above 0.1% complaints and 5% bounces; warn before that.
COMPLAINT_WARNING = 0.001
BOUNCE_WARNING = 0.02
_HOUR = 3600.0
_DAY = 86400.0


async def collect(pool: asyncpg.Pool) -> dict[str, Any]:
    """A JSON-ready report."""
    store = Store(pool)
    depth: dict[str, dict[str, dict[str, int]]] = {}
    for row in await store.counts_by_status():
        by_status = depth.setdefault(row["channel"], {})
        by_status.setdefault(row["status"], {})[str(row["priority"])] = row["n"]
    oldest = await store.oldest_pending()
    activity = {
        row["channel"]: {"sent": row["sent"], "failed": row["failed"]}
        for row in await store.recent_activity(_HOUR)
    }
    rates: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for row in await store.feedback_rates(_DAY):
        sent = row["sent"] or 0
        bounce = row["bounced"] / sent if sent else 0.0
        complaint = row["complained"] / sent if sent else 0.0
        rates[row["channel"]] = {
            "sent": sent,
            "bounce_rate": round(bounce, 5),
            "complaint_rate": round(complaint, 5),
        }
        if complaint > COMPLAINT_WARNING:
            warnings.append(
                f"{row['channel']}: complaint rate {complaint:.2%} is above "
                f"{COMPLAINT_WARNING:.1%} (last 24 h)"
            )
        if bounce > BOUNCE_WARNING:
            warnings.append(
                f"{row['channel']}: bounce rate {bounce:.2%} is above {BOUNCE_WARNING:.0%} "
                "(last 24 h)"
            )
    channels = sorted(set(depth) | set(oldest) | set(activity) | set(rates))
    return {
        "channels": {
            channel: {
                "depth": {
                    status: {"total": sum(p.values()), "by_priority": p}
                    for status, p in sorted(depth.get(channel, {}).items())
                },
                "oldest_pending_seconds": round(oldest.get(channel, 0.0), 3),
                "last_hour": activity.get(channel, {"sent": 0, "failed": 0}),
                "last_day": rates.get(
                    channel, {"sent": 0, "bounce_rate": 0.0, "complaint_rate": 0.0}
                ),
            }
            for channel in channels
        },
        "warnings": warnings,
        "webhooks": await HookStore(pool).counts(),
        "sms_month": await _sms_month(pool),
    }


async def _sms_month(pool: asyncpg.Pool) -> dict[str, Any]:
    """This month's SMS receipts and spend (UTC calendar month)."""
    gate = SpendGate(None, 0.0)
    await gate.refresh(pool)
    return {
        "spent_usd": round(gate.spent_usd, 6),
        "priced": gate.priced,
        "unpriced": gate.unpriced,
        "delivered": gate.delivered,
        "failed": gate.failed,
    }


def format_text(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    lines: list[str] = []
    if not report["channels"]:
        lines.append("the outbox is empty")
    for channel, data in report["channels"].items():
        lines.append(f"{channel}:")
        for status, counts in data["depth"].items():
            by_priority = ", ".join(f"p{p}={n}" for p, n in sorted(counts["by_priority"].items()))
            lines.append(f"  {status:<11} {counts['total']:>10}   ({by_priority})")
        lines.append(f"  oldest due pending: {data['oldest_pending_seconds']:.1f}s")
        hour = data["last_hour"]
        lines.append(f"  last hour: {hour['sent']} sent, {hour['failed']} failed")
        day = data["last_day"]
        lines.append(
            f"  last 24 h: {day['sent']} sent, bounce rate {day['bounce_rate']:.2%}, "
            f"complaint rate {day['complaint_rate']:.2%}"
        )
    hooks = report.get("webhooks")
    if hooks and any(hooks.values()):
        lines.append(
            f"webhooks: {hooks['pending']} pending, {hooks['sending']} being sent, "
            f"{hooks['failed']} failed (outboxd hooks replay)"
        )
    sms = report.get("sms_month")
    if sms and (sms["priced"] or sms["unpriced"]):
        lines.append(
            f"sms this month: {sms['spent_usd']:.4f} USD for {sms['priced']} priced "
            f"({sms['delivered']} delivered, {sms['failed']} failed by the carrier), "
            f"{sms['unpriced']} awaiting a receipt"
        )
    lines.extend(f"WARNING: {w}" for w in report["warnings"])
    return "\n".join(lines)


def register(commands: Any) -> None:
    stats = commands.add_parser("stats", help="queue depth and recent activity")
    stats.add_argument("--json", action="store_true", help="print the report as JSON")
    stats.set_defaults(handler=cmd_stats)


def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        report = await collect(pool)
        print(json.dumps(report, indent=2) if args.json else format_text(report))
        return 0

    return with_pool(settings, work)
