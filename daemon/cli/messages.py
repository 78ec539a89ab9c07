"""``outboxd enqueue``, ``requeue`` and ``purge``: messages by hand."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from daemon import addresses
from daemon.cli.common import (
    EXIT_USAGE,
    fail,
    json_object,
    positive_int,
    positive_number,
    timestamp,
    with_pool,
)
from daemon.settings import Settings
from outbox import errors

_REQUEUEABLE = ("failed", "expired", "cancelled", "suppressed")


def register(commands: Any) -> None:
    enqueue = commands.add_parser("enqueue", help="enqueue one message")
    enqueue.add_argument("--channel", choices=("email", "sms"), required=True, help="channel")
    enqueue.add_argument(
        "--to", required=True, dest="recipient", help="email address or E.164 phone number"
    )
    enqueue.add_argument("--template", required=True, help="template name, e.g. welcome")
    enqueue.add_argument(
        "--context", type=json_object, default={}, help="template variables as a JSON object"
    )
    enqueue.add_argument(
        "--category", default="transactional", help="category (default: transactional)"
    )
    enqueue.add_argument(
        "--priority", type=int, choices=range(4), default=1, help="0 low .. 3 urgent (1)"
    )
    enqueue.add_argument("--locale", help="locale variant of the template, e.g. fr")
    enqueue.add_argument("--idempotency-key", help="a second enqueue with this key does nothing")
    enqueue.add_argument("--not-before", type=timestamp, help="send no earlier (ISO 8601)")
    enqueue.add_argument("--expires-at", type=timestamp, help="send no later (ISO 8601)")
    enqueue.add_argument("--tags", type=json_object, default={}, help="labels as a JSON object")
    enqueue.set_defaults(handler=cmd_enqueue)

    requeue = commands.add_parser(
        "requeue", help="send failed (or expired, cancelled, suppressed) messages again"
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", type=positive_int, action="append", dest="ids", help="a message id (repeatable)"
    )
    which.add_argument(
        "--status", action="append", choices=_REQUEUEABLE, help="every message in this status"
    )
    requeue.add_argument("--error", metavar="PATTERN", help="last_error ILIKE pattern: %%451%%")
    requeue.add_argument("--since", type=timestamp, help="updated at or after (ISO 8601)")
    requeue.add_argument("--until", type=timestamp, help="updated before (ISO 8601)")
    requeue.add_argument("--dry-run", action="store_true", help="count, change nothing")
    requeue.add_argument(
        "--limit", type=positive_int, default=10_000, help="at most this many (10,000)"
    )
    requeue.set_defaults(handler=cmd_requeue)

    purge = commands.add_parser("purge", help="purge finished messages older than DAYS")
    purge.add_argument(
        "--older-than",
        type=positive_number,
        required=True,
        metavar="DAYS",
        help="age in days (fractions allowed) of the finished messages to delete",
    )
    purge.set_defaults(handler=cmd_purge)


def cmd_enqueue(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.delivery.render import Renderer
    from outbox.messages import enqueue

    # Refuse here what would only fail later, in the daemon, with exit status 0 now.
    if not Renderer.from_settings(settings).exists(channel=args.channel, template=args.template):
        fail(
            f"template {args.template!r} has no {args.channel} parts in {settings.templates_path}",
            EXIT_USAGE,
        )
    try:
        if args.channel == "email":
            addresses.validate_email(args.recipient)
        else:
            addresses.validate_phone(args.recipient)
    except errors.InvalidRecipient as exc:
        fail(exc.reason, EXIT_USAGE)

    async def work(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as conn:
            message_id = await enqueue(
                conn,
                channel=args.channel,
                recipient=args.recipient,
                template=args.template,
                context=args.context,
                category=args.category,
                priority=args.priority,
                locale=args.locale,
                idempotency_key=args.idempotency_key,
                not_before=args.not_before,
                expires_at=args.expires_at,
                tags=args.tags,
            )
        print(message_id)
        return 0

    return with_pool(settings, work)


def cmd_requeue(settings: Settings, args: argparse.Namespace) -> int:
    from outbox.store import Store

    async def work(pool: asyncpg.Pool) -> int:
        store = Store(pool)
        if args.ids:
            wanted = list(dict.fromkeys(args.ids))
            requeued = set(await store.requeue_ids(wanted))
            print(f"requeued {len(requeued)} message(s)")
            left = [i for i in wanted if i not in requeued]
            if not left:
                return 0
            statuses = await store.statuses(left)
            for message_id in left:
                status = statuses.get(message_id)
                reason = (
                    "no such message" if status is None
                    else f"it is {status}; only {', '.join(_REQUEUEABLE)} can be requeued"
                )  # fmt: skip
                print(f"outboxd: not requeued: message {message_id}: {reason}", file=sys.stderr)
            return 1
        matched, moved = await store.requeue_matching(
            args.status,
            error_like=args.error,
            since=args.since,
            until=args.until,
            limit=args.limit,
            dry_run=args.dry_run,
        )
        if args.dry_run:
            print(f"{matched} message(s) match; nothing changed (dry run)")
        else:
            print(f"requeued {moved} message(s)")
        return 0

    return with_pool(settings, work)


def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.delivery.retention import Retention

    async def work(pool: asyncpg.Pool) -> int:
        result = await Retention(pool).purge(
            args.older_than * 86400, idempotency_seconds=settings.worker.idempotency_days * 86400
        )
        print(f"purged {result.messages} message(s) and {result.events} event(s)")
        if result.partitions:
            print(
                f"dropped {len(result.partitions)} archive partition(s): "
                + ", ".join(result.partitions)
            )
        return 0

    return with_pool(settings, work)
