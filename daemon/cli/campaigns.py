"""``outboxd campaign list|show|start|cancel|stats``: campaigns from the command line.

Campaigns are written with SQL (``outbox.campaign``); these commands look at them, start
and cancel them. ``start`` shows the expansion as it happens (the message id sequence
moves while the single INSERT ... SELECT runs) and, with ``--follow``, the sending.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import asyncpg

from daemon.campaigns.store import CampaignStore
from daemon.cli.common import fail, positive_int, with_pool
from daemon.settings import Settings
from outbox import errors

#: Message statuses that are not finished yet.
_UNFINISHED = ("pending", "sending")
_STATS = ("sent", "delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")


class ProgressBar:
    """``label [#####.....] done/total`` redrawn in place on a terminal (or when forced)."""

    def __init__(self, label: str, total: int, *, stream: TextIO, shown: bool) -> None:
        self.label, self.total, self.stream, self.shown = label, max(total, 0), stream, shown

    def render(self, done: int) -> str:
        total = max(self.total, done, 1)
        filled = int(30 * min(done, total) / total)
        return f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{self.total:,}"

    def show(self, done: int) -> None:
        if self.shown:
            print("\r" + self.render(done), end="", file=self.stream, flush=True)

    def close(self, done: int) -> None:
        if self.shown:
            print("\r" + self.render(done), file=self.stream, flush=True)


def register(commands: Any) -> None:
    campaign = commands.add_parser("campaign", help="list, show, start, cancel campaigns")
    actions = campaign.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every campaign and its status")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)
    for name, handler, text in (
        ("show", cmd_show, "a campaign's definition and its messages by status"),
        ("stats", cmd_stats, "sent, delivered, opened, clicked... per variant"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("id", type=positive_int, help="campaign id")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=handler)
    start = actions.add_parser("start", help="expand the audience into messages (or schedule)")
    start.add_argument("id", type=positive_int, help="campaign id")
    start.add_argument("--follow", action="store_true", help="then show the sending until done")
    start.add_argument(
        "--progress", action="store_true", help="draw progress bars even when not on a terminal"
    )
    start.set_defaults(handler=cmd_start)
    cancel = actions.add_parser("cancel", help="cancel a campaign and its pending messages")
    cancel.add_argument("id", type=positive_int, help="campaign id")
    cancel.set_defaults(handler=cmd_cancel)


def _refusal(exc: errors.DatabaseError) -> str:
    """The database's own sentence for a refused call, else the whole error."""
    cause = exc.__cause__
    if isinstance(cause, asyncpg.PostgresError) and (cause.sqlstate or "").startswith("22"):
        return re.sub(r"^outbox\.[a-z_]+: ", "", str(cause))
    return str(exc)


def _run(settings: Settings, work: Callable[[CampaignStore], Any]) -> int:
    async def with_store(pool: asyncpg.Pool) -> int:
        try:
            code: int = await work(CampaignStore(pool))
        except errors.DatabaseError as exc:
            fail(_refusal(exc))
        return code

    return with_pool(settings, with_store)


async def _campaign(store: CampaignStore, campaign_id: int) -> asyncpg.Record:
    row = await store.campaign(campaign_id)
    if row is None:
        fail(f"no campaign {campaign_id}")
    return row


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _record(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _jsonable(value) for key, value in row.items()}


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: CampaignStore) -> int:
        rows = [_record(row) for row in await store.campaigns()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print("no campaigns")
        for row in rows:
            audience = "-" if row["audience"] is None else f"{row['audience']:,}"
            when = row["started_at"] or row["send_at"]
            print(
                f"{row['id']:>5}  {row['name'][:30]:<30}  {row['list_name'][:16]:<16}  "
                f"{row['status']:<9}  {audience:>10}  {when or '-'}"
            )
        return 0

    return _run(settings, work)


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: CampaignStore) -> int:
        row = _record(await _campaign(store, args.id))
        messages = await store.progress(args.id)
        if args.json:
            print(json.dumps({**row, "messages": messages}, indent=2))
            return 0
        print(f"campaign {row['id']}: {row['name']}")
        for key in ("status", "list_name", "template", "category", "send_at", "started_at",
                    "finished_at", "audience", "last_error"):  # fmt: skip
            if row[key] is not None:
                print(f"  {key.replace('_name', ''):<12} {row[key]}")
        if row["segment"]:
            print(f"  {'segment':<12} {json.dumps(row['segment'])}")
        for i, variant in enumerate(row["variants"] or []):
            label = chr(65 + i)
            won = "  (winner)" if row["winner_variant"] == label else ""
            print(f"  variant {label}    {variant.get('subject')!r}{won}")
        if row["test_percent"] is not None:
            print(
                f"  A/B test     {row['test_percent']}% first, winner by {row['winner_metric']} "
                f"after {row['winner_after']}"
            )
        if row["winner_rates"]:
            print(f"  rates        {json.dumps(row['winner_rates'])}")
        counts = ", ".join(f"{status} {n:,}" for status, n in sorted(messages.items()))
        print(f"  messages     {counts or 'none yet'}")
        return 0

    return _run(settings, work)


def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: CampaignStore) -> int:
        row = await _campaign(store, args.id)
        stats = [_record(r) for r in await store.stats(args.id)]
        if args.json:
            print(json.dumps({"campaign_id": args.id, "winner_variant": row["winner_variant"],
                              "variants": stats}, indent=2))  # fmt: skip
            return 0
        print(f"campaign {args.id}: {row['name']} ({row['status']})")
        print(f"  {'variant':<8}" + "".join(f"{name:>13}" for name in _STATS))
        for line in stats:
            sent = line["sent"] or 0

            def cell(name: str, line: dict[str, Any] = line, sent: int = sent) -> str:
                value = line[name]
                if name == "sent" or not sent:
                    return f"{value:>13,}"
                return f"{value:>6,} {value / sent:>5.1%}"

            print(f"  {line['variant'] or '-':<8}" + "".join(cell(name) for name in _STATS))
        if row["winner_variant"]:
            print(f"  winner: {row['winner_variant']} (by {row['winner_metric']})")
        return 0

    return _run(settings, work)


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: CampaignStore) -> int:
        await _campaign(store, args.id)
        stopped = await store.cancel(args.id)
        print(f"campaign {args.id} cancelled: {stopped:,} pending messages will not be sent")
        return 0

    return _run(settings, work)


