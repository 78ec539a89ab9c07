"""The messages ``python -m daemon.bench.console`` fills its scratch database with.

N messages ($1) over the last 30 days, oldest first (ids follow creation): 70% email, 20%
SMS, 10% in-app; 100,000 distinct recipients; six common templates and a rare one (0.1%);
a quarter marketing; 5% in five campaigns; a third from notify (two messages per
notification). Statuses as a healthy installation has them: mostly delivered or sent;
0.5% failed, 0.3% bounced, 0.02% complained, 1% cancelled, 0.5% suppressed, 0.2% expired;
the newest 1% still pending (half due, half scheduled), a few of those leased.
"""

from __future__ import annotations

import time

import asyncpg

FILL = """
INSERT INTO outbox.message
    (channel, recipient, template, context, category, status, attempts, last_error,
     provider, created_at, updated_at, sent_at, not_before, locked_by, locked_until,
     campaign_id, recipient_key, notification_id)
SELECT channel,
       CASE channel WHEN 'email' THEN 'user' || who || '@example.com'
                    WHEN 'sms' THEN '+1415' || lpad(who::text, 7, '0')
                    ELSE 'u' || who END,
       CASE WHEN g % 1000 = 999 THEN 'billing/low_balance'
            ELSE (ARRAY['welcome', 'password_reset', 'booking/reminder', 'newsletter',
                        'digest', 'weekly_summary'])[1 + g % 6] END,
       '{"name": "Ann", "login_url": "https://example.com/login"}',
       CASE WHEN g % 4 = 0 THEN 'marketing' ELSE 'transactional' END,
       status,
       CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN status = 'failed' THEN '550 5.1.1 mailbox unavailable' END,
       CASE WHEN status IN ('sent', 'delivered', 'bounced', 'complained') THEN 'ses' END,
       created, created + interval '2 seconds',
       CASE WHEN status IN ('sent', 'delivered', 'bounced', 'complained')
            THEN created + interval '1 second' END,
       CASE WHEN status = 'pending' AND g % 2 = 0 THEN now() + interval '1 day'
            ELSE created END,
       CASE WHEN status = 'sending' THEN 'bench' END,
       CASE WHEN status = 'sending' THEN now() + interval '1 hour' END,
       CASE WHEN g % 20 = 1 THEN 1 + (g / 20) % 5 END,
       CASE WHEN g % 20 = 1 THEN 'k' || g WHEN g % 3 = 0 OR channel = 'inapp'
            THEN 'u' || who END,
       CASE WHEN g % 3 = 0 THEN g / 6 END
  FROM (
      SELECT g,
             (g::bigint * 7919) % 100000 AS who,
             CASE WHEN g % 10 < 7 THEN 'email' WHEN g % 10 < 9 THEN 'sms' ELSE 'inapp' END
                 AS channel,
             now() - make_interval(secs => (($1 - g)::float8 / $1) * 30 * 86400) AS created,
             CASE WHEN g > $1 * 0.99 AND g % 10 = 0 THEN 'sending'
                  WHEN g > $1 * 0.99 THEN 'pending'
                  WHEN g % 1000 < 5 THEN 'failed'
                  WHEN g % 1000 < 8 THEN 'bounced'
                  WHEN g % 5000 = 9 THEN 'complained'
                  WHEN g % 1000 < 20 THEN 'cancelled'
                  WHEN g % 1000 < 25 THEN 'suppressed'
                  WHEN g % 1000 < 27 THEN 'expired'
                  WHEN g % 3 = 0 THEN 'sent'
                  ELSE 'delivered' END AS status
        FROM generate_series(1, $1) AS g) AS s
"""

#: Feedback events (a delivery for every delivered message, a bounce or complaint for
#: those), people, and 20,000 suppressions.
FILL_EXTRAS = """
INSERT INTO outbox.event (message_id, source, source_id, event_type, subtype, recipient,
                          occurred_at)
SELECT id, 'ses', 'e' || id,
       CASE status WHEN 'delivered' THEN 'delivery' WHEN 'bounced' THEN 'bounce'
                   ELSE 'complaint' END,
       CASE status WHEN 'bounced' THEN 'Permanent' END, recipient, sent_at + interval '2 s'
  FROM outbox.message WHERE status IN ('delivered', 'bounced', 'complained');
INSERT INTO outbox.recipient (key, email, attrs)
SELECT 'u' || g, 'user' || g || '@example.com', '{"first_name": "Ann"}'
  FROM generate_series(0, 99999) AS g;
INSERT INTO outbox.suppression (channel, recipient, reason, created_at)
SELECT 'email', 's' || g || '@example.com',
       (ARRAY['bounce', 'complaint', 'unsubscribe', 'manual'])[1 + g % 4],
       now() - make_interval(secs => g * 60)
  FROM generate_series(0, 19999) AS g;
"""

#: Due pending rows for one round of the claim + completion floor ($1 rows; half of them
#: carry a notification id, as notify's rows do).
FLOOR_ROWS = """
INSERT INTO outbox.message (channel, recipient, template, context, notification_id)
SELECT 'email', 'floor' || g || '@example.com', 'welcome', '{"name": "Ann"}',
       CASE WHEN g % 2 = 0 THEN g END
  FROM generate_series(1, $1) AS g
"""


async def fill(conn: asyncpg.Connection, n: int) -> float:
    """Insert ``n`` messages (FILL) and the rest (FILL_EXTRAS); the seconds it took."""
    started = time.perf_counter()
    await conn.execute(FILL, n)
    await conn.execute(FILL_EXTRAS)
    await conn.execute("VACUUM ANALYZE outbox.message")
    await conn.execute("ANALYZE")
    return time.perf_counter() - started


async def archive(conn: asyncpg.Connection, after_hours: float) -> int:
    """Move every message finished more than ``after_hours`` ago to the archive."""
    moved = await conn.fetchval(
        "SELECT outbox.archive_messages($1::float8 * interval '1 hour', 2000000000)", after_hours
    )
    await conn.execute("VACUUM ANALYZE outbox.message")
    await conn.execute("ANALYZE outbox.message_archive")
    return int(moved)
