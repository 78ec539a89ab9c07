"""``outboxd run``: the daemon, in one process or several."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from daemon import db
from daemon.cli.common import positive_int
from daemon.settings import Settings


def register(commands: Any) -> None:
    run = commands.add_parser("run", help="run the daemon (SIGTERM/SIGINT stop it gracefully)")
    run.add_argument(
        "--processes",
        type=positive_int,
        default=None,
        metavar="N",
        help="daemon processes to run (default: OUTBOXD_WORKER__PROCESSES, 1)",
    )
    run.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    run.set_defaults(handler=cmd_run)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    processes = args.processes or settings.worker.processes
    if processes > 1 and not args.child and settings.http.enabled:
        from daemon.processes import shared_metrics

        # Entered before anything imports prometheus_client: the parent's metrics too.
        with shared_metrics():
            return _run(settings, args, processes)
    return _run(settings, args, processes)


def _run(settings: Settings, args: argparse.Namespace, processes: int) -> int:
    from daemon.main import Daemon
    from daemon.processes import Children, die_with_parent

    if args.child and args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    dsn, embedded = db.resolve_dsn(settings)
    if not args.child:
        _say_where_things_are(settings, dsn, embedded)

    async def runner() -> int:
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
        # Migrations are applied before children start; a daemon that cannot start (no
        # database) ends here with its error, and a signal meanwhile is heard.
        started = asyncio.create_task(daemon.started.wait())
        await asyncio.wait({main_task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not daemon.started.is_set():
            started.cancel()
            await main_task  # raises what stopped it
            return 0 if daemon.stopping.is_set() else 1
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


def _say_where_things_are(settings: Settings, dsn: str, embedded: bool) -> None:
    """Once, on the console: the embedded database's DSN and where message files go."""
    if embedded:
        data_dir = settings.data_dir.resolve()
        print(
            f"outboxd: embedded PostgreSQL under {data_dir / 'pgdata'} "
            f"(its start-up log: {data_dir / db.EMBEDDED_LOG})",
            file=sys.stderr,
        )
        # Embedded only: a configured OUTBOXD_DATABASE_URL may hold a password.
        print(f"outboxd: applications connect with {dsn}", file=sys.stderr)
    channels = [
        channel
        for channel, provider in (
            ("email", settings.email.provider),
            ("sms", settings.sms.provider),
        )
        if provider == "file"
    ]
    if channels:
        print(
            f"outboxd: {' and '.join(channels)} messages are written to files in "
            f"{settings.file_dir.resolve()}",
            file=sys.stderr,
        )
