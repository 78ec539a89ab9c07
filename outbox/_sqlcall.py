"""One SQL statement for both client drivers: asyncpg (``$n``) and DB-API cursors (``%s``).

A client helper writes its statement once, with each parameter named in braces, and gets
both renderings and the argument order from here; it never builds SQL per call. Every
placeholder carries its type cast, so that psycopg, Django and asyncpg resolve the same
function overload whatever Python types the caller passed.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import inspect
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

_SLOT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class DBAPICursor(Protocol):
    """What the helpers need of a DB-API cursor (psycopg 2 and 3, Django's cursor)."""

    def execute(self, operation: Any, parameters: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement with named, typed parameters, rendered for each paramstyle."""

    names: tuple[str, ...]
    asyncpg_sql: str
    dbapi_sql: str

    @classmethod
    def from_template(cls, template: str, params: Sequence[tuple[str, str]]) -> Statement:
        """``template`` uses each of ``params`` (name, SQL type) once, as ``{name}``, in order.

        The order matters because DB-API placeholders are positional.
        """
        names = tuple(name for name, _ in params)
        used = tuple(_SLOT.findall(template))
        if used != names:
            raise ValueError(f"template uses parameters {used}, expected {names} in that order")
        if "%" in _SLOT.sub("", template):
            # psycopg would read it as a placeholder (and Django needs it doubled).
            raise ValueError("template contains a literal '%'")
        kinds = dict(params)
        position = {name: i for i, name in enumerate(names, 1)}
        return cls(
            names,
            _SLOT.sub(lambda m: f"${position[m[1]]}::{kinds[m[1]]}", template),
            _SLOT.sub(lambda m: f"%s::{kinds[m[1]]}", template),
        )

    @classmethod
    def function_call(cls, function: str, params: Sequence[tuple[str, str]]) -> Statement:
        """``SELECT function(name => value, ...)``: named arguments, immune to reordering."""
        arguments = ", ".join(f"{name} => {{{name}}}" for name, _ in params)
        return cls.from_template(f"SELECT {function}({arguments})", params)

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The arguments in placeholder order; every parameter must have a value."""
        return tuple(values[name] for name in self.names)

    async def fetchval(self, conn: asyncpg.Connection, values: Mapping[str, Any]) -> Any:
        """Run on an asyncpg connection, in its current transaction; the first column."""
        require_connection(conn)
        return await conn.fetchval(self.asyncpg_sql, *self.args(values))

    async def fetchrow(self, conn: asyncpg.Connection, values: Mapping[str, Any]) -> Any:
        """Run on an asyncpg connection, in its current transaction; the first row."""
        require_connection(conn)
        return await conn.fetchrow(self.asyncpg_sql, *self.args(values))

    async def execute(self, conn: asyncpg.Connection, values: Mapping[str, Any]) -> None:
        """Run on an asyncpg connection, in its current transaction."""
        require_connection(conn)
        await conn.execute(self.asyncpg_sql, *self.args(values))

    def fetchval_cursor(self, cursor: DBAPICursor, values: Mapping[str, Any]) -> Any:
        """Run through a DB-API cursor, in its connection's transaction; the first column."""
        row = self.fetchrow_cursor(cursor, values)
        return None if row is None else row[0]

    def fetchrow_cursor(self, cursor: DBAPICursor, values: Mapping[str, Any]) -> Any:
        """Run through a DB-API cursor, in its connection's transaction; the first row."""
        require_cursor(cursor)
        cursor.execute(self.dbapi_sql, self.args(values))
        return cursor.fetchone()

    def execute_cursor(self, cursor: DBAPICursor, values: Mapping[str, Any]) -> None:
        """Run through a DB-API cursor, in its connection's transaction."""
        require_cursor(cursor)
        cursor.execute(self.dbapi_sql, self.args(values))


def require_connection(conn: object) -> None:
    """Accept only an asyncpg connection (or a pool's proxy of one).

    A pool is refused by name: each call would take some connection and commit on its own,
    outside the transaction the caller means to join.
    """
    if isinstance(conn, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
        return
    if isinstance(conn, asyncpg.Pool):
        raise TypeError(
            "expected an asyncpg connection, got a Pool: acquire a connection and call "
            "this inside your transaction (async with pool.acquire() as conn, "
            "conn.transaction(): ...)"
        )
    raise TypeError(
        f"expected an asyncpg connection, got {type(conn).__name__} "
        "(for a DB-API connection, use the *_cursor helper with one of its cursors)"
    )


def require_cursor(cursor: object) -> None:
    """Accept only what looks like a DB-API cursor (psycopg 2 and 3, Django's wrapper)."""
    execute = getattr(cursor, "execute", None)
    if not callable(execute) or not callable(getattr(cursor, "fetchone", None)):
        raise TypeError(
            f"expected a DB-API cursor, got {type(cursor).__name__} "
            "(with psycopg or Django: connection.cursor(); with asyncpg: the helper without "
            "_cursor)"
        )
    if inspect.iscoroutinefunction(execute):
        raise TypeError(
            f"expected a DB-API cursor, got an asynchronous {type(cursor).__name__}: run the "
            "helper through a synchronous cursor (or asyncpg with the helper without _cursor)"
        )


def _json_default(value: object) -> str:
    # The types applications most often put in a template context or attributes.
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable")


def json_object(value: Mapping[str, Any] | None, what: str) -> str:
    """``value`` as JSON text for a ``jsonb`` parameter; ``None`` is ``{}``."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)
    except TypeError as exc:
        raise TypeError(f"{what}: {exc}") from exc
