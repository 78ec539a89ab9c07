"""The ``outboxd`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn

from daemon import db
from daemon import settings as settings_module
from daemon.settings import Settings
from outbox import errors

EXIT_USAGE = 2


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"outboxd: {message}", file=sys.stderr)
    raise SystemExit(code)


def _json_arg(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


def _datetime_arg(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("needs a time zone, e.g. 2030-01-01T09:00:00+00:00")
    return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outboxd", description="Transactional-outbox notification daemon for PostgreSQL."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="create or upgrade the outbox schema")
    run = sub.add_parser("run", help="run the daemon (SIGTERM/SIGINT stop it gracefully)")
    run.add_argument(
        "--processes", type=int, default=None, help="daemon processes (OUTBOXD_WORKER__PROCESSES)"
    )
    run.add_argument("--child", action="store_true", help=argparse.SUPPRESS)

    render = sub.add_parser("render", help="render a template to stdout")
    render.add_argument("name")
    render.add_argument("--context", type=_json_arg, default={})
    render.add_argument("--channel", choices=("email", "sms"), default=None)
    render.add_argument("--locale")
    render.add_argument("--recipient", default="recipient@example.com")

    enqueue = sub.add_parser("enqueue", help="enqueue one message")
    enqueue.add_argument("--channel", choices=("email", "sms"), required=True)
    enqueue.add_argument("--to", required=True, dest="recipient")
    enqueue.add_argument("--template", required=True)
    enqueue.add_argument("--context", type=_json_arg, default={})
    enqueue.add_argument("--category", default="transactional")
    enqueue.add_argument("--priority", type=int, choices=range(4), default=1)
    enqueue.add_argument("--locale")
    enqueue.add_argument("--idempotency-key")
    enqueue.add_argument("--not-before", type=_datetime_arg)
    enqueue.add_argument("--expires-at", type=_datetime_arg)
    enqueue.add_argument("--tags", type=_json_arg, default={})

    stats = sub.add_parser("stats", help="queue depth and recent activity")
    stats.add_argument("--json", action="store_true")

    requeue = sub.add_parser(
        "requeue", help="send failed (or expired, cancelled...) messages again"
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", dest="ids")
    which.add_argument(
        "--status", action="append", choices=("failed", "expired", "cancelled", "suppressed")
    )
    requeue.add_argument("--error", metavar="PATTERN", help="last_error ILIKE pattern: %%451%%")
    requeue.add_argument("--since", type=_datetime_arg, help="updated at or after (ISO 8601)")
    requeue.add_argument("--until", type=_datetime_arg, help="updated before (ISO 8601)")
    requeue.add_argument("--dry-run", action="store_true", help="count, change nothing")
    requeue.add_argument("--limit", type=int, default=10_000)

    purge = sub.add_parser("purge", help="delete finished messages older than DAYS")
    purge.add_argument("--older-than", type=float, required=True, metavar="DAYS")

    sub.add_parser("check", help="check configuration, database, schema and templates")

    from daemon import bench

    bench.add_arguments(sub.add_parser("bench", help="measure throughput and latency"))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_module.load()
    except errors.ConfigurationError as exc:
        _fail(str(exc), EXIT_USAGE)
    from daemon import logs

    logs.setup(settings.log_format, settings.log_level)
    handler = _COMMANDS[args.command]
    try:
        code = handler(settings, args)
    except errors.ConfigurationError as exc:
        _fail(str(exc), EXIT_USAGE)
    except errors.OutboxError as exc:
        _fail(str(exc))
    raise SystemExit(code)


# -- commands ----------------------------------------------------------------------------


def _with_pool(
    settings: Settings, work: Callable[[Any], Awaitable[int]], *, check_schema: bool = True
) -> int:
    dsn, _ = db.resolve_dsn(settings)

    async def runner() -> int:
        pool = await db.create_pool(dsn, min_size=1, max_size=2)
        try:
            if check_schema:
                await db.ensure_schema(pool, migrate=False)
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(runner())


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from outbox import migrations

    async def work(pool: Any) -> int:
        async with pool.acquire() as conn:
            applied = await migrations.migrate(conn)
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        print(f"schema is at version {migrations.latest_version()}")
        return 0

    return _with_pool(settings, work, check_schema=False)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    processes = args.processes or settings.worker.processes
    if processes < 1:
        _fail("--processes must be at least 1", EXIT_USAGE)
    if processes > 1 and not args.child and settings.http.enabled:
        from daemon.processes import shared_metrics

        # Entered before anything imports prometheus_client: the parent's metrics too.
        with shared_metrics():
            return _run(settings, args, processes)
    return _run(settings, args, processes)


def _run(settings: Settings, args: argparse.Namespace, processes: int) -> int:
    from daemon.main import Daemon

    dsn, embedded = db.resolve_dsn(settings)
    if embedded and not args.child:
        print(
            f"outboxd: using embedded PostgreSQL under {(settings.data_dir / 'pgdata').resolve()}",
            file=sys.stderr,
        )
    for channel, provider in (("email", settings.email.provider), ("sms", settings.sms.provider)):
        if provider == "file" and not args.child:
            print(
                f"outboxd: {channel} goes to files in {settings.file_dir.resolve()}",
                file=sys.stderr,
            )

    async def runner() -> int:
        from daemon.processes import Children

        daemon = Daemon(settings, dsn=dsn)
        loop = asyncio.get_running_loop()
        signals_seen = 0
        children = Children(0 if args.child else processes - 1)

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen > 1:
                print("outboxd: second signal, exiting at once", file=sys.stderr)
                children.signal(signal.SIGKILL)
                os._exit(128 + signum)
            daemon.request_stop()
            children.signal(signal.SIGTERM)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        if not children.count:
            await daemon.run()
            return 0
        main_task = asyncio.create_task(daemon.run())
        await daemon.started.wait()  # migrations are applied before children start
        await children.start()
        child_exit = asyncio.create_task(children.wait_any())
        await asyncio.wait({main_task, child_exit}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if child_exit.done() and not daemon.stopping.is_set():
            code = 1
            print(
                f"outboxd: a child process exited ({child_exit.result()}); stopping",
                file=sys.stderr,
            )
            daemon.request_stop()
        child_exit.cancel()
        await children.stop(settings.worker.grace_seconds + 5)
        await main_task
        return code

    return asyncio.run(runner())


def cmd_render(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.main import templates_dir
    from outbox.render import Renderer

    renderer = Renderer(templates_dir(settings), brand=settings.brand)
    channel = args.channel or (
        "sms" if renderer.exists(channel="sms", template=args.name) else "email"
    )
    context = {"recipient": args.recipient, "message_id": 0, **args.context}
    rendered = renderer.render(
        channel=channel, template=args.name, context=context, locale=args.locale
    )
    if channel == "sms":
        print(rendered.sms)
        return 0
    print(f"Subject: {rendered.subject}\n\n--- text ---\n{rendered.text}")
    if rendered.html:
        print(f"\n--- html ---\n{rendered.html}")
    return 0


def cmd_enqueue(settings: Settings, args: argparse.Namespace) -> int:
    from outbox.enqueue import enqueue

    async def work(pool: Any) -> int:
        message_id = await enqueue(
            pool,
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

    return _with_pool(settings, work)


def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    from daemon import stats

    async def work(pool: Any) -> int:
        report = await stats.collect(pool)
        print(json.dumps(report, indent=2) if args.json else stats.format_text(report))
        return 0

    return _with_pool(settings, work)


def cmd_requeue(settings: Settings, args: argparse.Namespace) -> int:
    from outbox.store import Store

    async def work(pool: Any) -> int:
        store = Store(pool)
        if args.ids:
            ids = await store.requeue_ids(args.ids)
            print(f"requeued {len(ids)} message(s)")
            return 0
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

    return _with_pool(settings, work)


def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    from outbox.store import Store

    async def work(pool: Any) -> int:
        store = Store(pool)
        messages = events = 0
        while True:
            m, e = await store.purge(args.older_than * 86400, 1000)
            messages, events = messages + m, events + e
            if m < 1000 and e < 1000:
                break
        print(f"purged {messages} message(s) and {events} event(s)")
        return 0

    return _with_pool(settings, work)


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from daemon import doctor

    return asyncio.run(doctor.run(settings))


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from daemon import bench

    return bench.run(settings, args)


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "run": cmd_run,
    "render": cmd_render,
    "enqueue": cmd_enqueue,
    "stats": cmd_stats,
    "requeue": cmd_requeue,
    "purge": cmd_purge,
    "check": cmd_check,
    "bench": cmd_bench,
}


if __name__ == "__main__":
    main()
