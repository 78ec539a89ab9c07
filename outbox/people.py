"""Send to people, not addresses: keep a copy of each person, then notify them by key.

* :func:`upsert_recipient` / :func:`upsert_recipient_cursor` - create or replace a person
  in ``outbox.recipient`` (addresses, locale, time zone, quiet hours, do-not-disturb);
* :func:`notify` / :func:`notify_cursor` - ``outbox.notify(...)``: one notification, one
  message per channel of the priority's tier (or of ``channels``), skipping channels the
  person has no address for or switched off, holding email and SMS through quiet hours.

The ``*_cursor`` forms take any DB-API cursor with the ``%s`` paramstyle (psycopg 2 and 3,
Django's ``connection.cursor()``). Everything runs in the caller's transaction: if it rolls
back, nothing was ever sent. The rules live in SQL (``sql/migrations/0004_people.sql``), so
these helpers and a plain ``SELECT outbox.notify(...)`` from any language behave alike.
"""

from __future__ import annotations

import datetime as _dt
import decimal
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from outbox._sqlcall import DBAPICursor, Statement, json_object

_NOTIFY = Statement.function_call(
    "outbox.notify",
    [
        ("recipient_key", "text"),
        ("template", "text"),
        ("context", "jsonb"),
        ("category", "text"),
        # numeric, as in the SQL function: a fractional priority is refused there, by name.
        ("priority", "numeric"),
        ("channels", "text[]"),
        ("not_before", "timestamptz"),
        ("expires_at", "timestamptz"),
        ("idempotency_key", "text"),
        ("tags", "jsonb"),
        ("digest_key", "text"),
        ("digest_window", "interval"),
        ("escalate_after", "interval"),
        ("brand", "text"),
    ],
)

# The whole profile is replaced: a field left out becomes empty, as the app's own copy of
# the person says. An unchanged profile is not rewritten (a periodic sync costs no dead
# rows, and fires no re-timing).
_UPSERT_RECIPIENT = Statement.from_template(
    """
INSERT INTO outbox.recipient AS r
    (key, email, phone, locale, timezone, quiet_hours_start, quiet_hours_end, dnd_until, attrs)
VALUES ({key}, {email}, {phone}, {locale}, {timezone}, {quiet_hours_start}, {quiet_hours_end},
        {dnd_until}, {attrs})
ON CONFLICT (key) DO UPDATE
   SET email = EXCLUDED.email, phone = EXCLUDED.phone, locale = EXCLUDED.locale,
       timezone = EXCLUDED.timezone, quiet_hours_start = EXCLUDED.quiet_hours_start,
       quiet_hours_end = EXCLUDED.quiet_hours_end, dnd_until = EXCLUDED.dnd_until,
       attrs = EXCLUDED.attrs
 WHERE (r.email, r.phone, r.locale, r.timezone, r.quiet_hours_start, r.quiet_hours_end,
        r.dnd_until, r.attrs)
       IS DISTINCT FROM
       (EXCLUDED.email, EXCLUDED.phone, EXCLUDED.locale, EXCLUDED.timezone,
        EXCLUDED.quiet_hours_start, EXCLUDED.quiet_hours_end, EXCLUDED.dnd_until,
        EXCLUDED.attrs)
""",
    [
        ("key", "text"),
        ("email", "text"),
        ("phone", "text"),
        ("locale", "text"),
        ("timezone", "text"),
        ("quiet_hours_start", "time"),
        ("quiet_hours_end", "time"),
        ("dnd_until", "timestamptz"),
        ("attrs", "jsonb"),
    ],
)

QuietHours = tuple[_dt.time | str, _dt.time | str]


def priority_value(priority: object) -> object:
    """``priority`` as sent to SQL, which checks the range and that it is whole.

    A float goes as its decimal text (3.9, not 3.899999...), so the refusal quotes what the
    caller wrote; a bool is refused here, since every driver would send it as 0 or 1.
    """
    if isinstance(priority, bool) or not isinstance(priority, int | float | decimal.Decimal):
        raise TypeError(f"priority must be an integer 0..3, got {priority!r}")
    if isinstance(priority, float):
        return decimal.Decimal(repr(priority))
    return priority


def channels_value(channels: Sequence[str] | None) -> list[str] | None:
    """``channels`` as a list for ``text[]`` (a bare string would be read as letters)."""
    if channels is None:
        return None
    if isinstance(channels, str | bytes) or not isinstance(channels, Sequence):
        raise TypeError(f"channels must be a list of channel names, got {channels!r}")
    return list(channels)


def quiet_hours_value(quiet_hours: QuietHours | None) -> tuple[_dt.time | None, _dt.time | None]:
    """``(start, end)`` as two ``time`` values (``"22:00"`` is accepted), or two ``None``."""
    if quiet_hours is None:
        return None, None
    if isinstance(quiet_hours, str | bytes) or not isinstance(quiet_hours, Sequence):
        raise TypeError(f"quiet_hours must be a (start, end) pair, got {quiet_hours!r}")
    if len(quiet_hours) != 2:
        raise ValueError(f"quiet_hours must be a (start, end) pair, got {quiet_hours!r}")
    return _time_of(quiet_hours[0], "start"), _time_of(quiet_hours[1], "end")


def _time_of(value: object, name: str) -> _dt.time:
    if isinstance(value, _dt.time):
        return value
    if isinstance(value, str):
        try:
            return _dt.time.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"quiet_hours {name} must be a time such as '22:00', got {value!r}")


