"""Every query the console runs, in one place (``python -m daemon.bench.console`` EXPLAINs
them at a million messages; docs/CONSOLE.md has the figures).

The message search is built from fixed fragments: values always travel as parameters,
except a status and a channel, which are checked against their closed lists and then
spelled as literals so that the planner can use the partial indexes whose predicates
name them (a ``status = $1`` never matches ``WHERE status = 'pending'``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

#: The statuses a message can have (outbox.message_status_check).
STATUSES = (
    "pending", "sending", "sent", "delivered", "bounced", "complained", "failed",
    "suppressed", "expired", "cancelled", "batched", "digested",
)  # fmt: skip
CHANNELS = ("email", "sms", "inapp")
#: Which rows each action changes, and how.
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    # Dead letters sent again, as `outboxd requeue` does.
    "retry": (
        ("failed", "expired", "cancelled", "suppressed"),
        "status = 'pending', attempts = 0, not_before = now(), last_error = NULL, "
        "locked_by = NULL, locked_until = NULL, updated_at = now()",
    ),
    # Rows waiting for a retry or their scheduled time become due now.
    "requeue": (("pending",), "not_before = now(), updated_at = now()"),
    # As outbox.cancel(): only what has not been claimed yet.
    "cancel": (
        ("pending", "batched"),
        "status = 'cancelled', last_error = 'cancelled from the console', updated_at = now()",
    ),
}


@dataclass(frozen=True, slots=True)
class Filters:
    """What the operator searches for; None is "any"."""

    recipient: str | None = None
    status: str | None = None
    channel: str | None = None
    template: str | None = None
    category: str | None = None
    campaign: int | None = None
    notification: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.channel is not None and self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}")

    def as_query(self) -> dict[str, str]:
        """The filters as URL query fields (what a search form sends)."""
        out = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out[field.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out

    @property
    def empty(self) -> bool:
        return not self.as_query()


def where(filters: Filters, args: list[Any], *, statuses: tuple[str, ...] = ()) -> str:
    """The WHERE clause of ``filters`` (its values appended to ``args``); ``statuses``
    further limits the rows to those an action applies to."""
    clauses: list[str] = []

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.recipient is not None:
        clauses.append(f"lower(recipient) = lower({param(filters.recipient)})")
    wanted = [filters.status] if filters.status else []
    if statuses:
        wanted = [s for s in (wanted or statuses) if s in statuses] or ["-none-"]
    if wanted:
        assert all(s in STATUSES or s == "-none-" for s in wanted)
        literals = ", ".join(f"'{s}'" for s in wanted)
        clauses.append(f"status = '{wanted[0]}'" if len(wanted) == 1 else f"status IN ({literals})")
        if wanted == ["sending"]:
            clauses.append("locked_until IS NOT NULL")  # message_lease_idx's predicate
    if filters.channel is not None:
        assert filters.channel in CHANNELS
        clauses.append(f"channel = '{filters.channel}'")
    if filters.template is not None:
        clauses.append(f"template = {param(filters.template)}")
    if filters.category is not None:
        clauses.append(f"category = {param(filters.category)}")
    if filters.campaign is not None:
        clauses.append(f"campaign_id = {param(filters.campaign)}")
    if filters.notification is not None:
        clauses.append(f"notification_id = {param(filters.notification)}")
    if filters.since is not None:
        clauses.append(f"created_at >= {param(filters.since)}")
    if filters.until is not None:
        clauses.append(f"created_at < {param(filters.until)}")
    return " AND ".join(clauses) or "true"


SEARCH_COLUMNS = (
    "id, channel, recipient, template, category, status, attempts, last_error, "
    "created_at, updated_at, sent_at, campaign_id, notification_id"
)


#: Rows on the delivery path, which the search indexes of migration 0015 leave out.
UNFINISHED = "status NOT IN ('pending', 'sending')"
#: Statuses only outbox.message holds: the archive takes finished messages (0016).
LIVE_ONLY = ("pending", "sending", "batched")
#: Where a search reads, and what it says of each row's archiving (None: a live row).
LIVE = "outbox.message", "NULL::timestamptz AS archived_at"
ARCHIVE = "outbox.message_archive", "archived_at"


def _select(
    filters: Filters,
    args: list[Any],
    before: int | None,
    extra: str = "",
    *,
    table: tuple[str, str] = LIVE,
) -> str:
    condition = where(filters, args) + (f" AND {extra}" if extra else "")
    if before is not None:
        args.append(before)
        condition += f" AND id < ${len(args)}"
    name, archived_at = table
    return (
        f"SELECT {SEARCH_COLUMNS}, {archived_at} FROM {name} WHERE {condition} "
        "ORDER BY id DESC LIMIT $1"
    )


def search(filters: Filters, *, before: int | None, limit: int) -> tuple[str, list[Any]]:
    """A page of matches, newest first, from ``before`` (an id) down; one row more than
    ``limit`` says whether there is a next page. Rows carry ``archived_at`` (None for a
    message still in outbox.message).

    Live and archived messages are two parts, each read newest first through its own
    indexes and merged. A recipient's or a notification's live messages of any status
    come from three parts: the finished ones from the search indexes, the pending ones
    from the claim index, the leased ones from the lease index.
    """
    args: list[Any] = [limit + 1]
    if filters.status is None and (filters.recipient is not None or filters.notification):
        parts = [
            _select(filters, args, before, UNFINISHED),
            _select(replace(filters, status="pending"), args, before),
            _select(replace(filters, status="sending"), args, before),
        ]
    else:
        parts = [_select(filters, args, before)]
    if filters.status not in LIVE_ONLY:
        parts.append(_select(filters, args, before, table=ARCHIVE))
    if len(parts) == 1:
        return parts[0], args
    return "(" + ") UNION ALL (".join(parts) + ") ORDER BY id DESC LIMIT $1", args


def count_for_action(filters: Filters, action: str, cap: int) -> tuple[str, list[Any]]:
    """How many rows ``action`` would change (counted up to ``cap`` + 1)."""
    args: list[Any] = []
    condition = where(filters, args, statuses=ACTIONS[action][0])
    args.append(cap + 1)
    return (
        f"SELECT count(*) FROM (SELECT 1 FROM outbox.message WHERE {condition} "
        f"LIMIT ${len(args)}) AS m",
        args,
    )


def act_batch(filters: Filters, action: str, *, below: int, batch: int) -> tuple[str, list[Any]]:
    """One batch of ``action`` over the search, from id ``below`` down; returns the ids
    changed (rows being claimed right now are skipped, not waited for)."""
    statuses, assignments = ACTIONS[action]
    args: list[Any] = []
    condition = where(filters, args, statuses=statuses)
    args += [below, batch]
    guard = where(Filters(), [], statuses=statuses)
    return (
        f"WITH picked AS (SELECT id FROM outbox.message WHERE {condition} "
        f"AND id < ${len(args) - 1} ORDER BY id DESC LIMIT ${len(args)} "
        "FOR UPDATE SKIP LOCKED) "
        f"UPDATE outbox.message SET {assignments} "
        f"WHERE id = ANY(ARRAY(SELECT id FROM picked)) AND {guard} RETURNING id",
        args,
    )


def act_ids(action: str) -> str:
    """``action`` on the given ids ($1), where their status allows it; returns the ids."""
    statuses, assignments = ACTIONS[action]
    guard = where(Filters(), [], statuses=statuses)
    return (
        f"UPDATE outbox.message SET {assignments} "
        f"WHERE id = ANY($1::bigint[]) AND {guard} RETURNING id"
    )


WAKE = "SELECT pg_notify('outbox_message', '')"

# -- overview -----------------------------------------------------------------------------
#: Rows still to deliver, from the partial indexes (a count of every row takes seconds).
DEPTH = """
SELECT channel, 'pending' AS status, count(*) AS n,
       count(*) FILTER (WHERE not_before <= now()) AS due
  FROM outbox.message WHERE status = 'pending' GROUP BY channel
