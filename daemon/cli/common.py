"""What every command shares: failing with one line, argument types, a short-lived pool."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import asyncpg

from daemon import db
from daemon.settings import Settings

_N = TypeVar("_N", int, float)

#: Exit status for bad usage or bad settings.
EXIT_USAGE = 2

#: A command: runs with the settings and its parsed arguments, returns the exit status.
Handler = Callable[[Settings, argparse.Namespace], int]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``outboxd: message`` to stderr and exit with ``code``."""
    print(f"outboxd: {message}", file=sys.stderr)
    raise SystemExit(code)


def json_object(value: str) -> dict[str, Any]:
    """Argument type: a JSON object."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


def timestamp(value: str) -> datetime:
    """Argument type: an ISO 8601 time with a time zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("needs a time zone, e.g. 2030-01-01T09:00:00+00:00")
    return parsed


def positive_number(value: str) -> float:
    """Argument type: a number greater than zero."""
    return _at_least(value, float, "a number", "greater than 0", lambda n: n > 0)


def positive_int(value: str) -> int:
    """Argument type: a whole number of at least 1."""
    return _at_least(value, int, "a whole number", "at least 1", lambda n: n >= 1)


def _at_least(
    value: str, kind: Callable[[str], _N], noun: str, bound: str, ok: Callable[[_N], bool]
) -> _N:
    try:
        number = kind(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not {noun}: {value!r}") from exc
    if not ok(number):
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    return number


def with_pool(
    settings: Settings,
    work: Callable[[asyncpg.Pool], Awaitable[int]],
    *,
    check_schema: bool = True,
) -> int:
    """Run ``work`` with a small pool on the configured database (schema checked first)."""
    dsn, _ = db.resolve_dsn(settings)

    async def runner() -> int:
        pool = await db.create_pool(
            dsn, min_size=1, max_size=2, transaction_pooling=settings.transaction_pooling
        )
        try:
            if check_schema:
                await db.ensure_schema(pool, migrate=False)
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(runner())
