"""``outboxd hooks add|list|remove|replay``: the application's webhook endpoints.

``add`` prints the new endpoint's id and its signing secret (generated unless given);
``replay`` sends failed deliveries again (same event ids, a new 24 h retry window).
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

import asyncpg

from daemon.cli.common import fail, positive_int, timestamp, with_pool
from daemon.feedback import outbound
from daemon.hooks.store import HookStore
from daemon.settings import Settings

EVENT_TYPES = (
    "message.sent", "message.delivered", "message.bounced", "message.complained",
    "message.failed", "message.opened", "message.clicked", "recipient.unsubscribed",
    "inbox.read",
)  # fmt: skip


def register(commands: Any) -> None:
    hooks = commands.add_parser("hooks", help="webhook endpoints of the application")
    actions = hooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add an endpoint; prints its id and secret")
    add.add_argument("url", help="https URL the events are POSTed to")
    add.add_argument(
        "--events",
        default="*",
        help=f"comma-separated event types, or * for all: {', '.join(EVENT_TYPES)}",
    )
    add.add_argument("--secret", help="signing secret (at least 16 characters; default: new)")
    add.add_argument("--description", help="a note for operators")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=cmd_add)
    listing = actions.add_parser("list", help="endpoints and their deliveries by status")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)
    remove = actions.add_parser("remove", help="remove an endpoint and its deliveries")
    remove.add_argument("id", type=positive_int, help="endpoint id")
    remove.set_defaults(handler=cmd_remove)
    replay = actions.add_parser("replay", help="send failed deliveries again")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=positive_int, action="append", help="delivery id")
    which.add_argument("--endpoint", type=positive_int, help="every failed one of an endpoint")
    which.add_argument("--all", action="store_true", help="every failed delivery")
    replay.add_argument("--since", type=timestamp, help="only those created since (ISO 8601)")
    replay.add_argument("--limit", type=positive_int, default=100_000, help="at most this many")
    replay.add_argument("--dry-run", action="store_true", help="only count them")
    replay.set_defaults(handler=cmd_replay)


def _events(text: str) -> list[str]:
    events = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(events) - {"*", *EVENT_TYPES})
    if not events or unknown:
        fail(
            f"unknown event type {', '.join(unknown) or '(none)'}; known: {', '.join(EVENT_TYPES)}"
        )
    return events


def cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    try:
        outbound.check_url(args.url, outbound.Allowlist.parse(settings.hooks.allow_private))
    except outbound.UrlRefused as exc:
        fail(f"{exc} (OUTBOXD_HOOKS__ALLOW_PRIVATE lists hosts that may be private or http)")
    secret = args.secret or "whsec_" + secrets.token_urlsafe(32)
    if len(secret) < 16:
        fail("the secret must have at least 16 characters")
    events = _events(args.events)

    async def work(pool: asyncpg.Pool) -> int:
        endpoint_id = await HookStore(pool).add(args.url, secret, events, args.description)
        if args.json:
            print(json.dumps({"id": endpoint_id, "secret": secret}))
        else:
            print(f"endpoint {endpoint_id}: {args.url}\nsecret: {secret}")
        return 0

    return with_pool(settings, work)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        rows = [
            {
                "id": row["id"],
                "url": row["url"],
                "events": list(row["events"]),
                "enabled": row["enabled"],
                "description": row["description"],
                "pending": row["pending"],
                "delivered": row["delivered"],
                "failed": row["failed"],
            }
            for row in await HookStore(pool).listing()
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print("no webhook endpoints")
        for row in rows:
            state = "" if row["enabled"] else "  (disabled)"
            print(
                f"{row['id']:>4}  {row['url']}{state}\n      events: {','.join(row['events'])}"
                f"  pending {row['pending']:,}  delivered {row['delivered']:,}"
                f"  failed {row['failed']:,}"
            )
        return 0

    return with_pool(settings, work)


def cmd_remove(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        if not await HookStore(pool).remove(args.id):
            fail(f"no webhook endpoint {args.id}")
        print(f"removed endpoint {args.id}")
        return 0

    return with_pool(settings, work)


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        matched, replayed = await HookStore(pool).replay(
            ids=args.id, endpoint_id=args.endpoint, since=args.since, limit=args.limit,
            dry_run=args.dry_run,
        )  # fmt: skip
        if args.dry_run:
            print(f"{matched} failed deliveries would be replayed")
        else:
            print(f"replayed {replayed} failed deliveries")
        return 0

    return with_pool(settings, work)