UNION ALL
SELECT channel, 'sending', count(*), count(*)
  FROM outbox.message WHERE locked_until IS NOT NULL GROUP BY channel
UNION ALL
SELECT channel, 'batched', count(*), count(*) FILTER (WHERE not_before <= now())
  FROM outbox.message WHERE status = 'batched' GROUP BY channel
"""
#: Finished rows of the last day by status (message_finished_idx covers them by age).
FINISHED = """
SELECT channel, status, count(*) AS n
  FROM outbox.message
 WHERE status NOT IN ('pending', 'sending') AND updated_at >= now() - interval '24 hours'
 GROUP BY channel, status
"""
#: Sends per minute over the last hour. A row's updated_at is never before its sent_at,
#: so the bound on updated_at (which the index has) loses nothing.
SEND_RATE = """
SELECT channel, date_trunc('minute', sent_at) AS minute, count(*) AS n
  FROM outbox.message
 WHERE status NOT IN ('pending', 'sending') AND updated_at >= now() - interval '60 minutes'
   AND sent_at >= now() - interval '60 minutes'
 GROUP BY channel, minute
"""
#: Bounce and complaint rates of what was sent in the last day, as SES counts them.
FEEDBACK = """
SELECT channel, count(*) AS sent,
       count(*) FILTER (WHERE status = 'bounced') AS bounced,
       count(*) FILTER (WHERE status = 'complained') AS complained
  FROM outbox.message
 WHERE status NOT IN ('pending', 'sending') AND updated_at >= now() - interval '24 hours'
   AND sent_at >= now() - interval '24 hours'
 GROUP BY channel