def _notify_values(
    recipient_key: str,
    template: str,
    context: Mapping[str, Any] | None,
    category: str,
    priority: int,
    channels: Sequence[str] | None,
    not_before: _dt.datetime | None,
    expires_at: _dt.datetime | None,
    idempotency_key: str | None,
    tags: Mapping[str, Any] | None,
    digest_key: str | None,
    digest_window: _dt.timedelta | None,
    escalate_after: _dt.timedelta | None,
    brand: str | None = None,
) -> dict[str, Any]:
    return {
        "recipient_key": recipient_key,
        "template": template,
        "context": json_object(context, "context"),
        "category": category,
        "priority": priority_value(priority),
        "channels": channels_value(channels),
        "not_before": not_before,
        "expires_at": expires_at,
        "idempotency_key": idempotency_key,
        "tags": json_object(tags, "tags"),
        "digest_key": digest_key,
        "digest_window": digest_window,
        "escalate_after": escalate_after,
        "brand": brand,
    }


async def notify(
    conn: asyncpg.Connection,
    *,
    recipient_key: str,
    template: str,
    context: Mapping[str, Any] | None = None,
    category: str = "transactional",
    priority: int = 1,
    channels: Sequence[str] | None = None,
    not_before: _dt.datetime | None = None,
    expires_at: _dt.datetime | None = None,
    idempotency_key: str | None = None,
    tags: Mapping[str, Any] | None = None,
    digest_key: str | None = None,
    digest_window: _dt.timedelta | None = None,
    escalate_after: _dt.timedelta | None = None,
    brand: str | None = None,
) -> int:
    """Notify one person on ``conn``, in its current transaction; returns the notification id.

    ``conn`` must be a connection, not a pool (a pool would commit on a connection of its
    own choosing). A repeated ``idempotency_key`` creates nothing and returns the first id.
    ``brand`` (an ``outbox.brand`` key) defaults to the person's. Bad input (unknown
    ``recipient_key`` or brand, unknown channel, priority outside 0..3, a
    ``digest_window`` outside (0, 31 days]) raises ``asyncpg.InvalidParameterValueError``
    whose message names the argument.
    """
    values = _notify_values(
        recipient_key, template, context, category, priority, channels, not_before,
        expires_at, idempotency_key, tags, digest_key, digest_window, escalate_after, brand,
    )  # fmt: skip
    return int(await _NOTIFY.fetchval(conn, values))


def notify_cursor(
    cursor: DBAPICursor,
    *,
    recipient_key: str,
    template: str,
    context: Mapping[str, Any] | None = None,
    category: str = "transactional",
    priority: int = 1,
    channels: Sequence[str] | None = None,
    not_before: _dt.datetime | None = None,
    expires_at: _dt.datetime | None = None,
    idempotency_key: str | None = None,
    tags: Mapping[str, Any] | None = None,
    digest_key: str | None = None,
    digest_window: _dt.timedelta | None = None,
    escalate_after: _dt.timedelta | None = None,
    brand: str | None = None,
) -> int:
    """:func:`notify` through a DB-API cursor (``%s`` paramstyle); returns the notification id.

    Django::

        with transaction.atomic():
            booking.save()
            with connection.cursor() as cursor:
                notify_cursor(cursor, recipient_key=str(user.pk),
                              template="booking/changed", priority=3,
                              context={"booking": booking.reference})
    """
    values = _notify_values(
        recipient_key, template, context, category, priority, channels, not_before,
        expires_at, idempotency_key, tags, digest_key, digest_window, escalate_after, brand,
    )  # fmt: skip
    return int(_NOTIFY.fetchval_cursor(cursor, values))


def _recipient_values(
    key: str,
    email: str | None,
    phone: str | None,
    locale: str | None,
    timezone: str,
    quiet_hours: QuietHours | None,
    dnd_until: _dt.datetime | None,
    attrs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    start, end = quiet_hours_value(quiet_hours)
    return {
        "key": key,
        "email": email,
        "phone": phone,
        "locale": locale,
        "timezone": timezone,
        "quiet_hours_start": start,
        "quiet_hours_end": end,
        "dnd_until": dnd_until,
        "attrs": json_object(attrs, "attrs"),
    }


async def upsert_recipient(
    conn: asyncpg.Connection,
    key: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    locale: str | None = None,
    timezone: str = "UTC",
    quiet_hours: QuietHours | None = None,
    dnd_until: _dt.datetime | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Create or replace the person ``key`` on ``conn``, in its current transaction.

    Every field is set: one left out becomes empty (``timezone`` becomes UTC). An address
    that is ``None`` or blank means that channel is skipped for this person.
    ``quiet_hours`` is ``(start, end)`` in local time and may wrap midnight
    (``("22:00", "07:00")``). Changing the window, ``dnd_until`` or ``timezone`` re-times
    the person's pending messages. An invalid time zone, or a window whose start equals its
    end, raises ``asyncpg.InvalidParameterValueError`` naming the column.
    """
    values = _recipient_values(key, email, phone, locale, timezone, quiet_hours, dnd_until, attrs)
    await _UPSERT_RECIPIENT.execute(conn, values)


def upsert_recipient_cursor(
    cursor: DBAPICursor,
    key: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    locale: str | None = None,
    timezone: str = "UTC",
    quiet_hours: QuietHours | None = None,
    dnd_until: _dt.datetime | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """:func:`upsert_recipient` through a DB-API cursor (``%s`` paramstyle)."""
    values = _recipient_values(key, email, phone, locale, timezone, quiet_hours, dnd_until, attrs)
    _UPSERT_RECIPIENT.execute_cursor(cursor, values)
