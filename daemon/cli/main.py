"""``outboxd``: parses the command line and runs the command with the settings."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from daemon import settings as settings_module
from daemon.cli import (
    bench,
    campaigns,
    check,
    database,
    hooks,
    messages,
    run,
    stats,
    templates,
)
from daemon.cli.common import EXIT_USAGE, Handler, fail
from outbox import errors

#: Each registers its commands; the order is the order of ``outboxd --help``.
COMMAND_GROUPS = (database, run, templates, messages, stats, campaigns, hooks, check, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outboxd", description="Transactional-outbox notification daemon for PostgreSQL."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_module.load()
    except errors.ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    from daemon import logs

    logs.setup(settings.log_format, settings.log_level)
    handler: Handler = args.handler
    try:
        code = handler(settings, args)
    except errors.ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    except errors.OutboxError as exc:
        fail(str(exc))
    raise SystemExit(code)