"""
PAUSES = "SELECT channel, reason, paused_by, created_at FROM outbox.channel_pause ORDER BY channel"
PAUSE = """
INSERT INTO outbox.channel_pause (channel, reason, paused_by) VALUES ($1, $2, $3)
ON CONFLICT (channel) DO UPDATE SET reason = EXCLUDED.reason, paused_by = EXCLUDED.paused_by,
                                    created_at = now()
"""
RESUME = "DELETE FROM outbox.channel_pause WHERE channel = $1 RETURNING channel"

# -- one message --------------------------------------------------------------------------
#: Live or archived (``archived_at`` is None for a live one): outbox.message_all looks
#: the id up in each table's primary key or id index.
MESSAGE = "SELECT * FROM outbox.message_all WHERE id = $1"
EVENTS = """
SELECT event_type, subtype, source, occurred_at, created_at, payload
  FROM outbox.event WHERE message_id = $1 ORDER BY coalesce(occurred_at, created_at), id
"""
PERSON = """
SELECT json_build_object('key', key, 'locale', locale, 'timezone', timezone, 'attrs', attrs)
  FROM outbox.recipient WHERE key = $1
"""
#: The webhook deliveries of a message's events (never the endpoint's secret). No index
#: serves data->>'message_id': the table holds deliveries only for the retention period,
#: and an index would cost every event written.
WEBHOOKS = """
SELECT d.type, d.status, d.attempts, d.last_status, d.last_error, e.url,
       d.created_at, d.delivered_at
  FROM outbox.webhook_delivery d
  LEFT JOIN outbox.webhook_endpoint e ON e.id = d.endpoint_id
 WHERE d.data->>'message_id' = $1::bigint::text
 ORDER BY d.id
 LIMIT 100
"""

# -- suppressions -------------------------------------------------------------------------
SUPPRESSIONS = """
SELECT channel, recipient, reason, detail, created_at
  FROM outbox.suppression
 WHERE $1::text IS NULL
    OR (channel IN ('email', 'sms', 'inapp') AND recipient IN (lower(btrim($1)), btrim($1)))
 ORDER BY created_at DESC LIMIT $2
"""
SUPPRESS = """
INSERT INTO outbox.suppression (channel, recipient, reason, detail)
VALUES ($1, outbox.normalize_recipient($1, $2), 'manual', $3)
ON CONFLICT (channel, recipient) DO UPDATE SET detail = EXCLUDED.detail
 WHERE outbox.suppression.reason = 'manual'
RETURNING reason
"""
UNSUPPRESS = """
DELETE FROM outbox.suppression
 WHERE channel = $1 AND recipient = outbox.normalize_recipient($1, $2)
RETURNING reason
"""