def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    shown = args.progress or sys.stderr.isatty()

    async def work(store: CampaignStore) -> int:
        row = await _campaign(store, args.id)
        if row["send_at"] is not None and row["send_at"] > datetime.now(UTC):
            await store.start(args.id)
            print(f"campaign {args.id} scheduled for {_when(row['send_at'])}")
            return 0
        made = await _expand(store, args.id, shown)
        print(f"campaign {args.id} started: {made:,} messages to send")
        if args.follow:
            await _follow(store, args.id, shown)
        return 0

    return _run(settings, work)


async def _expand(store: CampaignStore, campaign_id: int, shown: bool) -> int:
    """Start the campaign, drawing the expansion from the id sequence meanwhile."""
    total = await store.audience_estimate(campaign_id) if shown else 0
    base = await store.message_id_high_water()
    bar = ProgressBar("expanding", total, stream=sys.stderr, shown=shown)
    starting = asyncio.create_task(store.start(campaign_id))
    while shown and not starting.done():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await asyncio.shield(starting)
        if not starting.done():
            with contextlib.suppress(errors.DatabaseError):
                bar.show(min(await store.message_id_high_water() - base, total))
    made = await starting
    bar.total = made
    bar.close(made)
    return made


async def _follow(store: CampaignStore, campaign_id: int, shown: bool) -> None:
    """Draw the sending until the campaign is sent or cancelled (Ctrl-C detaches)."""
    bar = ProgressBar("sending  ", 0, stream=sys.stderr, shown=shown)
    try:
        while True:
            row = await _campaign(store, campaign_id)
            counts = await store.progress(campaign_id)
            bar.total = sum(counts.values())
            done = bar.total - sum(counts.get(s, 0) for s in _UNFINISHED)
            if row["status"] in ("sent", "cancelled"):
                bar.close(done)
                print(f"campaign {campaign_id} {row['status']}: " + ", ".join(
                    f"{status} {n:,}" for status, n in sorted(counts.items())))  # fmt: skip
                return
            bar.show(done)
            await asyncio.sleep(1.0)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"\nstopped following; campaign {campaign_id} goes on", file=sys.stderr)
