"""Enqueue notifications on the caller's connection, inside the caller's transaction.

If the transaction rolls back, the message never existed; once it commits, outboxd
delivers it at least once. Three ways in, one shape (a :class:`NewMessage`'s fields):

* :func:`enqueue` - one message on an asyncpg connection;
* :func:`enqueue_cursor` - one message on any DB-API cursor using the ``%s`` paramstyle
  (psycopg 2 and 3, Django's ``connection.cursor()``);
* :func:`enqueue_many` - bulk enqueue on an asyncpg connection through ``COPY``.

Each returns :class:`Enqueued` ids: plain ``int`` ids that also say whether this call
created the row (``created``) or found an existing one with the same ``idempotency_key``.
All three apply the checks of the SQL function ``outbox.enqueue`` with its messages, and
refuse an asyncpg pool (or anything else that is not a connection, or a cursor): it would
commit on its own, outside the caller's transaction.
"""

from __future__ import annotations

import datetime as _dt
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import asyncpg

from outbox._sqlcall import DBAPICursor, Statement, json_object, require_connection


class _RequiredFields(TypedDict):
    channel: str
    recipient: str
    template: str


# Totality set per class rather than with Required[...]: with postponed annotations, only
# the class keyword is seen at run time (MessageFields.__required_keys__).
class MessageFields(_RequiredFields, total=False):
    """The keyword arguments of :func:`enqueue` and :func:`enqueue_cursor`: the fields of
    :class:`NewMessage`."""

    context: Mapping[str, Any] | None
    category: str
    priority: int
    not_before: _dt.datetime | None
    expires_at: _dt.datetime | None
    idempotency_key: str | None
    tags: Mapping[str, Any] | None
    locale: str | None
    brand: str | None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to enqueue. Only ``channel``, ``recipient`` and ``template`` are required.

    ``channel`` is ``email`` or ``sms``; ``context`` holds the template's variables;
    ``priority`` goes from 0 (low) to 3 (urgent); a message is not sent before
    ``not_before`` nor after ``expires_at``; a second message with the same
    ``idempotency_key`` creates nothing; ``tags`` are free-form labels; ``locale`` picks a
    locale variant of the template; ``brand`` (an ``outbox.brand`` key) sends it as that
    brand.
    """

    channel: str
    recipient: str
    template: str
    context: Mapping[str, Any] | None = field(default_factory=dict)
    category: str = "transactional"
    priority: int = 1
    not_before: _dt.datetime | None = None
    expires_at: _dt.datetime | None = None
    idempotency_key: str | None = None
    tags: Mapping[str, Any] | None = field(default_factory=dict)
    locale: str | None = None
    brand: str | None = None

    def values(self) -> dict[str, Any]:
        """The arguments of ``outbox.enqueue`` for this message, for every driver."""
        return {
            "channel": self.channel,
            "recipient": self.recipient,
            "template": self.template,
            "context": json_object(self.context, "context"),
            "category": self.category,
            "priority": _priority(self.priority),
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "idempotency_key": self.idempotency_key,
            "tags": json_object(self.tags, "tags"),
            "locale": self.locale,
            "brand": self.brand,
        }


def _priority(value: Any) -> int | None:
    """``value`` as sent to SQL, which checks the range (with its own message).

    An IntEnum (outbox.models.Priority) goes as its number: psycopg would send its name. A
    bool, a float such as 3.9 or a string is refused rather than converted: a driver would
    send another priority for it. None goes through, for SQL to refuse.
    """
    if value is None:
        return None
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None:
        raise ValueError(f"priority must be an integer from 0 to 3, got {value!r}")
    return number


class Enqueued(int):
    """A message id that also says whether this call created the message.

    An ``int``, so code that stores, prints or passes on the id keeps working;
    ``created`` is False when a message with the same ``idempotency_key`` already existed
    (the id is then that message's).
    """

    created: bool

    def __new__(cls, message_id: int, created: bool) -> Enqueued:
        self = super().__new__(cls, message_id)
        self.created = created
        return self

    def __getnewargs__(self) -> tuple[int, bool]:  # type: ignore[override]
        return int(self), self.created

    __str__ = int.__repr__

    def __repr__(self) -> str:
        return f"Enqueued({int(self)}, created={self.created})"


_PARAMS = (
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
    ("brand", "text"),
)
_ENQUEUE = Statement.from_template(
    "SELECT id, created FROM outbox.enqueue_result({})".format(
        ", ".join(f"{name} => {{{name}}}" for name, _ in _PARAMS)
    ),
    _PARAMS,
)


async def enqueue(conn: asyncpg.Connection, **fields: Unpack[MessageFields]) -> Enqueued:
    """Enqueue one message on the asyncpg connection ``conn``, in its current transaction.

    Takes the fields of :class:`NewMessage` as keywords. Returns the message id; with an
    ``idempotency_key`` that already exists, the existing id with ``created`` False.
    """
    row = await _ENQUEUE.fetchrow(conn, NewMessage(**fields).values())
    return Enqueued(row[0], row[1])


def enqueue_cursor(cursor: DBAPICursor, **fields: Unpack[MessageFields]) -> Enqueued:
    """Enqueue one message through a DB-API cursor (``%s`` paramstyle), as :func:`enqueue`.

    Django::

        with transaction.atomic():
            order.save()
            with connection.cursor() as cursor:
                enqueue_cursor(cursor, channel="email", recipient=user.email,
                               template="welcome", context={"name": user.first_name})
    """
    row = _ENQUEUE.fetchrow_cursor(cursor, NewMessage(**fields).values())
    return Enqueued(row[0], row[1])


# The staging table is checked row by row with the SQL function's own checks, so a bad
# message stops the COPY before anything reaches outbox.message. Each row draws its
# message id from the message sequence as it is copied: the insert's results map back to
# input positions by id.
_CREATE_STAGING = """
DO $$
BEGIN
    IF to_regclass('pg_temp.outbox_enqueue_batch') IS NULL THEN
        EXECUTE format($sql$
            CREATE TEMP TABLE outbox_enqueue_batch (
                ord bigint NOT NULL,
                id bigint NOT NULL DEFAULT nextval(%L::regclass),
                channel text, recipient text, template text, context jsonb, category text,
                priority integer, not_before timestamptz, expires_at timestamptz,
                idempotency_key text, tags jsonb, locale text, brand text,
                CHECK (outbox.enqueue_check(channel, recipient, template, priority)),
                CHECK (outbox.brand_check(brand) IS NOT DISTINCT FROM brand)
            ) ON COMMIT DELETE ROWS $sql$, pg_get_serial_sequence('outbox.message', 'id'));
    END IF;
END $$
"""
_STAGING_COLUMNS = ("ord", *_ENQUEUE.names)
_INSERT_FROM_STAGING = """
WITH inserted AS (
    INSERT INTO outbox.message
        (id, channel, recipient, template, context, category, priority, locale,
         idempotency_key, not_before, expires_at, tags, brand)
    SELECT id, channel, btrim(recipient), template, coalesce(context, '{}'),
           coalesce(category, 'transactional'), priority, locale, idempotency_key,
           coalesce(not_before, now()), expires_at, coalesce(tags, '{}'), brand
      FROM outbox_enqueue_batch
     ORDER BY ord
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT b.id, i.id IS NOT NULL AS created
  FROM outbox_enqueue_batch b LEFT JOIN inserted i USING (id)
 ORDER BY b.ord
"""
# In a statement of its own, so it sees the rows inserted just before (an idempotency key
# repeated within the batch) and those a concurrent enqueue committed meanwhile.
_EXISTING_IDS = """
SELECT b.ord, coalesce(m.id, k.message_id)
  FROM outbox_enqueue_batch b
  LEFT JOIN outbox.message m ON m.idempotency_key = b.idempotency_key
  LEFT JOIN outbox.message_key k ON k.idempotency_key = b.idempotency_key
 WHERE b.ord = ANY($1::bigint[]) AND (m.id IS NOT NULL OR k.message_id IS NOT NULL)
"""
# Keys of messages already moved to the archive (migration 0016): the rows just inserted
# with them are taken back and the archived ids returned. After the insert, as in
# outbox.enqueue_result, so that a move under way is seen once it commits.
_ARCHIVED_KEYS = """
WITH taken_back AS (
    DELETE FROM outbox.message m
     USING outbox_enqueue_batch b, outbox.message_key k
     WHERE b.ord = ANY($1::bigint[]) AND m.id = b.id
       AND k.idempotency_key = b.idempotency_key
    RETURNING b.ord, k.message_id
)
SELECT ord, message_id FROM taken_back
"""


async def enqueue_many(conn: asyncpg.Connection, messages: Iterable[NewMessage]) -> list[Enqueued]:
    """Bulk-enqueue through ``COPY``; returns the ids in input order.

    Runs in the caller's transaction if there is one (as a savepoint), else in its own. A
    message whose ``idempotency_key`` already exists (or appeared earlier in the batch)
    creates nothing: its result is the existing id with ``created`` False. A message that
    ``outbox.enqueue`` would refuse stops the whole batch with the same error, before
    anything is written; the caller's transaction stays usable.
    """
    require_connection(conn)
    records = []
    messages_list = list(messages)
    for position, message in enumerate(messages_list):
        if not isinstance(message, NewMessage):
            raise TypeError(
                f"enqueue_many expects NewMessage items, got {type(message).__name__} "
                f"at position {position}"
            )
        records.append((position, *_ENQUEUE.args(message.values())))
    if not records:
        return []
    async with conn.transaction():
        await conn.execute(_CREATE_STAGING)
        await conn.copy_records_to_table(
            "outbox_enqueue_batch", records=records, columns=_STAGING_COLUMNS
        )
        rows = await conn.fetch(_INSERT_FROM_STAGING)
        results = [Enqueued(row[0], row[1]) for row in rows]
        keyed = [
            position
            for position, (result, message) in enumerate(zip(results, messages_list, strict=True))
            if result.created and message.idempotency_key is not None
        ]
        if keyed:
            for row in await conn.fetch(_ARCHIVED_KEYS, keyed):
                results[row[0]] = Enqueued(row[1], False)
        known = [position for position, result in enumerate(results) if not result.created]
        if known:
            for row in await conn.fetch(_EXISTING_IDS, known):
                results[row[0]] = Enqueued(row[1], False)
        await conn.execute("DELETE FROM outbox_enqueue_batch")
    return results
