"""Enqueue notifications on the caller's connection, inside the caller's transaction.

If the transaction rolls back, the message never existed; once it commits, outboxd
delivers it at least once. Three ways in:

* :func:`enqueue` - one message on an asyncpg connection;
* :func:`enqueue_cursor` - one message on any DB-API cursor using the ``%s`` paramstyle
  (psycopg 2 and 3, Django's ``connection.cursor()``);
* :func:`enqueue_many` - bulk enqueue on an asyncpg connection through ``COPY``.

All three go through the same rules as the SQL function ``outbox.enqueue(...)``:
a repeated ``idempotency_key`` creates nothing and returns the existing id.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg


def _json_default(value: object) -> str:
    # Convenience for the types applications most often put in a template context.
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"context value of type {type(value).__name__} is not JSON serialisable")


def _to_json(value: Mapping[str, Any] | None, what: str) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to enqueue. Only ``channel``, ``recipient`` and ``template`` are required."""

    channel: str
    recipient: str
    template: str
    context: Mapping[str, Any] = field(default_factory=dict)
    category: str = "transactional"
    priority: int = 1
    not_before: _dt.datetime | None = None
    expires_at: _dt.datetime | None = None
    idempotency_key: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    locale: str | None = None

    def sql_args(self) -> tuple[Any, ...]:
        """Arguments in the order of :data:`_ARG_NAMES`."""
        return (
            self.channel,
            self.recipient,
            self.template,
            _to_json(self.context, "context"),
            self.category,
            int(self.priority),
            self.not_before,
            self.expires_at,
            self.idempotency_key,
            _to_json(self.tags, "tags"),
            self.locale,
        )


_ARG_NAMES = (
    ("channel", "text"),
    ("recipient", "text"),
    ("template", "text"),
    ("context", "jsonb"),
    ("category", "text"),
    ("priority", "integer"),
    ("not_before", "timestamptz"),
    ("expires_at", "timestamptz"),
    ("idempotency_key", "text"),
    ("tags", "jsonb"),
    ("locale", "text"),
)

_ASYNCPG_SQL = "SELECT outbox.enqueue({})".format(
    ", ".join(f"{name} => ${i}::{kind}" for i, (name, kind) in enumerate(_ARG_NAMES, 1))
)
_DBAPI_SQL = "SELECT outbox.enqueue({})".format(
    ", ".join(f"{name} => %s::{kind}" for name, kind in _ARG_NAMES)
)


async def enqueue(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    channel: str,
    recipient: str,
    template: str,
    context: Mapping[str, Any] | None = None,
    category: str = "transactional",
    priority: int = 1,
    not_before: _dt.datetime | None = None,
    expires_at: _dt.datetime | None = None,
    idempotency_key: str | None = None,
    tags: Mapping[str, Any] | None = None,
    locale: str | None = None,
) -> int:
    """Enqueue one message on ``conn`` (in its current transaction); returns its id."""
    message = NewMessage(
        channel, recipient, template, context or {}, category, priority,
        not_before, expires_at, idempotency_key, tags or {}, locale,
    )  # fmt: skip
    message_id: int = await conn.fetchval(_ASYNCPG_SQL, *message.sql_args())
    return message_id


class DBAPICursor(Protocol):
    def execute(self, operation: Any, parameters: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...


def enqueue_cursor(
    cursor: DBAPICursor,
    *,
    channel: str,
    recipient: str,
    template: str,
    context: Mapping[str, Any] | None = None,
    category: str = "transactional",
    priority: int = 1,
    not_before: _dt.datetime | None = None,
    expires_at: _dt.datetime | None = None,
    idempotency_key: str | None = None,
    tags: Mapping[str, Any] | None = None,
    locale: str | None = None,
) -> int:
    """Enqueue one message through a DB-API cursor (``%s`` paramstyle); returns its id.

    Django::

        with transaction.atomic():
            order.save()
            with connection.cursor() as cursor:
                enqueue_cursor(cursor, channel="email", recipient=user.email,
                               template="welcome", context={"name": user.first_name})
    """
    message = NewMessage(
        channel, recipient, template, context or {}, category, priority,
        not_before, expires_at, idempotency_key, tags or {}, locale,
    )  # fmt: skip
    cursor.execute(_DBAPI_SQL, message.sql_args())
    row = cursor.fetchone()
    return int(row[0])


_STAGING_COLUMNS = tuple(name for name, _ in _ARG_NAMES)
_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS outbox_enqueue_staging (
    ord bigint, channel text, recipient text, template text, context jsonb, category text,
    priority integer, not_before timestamptz, expires_at timestamptz, idempotency_key text,
    tags jsonb, locale text
) ON COMMIT DELETE ROWS
"""
_INSERT_FROM_STAGING = """
INSERT INTO outbox.message
    (channel, recipient, template, context, category, priority, locale,
     idempotency_key, not_before, expires_at, tags)
SELECT channel, btrim(recipient), template, context, category, priority, locale,
       idempotency_key, coalesce(not_before, now()), expires_at, tags
  FROM outbox_enqueue_staging
 ORDER BY ord
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
"""


async def enqueue_many(conn: asyncpg.Connection, messages: Iterable[NewMessage]) -> int:
    """Bulk-enqueue through ``COPY``; returns how many new messages were created.

    Runs in the caller's transaction if there is one (as a savepoint), else in its own.
    Messages whose ``idempotency_key`` already exists are skipped.
    """
    records = [(i, *m.sql_args()) for i, m in enumerate(messages)]
    if not records:
        return 0
    async with conn.transaction():
        await conn.execute(_CREATE_STAGING)
        await conn.copy_records_to_table(
            "outbox_enqueue_staging", records=records, columns=("ord", *_STAGING_COLUMNS)
        )
        result = await conn.execute(_INSERT_FROM_STAGING)
        await conn.execute("DELETE FROM outbox_enqueue_staging")
    return int(result.rsplit(" ", 1)[-1])
