"""``outboxd bench``: its options here; the benchmark itself (:mod:`daemon.bench`) is imported
only when the command runs, so the daemon never loads it."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.common import positive_int, positive_number
from daemon.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "bench", help="measure throughput and latency in a throwaway database"
    )
    parser.add_argument(
        "--messages", type=positive_int, default=50_000, help="backlog size (50,000)"
    )
    parser.add_argument(
        "--provider",
        choices=("null", "smtp", "ses"),
        default="null",
        help="null; smtp to a sink (--smtp-sink); ses to a fast local fake SES endpoint",
    )
    parser.add_argument(
        "--smtp-sink",
        choices=("minimal", "postfix", "aiosmtpd"),
        default="minimal",
        help="the SMTP server of --provider smtp: minimal (parses almost nothing), Postfix's "
        "smtp-sink (when installed) or aiosmtpd",
    )
    parser.add_argument(
        "--processes", type=positive_int, default=1, help="drain with `outboxd run --processes N`"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="floor (SES: bare aioboto3 loop) and drain alternated this many times; the "
        "median ratio is reported",
    )
    parser.add_argument("--concurrency", type=positive_int, default=None, help="sends in flight")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="rows per claim")
    parser.add_argument(
        "--rate", type=positive_number, default=200.0, help="offered rate, latency phase (200/s)"
    )
    parser.add_argument(
        "--latency-seconds",
        type=positive_number,
        default=10.0,
        help="how long the latency phase offers its rate (10 s)",
    )
    parser.add_argument(
        "--extra-pending",
        type=int,
        default=0,
        help="also keep this many scheduled (not yet due) rows in the table",
    )
    parser.add_argument(
        "--notify-share",
        type=_share,
        default=0.3,
        help="notify phase: share of the second backlog's rows made by outbox.notify (0.3)",
    )
    parser.add_argument(
        "--notify-calls",
        type=positive_int,
        default=2000,
        help="notify phase: three-channel notify calls timed against three enqueue calls (2,000)",
    )
    parser.add_argument(
        "--notify-rounds",
        type=positive_int,
        default=5,
        help="notify phase: pairs of drains (plain, then with notify rows) to take the median of",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("floor", "drain", "notify", "latency"),
        help="leave out a phase (repeatable)",
    )
    parser.add_argument(
        "--compare",
        choices=("celery",),
        help="also drain the same backlog with a Celery worker on Redis (needs --provider smtp)",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/15", help="broker for --compare celery"
    )
    parser.add_argument(
        "--digests",
        action="store_true",
        help="also measure the digest flush against its SQL floor, and the claim rate "
        "beside a batched backlog",
    )
    parser.add_argument(
        "--digest-items", type=positive_int, default=100_000, help="batched items (100,000)"
    )
    parser.add_argument(
        "--digest-groups", type=positive_int, default=10_000, help="digests they fold into"
    )
    parser.add_argument(
        "--batched",
        type=positive_int,
        default=1_000_000,
        help="rows waiting batched beside the claim (1,000,000)",
    )
    parser.add_argument(
        "--inbox",
        action="store_true",
        help="measure the in-app inbox instead: unread counts and SSE streams",
    )
    parser.add_argument(
        "--inbox-rows", type=int, default=1_000_000, help="inbox items for --inbox (1,000,000)"
    )
    parser.add_argument(
        "--inbox-clients", type=int, default=5000, help="SSE clients for --inbox (5,000)"
    )
    parser.add_argument(
        "--inbox-client-processes",
        type=positive_int,
        default=2,
        help="processes the --inbox clients are spread over (2)",
    )
    parser.add_argument(
        "--inbox-rate", type=positive_number, default=200.0, help="items/s offered (200)"
    )
    parser.add_argument(
        "--inbox-seconds", type=positive_number, default=10.0, help="how long (10 s)"
    )
    parser.add_argument(
        "--campaign",
        action="store_true",
        help="also expand a campaign to --audience people against the bare INSERT ... SELECT, "
        "then time transactional mail (at --rate) while the daemon sends it",
    )
    parser.add_argument(
        "--audience", type=positive_int, default=1_000_000, help="campaign audience (1,000,000)"
    )
    parser.add_argument(
        "--campaign-rounds", type=positive_int, default=2, help="expansion rounds of each side (2)"
    )
    parser.add_argument(
        "--campaign-rate",
        type=float,
        default=0.0,
        help="OUTBOXD_EMAIL__RATE while the campaign drains (0: unlimited)",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="measure webhooks instead: extra cost per sent message with no endpoint and "
        "with one, and the webhook lane's events/s",
    )
    parser.add_argument(
        "--webhook-events", type=positive_int, default=20_000, help="deliveries posted (20,000)"
    )
    parser.add_argument(
        "--webhook-rounds", type=positive_int, default=3, help="drains of each side (3)"
    )
    parser.add_argument(
        "--retention",
        action="store_true",
        help="measure instead what --sends sends and a purge leave behind (table and index "
        "sizes, claim rate) against a fresh database, archive and row-by-row purge side by side",
    )
    parser.add_argument(
        "--sends", type=positive_int, default=10_000_000, help="sends for --retention (10M)"
    )
    parser.add_argument(
        "--claim-rows", type=positive_int, default=100_000, help="claim floor rows (100,000)"
    )
    parser.add_argument(
        "--no-delete",
        action="store_true",
        help="--retention: leave out the row-by-row purge comparison",
    )
    parser.add_argument(
        "--pgbouncer",
        metavar="HOST:PORT",
        help="measure instead the drain straight to PostgreSQL against one through this "
        "PgBouncer (transaction mode, routing every database name), alternating",
    )
    parser.add_argument(
        "--pool-rounds", type=positive_int, default=2, help="--pgbouncer: drains of each (2)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=cmd_bench)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and less than 1, got {text}")
    return value


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.pgbouncer:
        import asyncio
        import json

        from daemon.bench import pooling

        result = asyncio.run(pooling.run(settings, args))
        print(json.dumps(result, indent=2) if args.json else pooling.format_result(result))
        return 0
    if args.retention:
        from daemon.bench import retention

        return retention.print_run(settings, args)
    from daemon.bench import main as bench

    return bench.run(settings, args)
