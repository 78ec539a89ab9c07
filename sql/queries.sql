-- Named queries used by outbox/store.py. Each block starts with
-- `-- name(param1, param2, ...) --`, naming asyncpg's $1, $2, ... in order.

-- schema_versions() --
SELECT version FROM outbox.schema_migration ORDER BY version

-- claim_batch(channel, limit, worker, lease_seconds, priorities, after_not_before, after_id, max_context_bytes) --
-- Claims due pending rows in priority order, then not_before, id. Each priority's scan
-- starts after the position where the caller's previous claim of it ended ($6, $7; NULL
-- scans from the head), so claims do not walk the index entries of rows already claimed,
-- which a long transaction elsewhere keeps from being cleaned up. The suppression and
-- preference checks ride along so the daemon needs no second round trip.
-- A context is measured as the daemon would decode it (a compressed value's stored size
-- says little: 20 MB of repetitive JSON compresses below any limit); one larger than
-- $8 bytes is not sent at all (NULL), and the daemon fails its row.
WITH picked AS (
    SELECT next.id
      FROM unnest($5::smallint[], $6::timestamptz[], $7::bigint[])
           AS c(priority, after_not_before, after_id)
     CROSS JOIN LATERAL (
           SELECT id
             FROM outbox.message
            WHERE status = 'pending' AND channel = $1 AND priority = c.priority
              AND not_before <= now()
              AND (not_before, id) > (coalesce(c.after_not_before, '-infinity'),
                                      coalesce(c.after_id, 0))
            ORDER BY not_before, id
            LIMIT $2
              FOR UPDATE SKIP LOCKED) AS next
     LIMIT $2
), claimed AS (
    UPDATE outbox.message m
       SET status = 'sending',
           locked_by = $3,
           locked_until = now() + make_interval(secs => $4),
           attempts = m.attempts + 1,
           updated_at = now()
     -- By primary key: a join would hash the whole table for every claim.
     WHERE m.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING m.id, m.channel, m.recipient, m.template,
              CASE WHEN CASE WHEN pg_column_compression(m.context) IS NULL
                             THEN pg_column_size(m.context)
                             ELSE octet_length(m.context::text) END <= $8
                   THEN m.context END AS context,
              m.category, m.priority,
              m.locale, m.tags, m.attempts, m.expires_at, m.created_at, m.not_before,
              -- Uncompressed: its stored size is its size; compressed: decoded, as text.
              CASE WHEN pg_column_compression(m.context) IS NULL
                   THEN pg_column_size(m.context)
                   ELSE octet_length(m.context::text) END AS context_bytes,
              m.notification_id, m.brand,
              -- A person's row (outbox.notify): Store.claim looks the people up in one
              -- more query, claim_people, only when a claim has such rows. An in-app
              -- row's recipient is the person's key, whoever inserted it.
              coalesce(m.recipient_key,
                       CASE WHEN m.channel = 'inapp' THEN m.recipient END) AS recipient_key
)
SELECT c.*,
       coalesce(
           (SELECT 'recipient suppressed (' || s.reason || ')'
              FROM outbox.suppression s
             WHERE s.channel = c.channel
               AND s.recipient = outbox.normalize_recipient(c.channel, c.recipient)
               AND (s.reason <> 'unsubscribe' OR c.category <> 'transactional')),
           (SELECT 'recipient opted out of category ' || quote_literal(c.category)
              FROM outbox.preference p
             WHERE c.category <> 'transactional'
               AND p.channel = c.channel
               AND p.recipient = outbox.normalize_recipient(c.channel, c.recipient)
               AND p.category = c.category
               AND p.opted_out),
           -- A brand's opt-out holds for that brand's messages only (migration 0014).
           (SELECT 'recipient opted out of brand ' || quote_literal(c.brand)
                   || CASE WHEN b.category = '*' THEN '' ELSE ' category '
                           || quote_literal(c.category) END
              FROM outbox.brand_opt_out b
             WHERE c.brand IS NOT NULL
               AND c.category <> 'transactional'
               AND b.channel = c.channel
               AND b.recipient = outbox.normalize_recipient(c.channel, c.recipient)
               AND b.brand = c.brand
               AND b.category IN (c.category, '*')
             LIMIT 1)
       ) AS suppressed_reason
  FROM claimed c
 ORDER BY c.priority DESC, c.not_before, c.id

-- claim_people(recipient_keys, channels, categories) --
-- For the claimed rows of people, in order: the person as templates see them (NULL when
-- the profile was deleted since notify), and whether the person has since switched the
-- row's channel off for its category (the most specific switch wins, as in notify;
-- transactional rows ignore switches). Apart from claim_batch, so that a claim of
-- address-level rows pays nothing for people (measured: the subqueries inside the claim
-- cost every claim about a millisecond more planning and a tenth more execution).
SELECT u.n,
       CASE WHEN r.key IS NOT NULL
            THEN json_build_object('key', r.key, 'locale', r.locale, 'timezone', r.timezone,
                                   'attrs', r.attrs) END AS person,
       (SELECT NOT cp.enabled
          FROM outbox.channel_preference cp
         WHERE u.category <> 'transactional'
           AND cp.recipient_key = u.key
           AND cp.channel IN (u.channel, '*') AND cp.category IN (u.category, '*')
         ORDER BY cp.channel = '*', cp.category = '*'
         LIMIT 1) AS switched_off
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(key, channel, category, n)
  LEFT JOIN outbox.recipient r ON r.key = u.key
 ORDER BY u.n

-- complete_many(ids, attempts, statuses, errors, providers, provider_message_ids, retry_delays, refunds, ages, worker) --
-- Writes a batch of results. Guarded by the lease: a row that was reclaimed after its
-- lease expired (different worker, or a later attempt) is left alone. ages: seconds since
-- each outcome was decided (results wait a little to be written together), so that
-- sent_at is the send's own time and a retry is due its delay after the failure, both on
-- the database's clock.
UPDATE outbox.message m
   SET status = r.status,
       last_error = r.error,
       provider = coalesce(r.provider, m.provider),
       provider_message_id = coalesce(r.provider_message_id, m.provider_message_id),
       sent_at = CASE WHEN r.status = 'sent' THEN now() - make_interval(secs => r.age)
                    ELSE m.sent_at END,
       not_before = CASE WHEN r.status = 'pending'
                         THEN now() + make_interval(secs => r.retry_delay - r.age)
                         ELSE m.not_before END,
       attempts = m.attempts - r.refund,
       locked_by = NULL,
       locked_until = NULL,
       updated_at = now()
  FROM (SELECT u.*, $10::text AS worker
          FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[], $5::text[],
                      $6::text[], $7::float8[], $8::integer[], $9::float8[])
               AS u(id, attempts, status, error, provider, provider_message_id, retry_delay,
                    refund, age)
        OFFSET 0) AS r
 -- The rows are found by primary key, for as many rows as there are results, whatever the
 -- statistics say. The lease checks compare with columns of the results (OFFSET 0 keeps
 -- them there): as filters on the table alone the planner would expect about one row to
 -- pass and walk the whole result list once per row. A lease holder is always 'sending'
 -- (message_lease_holder_check).
 WHERE m.id = r.id
   AND m.id = ANY($1::bigint[])
   AND m.locked_by = r.worker
   AND m.attempts = r.attempts

-- complete_inbox(ids, attempts, worker, recipient_keys, notification_ids, categories, priorities, titles, bodies, urls, data) --
-- Writes in-app deliveries: each item goes into outbox.inbox and its message becomes
-- 'sent' in one statement, so an item exists exactly when its message says so (no crash
-- window). Guarded by the lease like complete_many. A redelivered message (its item
-- already there) is marked sent without a second item. An item of a person deleted since
-- the claim is left out (the foreign key would fail the whole batch). New items are
-- announced on NOTIFY outbox_inbox by the table's own trigger (migration 0008).
-- Each item's id is drawn before the insert, so that the message's provider_message_id
-- (the item's id) needs no join with the insert's output: the planner takes a CTE for
-- one row and would compare every item with every other (measured: 60 us a row).
WITH item AS (
    SELECT u.*, nextval((SELECT pg_get_serial_sequence('outbox.inbox', 'id'))) AS inbox_id
      FROM unnest($1::bigint[], $2::integer[], $4::text[], $5::bigint[], $6::text[],
                  $7::smallint[], $8::text[], $9::text[], $10::text[], $11::jsonb[])
           AS u(id, attempts, recipient_key, notification_id, category, priority, title,
                body, url, data)
    OFFSET 0
), leased AS (
    -- By primary key, for as many rows as there are items (see complete_many).
    SELECT i.*
      FROM item i
      JOIN outbox.message m ON m.id = i.id
     WHERE m.id = ANY($1::bigint[])
       AND m.locked_by = $3
       AND m.attempts = i.attempts
), inserted AS (
    INSERT INTO outbox.inbox
        (id, recipient_key, notification_id, message_id, category, priority, title, body,
         url, data)
    SELECT l.inbox_id, l.recipient_key, l.notification_id, l.id, l.category, l.priority,
           l.title, l.body, l.url, l.data
      FROM leased l
     WHERE EXISTS (SELECT 1 FROM outbox.recipient r WHERE r.key = l.recipient_key)
    ON CONFLICT (message_id) DO NOTHING
    RETURNING id, recipient_key
), sent AS (
    UPDATE outbox.message m
       SET status = 'sent',
           last_error = NULL,
           provider = 'inapp',
           -- The item delivered before, else the new one (this statement's own inserts
           -- are not visible here).
           provider_message_id = coalesce((SELECT b.id FROM outbox.inbox b
                                            WHERE b.message_id = l.id), l.inbox_id)::text,
           sent_at = now(),
           locked_by = NULL,
           locked_until = NULL,
           updated_at = now()
      FROM leased l
     WHERE m.id = l.id
       -- Rechecked on the newest version should the reaper have moved the row meanwhile
       -- (then its item, if inserted, is the one a redelivery finds).
       AND m.locked_by = $3
       AND m.attempts = l.attempts
    RETURNING m.id
)
SELECT (SELECT count(*) FROM sent) AS written, (SELECT count(*) FROM inserted) AS inserted

-- next_due(channel) --
-- The earliest not_before among pending rows: one short index probe per priority.
SELECT min(t.due)
  FROM generate_series(0, 3) AS p(priority)
 CROSS JOIN LATERAL (
       SELECT not_before AS due
         FROM outbox.message
        WHERE status = 'pending' AND channel = $1 AND priority = p.priority
        ORDER BY not_before
        LIMIT 1) AS t

-- reap_expired_leases(max_attempts, limit) --
-- Returns rows whose worker vanished to pending (or failed once attempts are spent).
WITH expired AS (
    SELECT id
      FROM outbox.message
     WHERE status = 'sending' AND locked_until < now()
     ORDER BY locked_until
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE outbox.message m
   SET status = CASE WHEN m.attempts >= $1 THEN 'failed' ELSE 'pending' END,
       last_error = CASE WHEN m.attempts >= $1
                         THEN 'attempts exhausted: the lease expired while sending (worker lost)'
                         ELSE 'lease expired while sending (worker lost); retrying' END,
       locked_by = NULL,
       locked_until = NULL,
       updated_at = now()
 WHERE m.id = ANY(ARRAY(SELECT id FROM expired))
RETURNING m.id, m.status

-- purge_messages(older_than_seconds, limit) --
-- Deletes finished messages in small batches so the hot path is never blocked.
WITH doomed AS (
    SELECT id
      FROM outbox.message
     WHERE status IN ('sent', 'delivered', 'bounced', 'complained', 'failed',
                      'suppressed', 'expired', 'cancelled', 'digested')
       AND updated_at < now() - make_interval(secs => $1)
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
DELETE FROM outbox.message WHERE id = ANY(ARRAY(SELECT id FROM doomed))

-- archive_messages(finished_before_seconds, limit) --
-- Moves finished messages into outbox.message_archive, one batch per call (migration 0016).
SELECT outbox.archive_messages(make_interval(secs => $1), $2)

-- archive_drop_partitions(older_than_seconds) --
-- Drops the archive's month partitions that ended longer ago than the retention.
SELECT name FROM outbox.archive_drop_before(now() - make_interval(secs => $1)) AS name

-- purge_message_keys(older_than_seconds, limit) --
-- Forgets idempotency keys of messages archived longer ago than the idempotency horizon.
WITH doomed AS (
    SELECT idempotency_key FROM outbox.message_key
     WHERE archived_at < now() - make_interval(secs => $1)
     LIMIT $2
)
DELETE FROM outbox.message_key
 WHERE idempotency_key = ANY(ARRAY(SELECT idempotency_key FROM doomed))

-- purge_events(older_than_seconds, limit) --
WITH doomed AS (
    SELECT id FROM outbox.event
     WHERE created_at < now() - make_interval(secs => $1)
     LIMIT $2
)
DELETE FROM outbox.event WHERE id = ANY(ARRAY(SELECT id FROM doomed))

-- purge_payloads(older_than_seconds, limit) --
-- Shared notifications no event points to any more.
WITH doomed AS (
    SELECT p.id FROM outbox.feedback_payload p
     WHERE p.created_at < now() - make_interval(secs => $1)
       AND NOT EXISTS (SELECT 1 FROM outbox.event e WHERE e.payload_id = p.id)
     LIMIT $2
)
DELETE FROM outbox.feedback_payload WHERE id = ANY(ARRAY(SELECT id FROM doomed))

-- purge_inbox(older_than_seconds, limit) --
-- In-app items read or archived longer ago than the retention (inbox_retention_idx).
WITH doomed AS (
    SELECT id FROM outbox.inbox
     WHERE (read_at IS NOT NULL OR archived_at IS NOT NULL)
       AND least(read_at, archived_at) < now() - make_interval(secs => $1)
     LIMIT $2
)
DELETE FROM outbox.inbox WHERE id = ANY(ARRAY(SELECT id FROM doomed))

-- requeue_ids(ids) --
UPDATE outbox.message
   SET status = 'pending', attempts = 0, not_before = now(), last_error = NULL,
       locked_by = NULL, locked_until = NULL, updated_at = now()
 WHERE id = ANY($1::bigint[])
   AND status IN ('failed', 'expired', 'cancelled', 'suppressed')
RETURNING id

-- requeue_matching(statuses, error_like, since, until, limit, dry_run) --
-- Dead-letter replay: finished-but-undelivered rows matching every given filter go back
-- to pending (or, with dry_run, are only counted).
WITH picked AS (
    SELECT id
      FROM outbox.message
     WHERE status = ANY($1::text[])
       AND ($2::text IS NULL OR last_error ILIKE $2)
       AND ($3::timestamptz IS NULL OR updated_at >= $3)
       AND ($4::timestamptz IS NULL OR updated_at < $4)
     ORDER BY id
     LIMIT $5
       FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE outbox.message m
       SET status = 'pending', attempts = 0, not_before = now(), last_error = NULL,
           locked_by = NULL, locked_until = NULL, updated_at = now()
     WHERE m.id = ANY(ARRAY(SELECT id FROM picked)) AND NOT $6::boolean
    RETURNING m.id
)
SELECT (SELECT count(*) FROM picked) AS matched, (SELECT count(*) FROM moved) AS moved

-- wake() --
SELECT pg_notify('outbox_message', '')

-- counts_by_status() --
SELECT channel, status, priority, count(*) AS n
  FROM outbox.message
 GROUP BY channel, status, priority
 ORDER BY channel, status, priority

-- unfinished_counts() --
-- Queue depth for the gauges, from the two small partial indexes: a count of every row
-- would scan the whole table (seconds, for tables kept for months).
SELECT channel, 'pending' AS status, count(*) AS n
  FROM outbox.message
 WHERE status = 'pending'
 GROUP BY channel
UNION ALL
SELECT channel, 'sending', count(*)
  FROM outbox.message
 WHERE locked_until IS NOT NULL
 GROUP BY channel

-- oldest_pending() --
-- One short index probe per channel and priority.
SELECT c.channel, extract(epoch FROM now() - min(t.due))::float8 AS age_seconds
  FROM unnest(ARRAY['email', 'sms', 'inapp']) AS c(channel)
 CROSS JOIN generate_series(0, 3) AS p(priority)
 CROSS JOIN LATERAL (
       SELECT not_before AS due
         FROM outbox.message
        WHERE status = 'pending' AND channel = c.channel AND priority = p.priority
          AND not_before <= now()
        ORDER BY not_before
        LIMIT 1) AS t
 GROUP BY c.channel

-- recent_activity(window_seconds) --
SELECT channel,
       count(*) FILTER (WHERE sent_at >= now() - make_interval(secs => $1)) AS sent,
       count(*) FILTER (WHERE status = 'failed') AS failed
  FROM outbox.message
 WHERE updated_at >= now() - make_interval(secs => $1)
   AND status NOT IN ('pending', 'sending')
 GROUP BY channel

-- pending_templates(limit) --
SELECT channel, template, locale, min(id) AS sample_id, count(*) AS n
  FROM outbox.message
 WHERE status = 'pending'
 GROUP BY channel, template, locale
 ORDER BY n DESC
 LIMIT $1

-- message_by_id(id) --
SELECT * FROM outbox.message_all WHERE id = $1

-- statuses_of(ids) --
SELECT id, status FROM outbox.message_all WHERE id = ANY($1::bigint[])

-- feedback_rates(window_seconds) --
-- Bounce and complaint rates over messages sent in the window, per channel. The hot table
-- only: finished rows stay there for the archive delay (a day by default, the window of
-- `outboxd stats`), and the archive has no index on sent_at.
SELECT channel,
       count(*) AS sent,
       count(*) FILTER (WHERE status = 'bounced') AS bounced,
       count(*) FILTER (WHERE status = 'complained') AS complained
  FROM outbox.message
 WHERE sent_at >= now() - make_interval(secs => $1)
 GROUP BY channel

-- rate_init(channel, burst) --
-- factor_at starts in the past so that the very first throttling backs off at once.
INSERT INTO outbox.rate_bucket (channel, tokens, factor_at)
VALUES ($1, $2, clock_timestamp() - interval '1 day')
ON CONFLICT (channel) DO NOTHING

-- rate_take(channel, want, rate, burst, recovery_per_second) --
-- Refills the bucket for the time elapsed (at rate x current factor), grants up to `want`
-- whole tokens, and reports the effective rate and the tokens left.
WITH current AS (
    SELECT b.channel,
           least(1.0, b.factor + extract(epoch FROM clock_timestamp() - b.factor_at) * $5)
               AS factor,
           b.tokens,
           extract(epoch FROM clock_timestamp() - b.updated_at) AS elapsed
      FROM outbox.rate_bucket b
     WHERE b.channel = $1
       FOR UPDATE
), refilled AS (
    SELECT channel, factor, least($4::float8, tokens + elapsed * $3 * factor) AS available
      FROM current
), granted AS (
    SELECT channel, factor, available,
           greatest(0, least($2::integer, floor(available)::integer)) AS n
      FROM refilled
)
UPDATE outbox.rate_bucket b
   SET tokens = g.available - g.n,
       updated_at = clock_timestamp()
  FROM granted g
 WHERE b.channel = g.channel
RETURNING g.n AS granted, g.available - g.n AS left_over, $3 * g.factor AS effective_rate

-- rate_give_back(channel, tokens, burst) --
UPDATE outbox.rate_bucket
   SET tokens = least($3::float8, tokens + $2)
 WHERE channel = $1

-- rate_backoff(channel, recovery_per_second, floor) --
-- Multiplicative decrease, at most once per second however many sends were throttled.
UPDATE outbox.rate_bucket
   SET factor = greatest($3::float8,
                         least(1.0, factor + extract(epoch FROM clock_timestamp() - factor_at) * $2)
                         * 0.5),
       factor_at = clock_timestamp()
 WHERE channel = $1
   AND factor_at < clock_timestamp() - interval '1 second'
RETURNING factor

-- store_payload(digest, payload) --
-- A notification shared by several events, stored once; its id (the same for a redelivery).
WITH new AS (
    INSERT INTO outbox.feedback_payload (digest, payload)
    VALUES ($1, $2::jsonb)
    ON CONFLICT (digest) DO NOTHING
    RETURNING id
)
SELECT id FROM new
UNION ALL
SELECT id FROM outbox.feedback_payload WHERE digest = $1
LIMIT 1

-- record_event(source, source_id, event_type, subtype, provider_message_id, recipient, payload, occurred_at, payload_id) --
-- Stores one feedback event once (deduplicated by its source id); returns nothing when it
-- was seen before. The event is linked to our message only if that message went to the
-- recipient the event names: feedback about anyone else is kept, but unlinked. An event
-- of a notification shared with others points to it ($9) instead of copying it.
INSERT INTO outbox.event
    (message_id, source, source_id, event_type, subtype, recipient, payload, occurred_at,
     payload_id)
SELECT (SELECT m.id
          FROM outbox.message_all m
         WHERE m.provider_message_id = $5
           AND ($6::text IS NULL
                OR outbox.normalize_recipient(m.channel, m.recipient)
                   = outbox.normalize_recipient(m.channel, $6::text))
         ORDER BY m.id DESC
         LIMIT 1),
       $1, $2, $3, $4, $6, $7::jsonb, $8, $9
ON CONFLICT (source, source_id, event_type) DO NOTHING
RETURNING id, message_id

-- advance_status(message_id, status) --
-- Feedback moves a message forward only: sent -> delivered -> bounced -> complained.
-- Late feedback (a bounce days after the send) finds its message in the archive.
WITH live AS (
    UPDATE outbox.message
       SET status = $2, updated_at = now()
     WHERE id = $1
       AND array_position(ARRAY['sent', 'delivered', 'bounced', 'complained'], status)
           < array_position(ARRAY['sent', 'delivered', 'bounced', 'complained'], $2::text)
    RETURNING id
), archived AS (
    UPDATE outbox.message_archive
       SET status = $2, updated_at = now()
     WHERE id = $1
       AND array_position(ARRAY['sent', 'delivered', 'bounced', 'complained'], status)
           < array_position(ARRAY['sent', 'delivered', 'bounced', 'complained'], $2::text)
    RETURNING id
)
SELECT id FROM live UNION ALL SELECT id FROM archived

-- suppress(channel, recipient, reason, detail) --
INSERT INTO outbox.suppression (channel, recipient, reason, detail)
VALUES ($1, outbox.normalize_recipient($1, $2), $3, $4)
ON CONFLICT (channel, recipient) DO UPDATE
   SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, created_at = now()
 WHERE outbox.suppression.reason = 'unsubscribe' AND EXCLUDED.reason IN ('bounce', 'complaint')
RETURNING reason

-- unsuppress(channel, recipient) --
DELETE FROM outbox.suppression
 WHERE channel = $1 AND recipient = outbox.normalize_recipient($1, $2)

-- transient_bounces(recipient, window_seconds) --
-- Only bounces of messages we sent to this recipient count.
SELECT count(*)
  FROM outbox.event
 WHERE recipient = lower($1) AND event_type = 'bounce' AND subtype = 'Transient'
   AND message_id IS NOT NULL
   AND created_at >= now() - make_interval(secs => $2)

-- set_preference(channel, recipient, category, opted_out) --
INSERT INTO outbox.preference (channel, recipient, category, opted_out)
VALUES ($1, outbox.normalize_recipient($1, $2), $3, $4)
ON CONFLICT (channel, recipient, category) DO UPDATE
   SET opted_out = EXCLUDED.opted_out, updated_at = now()

-- preferences(channel, recipient) --
SELECT category, opted_out
  FROM outbox.preference
 WHERE channel = $1 AND recipient = outbox.normalize_recipient($1, $2)
 ORDER BY category

-- suppression_of(channel, recipient) --
SELECT reason, detail, created_at
  FROM outbox.suppression
 WHERE channel = $1 AND recipient = outbox.normalize_recipient($1, $2)

-- unsuppress_unsubscribed(channel, recipient) --
-- Lifts only a recipient's own unsubscribe, never a bounce or complaint suppression.
DELETE FROM outbox.suppression
 WHERE channel = $1 AND recipient = outbox.normalize_recipient($1, $2) AND reason = 'unsubscribe'

-- people_settings_write(person_hourly_cap) --
-- The daemon's configuration for outbox.notify(), written at start-up (NULL: no cap).
UPDATE outbox.people_setting
   SET person_hourly_cap = $1::integer, updated_at = now()
 WHERE person_hourly_cap IS DISTINCT FROM $1::integer

-- person_profile(key) --
SELECT key, email, phone FROM outbox.recipient WHERE key = $1

-- person_switches(key) --
SELECT channel, category, enabled
  FROM outbox.channel_preference
 WHERE recipient_key = $1

-- person_switches_save(key, channels, categories, enabled) --
-- Sets a person's switches (a person deleted meanwhile gets none); frequency is kept.
INSERT INTO outbox.channel_preference AS p (recipient_key, channel, category, enabled)
SELECT r.key, u.channel, u.category, u.enabled
  FROM unnest($2::text[], $3::text[], $4::boolean[]) AS u(channel, category, enabled)
  JOIN outbox.recipient r ON r.key = $1
ON CONFLICT (recipient_key, channel, category) DO UPDATE
   SET enabled = EXCLUDED.enabled, updated_at = now()
 WHERE p.enabled IS DISTINCT FROM EXCLUDED.enabled

-- digest_due_groups(limit, as_of) --
-- Digest groups (recipient_key, channel, digest_key) whose window has closed: their
-- earliest batched row is due (a batched row's not_before is when its group's window
-- closes if it is the first item). Oldest first. `as_of` NULL means now().
SELECT recipient_key, channel, digest_key
  FROM outbox.message
 WHERE status = 'batched' AND not_before <= coalesce($2::timestamptz, now())
 GROUP BY recipient_key, channel, digest_key
 ORDER BY min(not_before)
 LIMIT $1

-- digest_next_due() --
-- Seconds until the earliest batched row's window closes (negative when overdue; NULL
-- when nothing waits): one probe of the batched rows' index.
SELECT extract(epoch FROM min(not_before) - now())::float8
  FROM outbox.message
 WHERE status = 'batched'

-- digest_flush(recipient_keys, channels, digest_keys, digest_channels, digest_templates, as_of) --
-- Folds the given groups into one pending digest message each, in one statement (one
-- transaction): exactly once, even with several daemons and a crash midway. A group is
-- taken by one flusher only (a transaction-scoped advisory lock on its bucket; the others
-- skip it), its rows are locked (rows another transaction is cancelling are skipped), and
-- it is folded only if its window has still closed, so a group that another daemon
-- flushed meanwhile, whose rows are now newer items, waits. Cancelled items are not
-- batched and so never counted; expired ones are marked expired; a group with nothing
-- left sends nothing. The digest keeps the items' person, channel, priority (the
-- highest), category and tags (the first item's), address, locale and brand (the last
-- item's).
-- It is rendered with <template>/digest when every item has that template and (channel,
-- template) is in the given pairs, else with `digest`; its context is {"items": [each
-- item's context + created_at (UTC ISO 8601)], "count": n}, in order of created_at, id.
-- Quiet hours and do-not-disturb hold it like any other non-urgent email or SMS.
WITH claimed AS MATERIALIZED (
    SELECT g.recipient_key, g.channel, g.digest_key
      FROM unnest($1::text[], $2::text[], $3::text[]) AS g(recipient_key, channel, digest_key)
     -- A group belongs to one of 64 buckets; a flusher takes a bucket for its transaction
     -- or skips its groups. 64 locks at most, however large the chunk: advisory locks
     -- share the server's lock table with everything else.
     WHERE pg_try_advisory_xact_lock(
               hashtext('outbox.digest'),
               abs(hashtext(concat_ws(chr(31), g.recipient_key, g.channel, g.digest_key)) % 64))
), items AS MATERIALIZED (
    -- Per group, through the batched rows' group index (a join would hash the table).
    SELECT m.*
      FROM claimed g
     CROSS JOIN LATERAL (
           SELECT m.id, m.recipient_key, m.channel, m.digest_key, m.recipient, m.template,
                  m.context, m.category, m.priority, m.locale, m.tags, m.created_at,
                  m.not_before, coalesce(m.expires_at <= now(), false) AS expired
             FROM outbox.message m
            WHERE m.recipient_key = g.recipient_key AND m.channel = g.channel
              AND m.digest_key = g.digest_key AND m.status = 'batched'
              FOR UPDATE SKIP LOCKED) AS m
), summary AS MATERIALIZED (
    -- The groups whose window has still closed. The digest's id is drawn here, so that
    -- its items can point to it by primary key.
    SELECT nextval(pg_get_serial_sequence('outbox.message', 'id')) AS digest_id, s.*
      FROM (SELECT i.recipient_key, i.channel, i.digest_key,
                   array_agg(i.id ORDER BY i.created_at, i.id)
                       FILTER (WHERE NOT i.expired) AS item_ids,
                   array_agg(i.id) FILTER (WHERE i.expired) AS expired_ids,
                   max(i.priority) FILTER (WHERE NOT i.expired) AS priority,
                   min(i.template) FILTER (WHERE NOT i.expired) AS template,
                   min(i.template) FILTER (WHERE NOT i.expired)
                       = max(i.template) FILTER (WHERE NOT i.expired) AS one_template,
                   jsonb_agg(
                       i.context || jsonb_build_object('created_at', to_char(
                           i.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                       ORDER BY i.created_at, i.id) FILTER (WHERE NOT i.expired) AS contexts
              FROM items i
             GROUP BY i.recipient_key, i.channel, i.digest_key
            HAVING min(i.not_before) <= coalesce($6::timestamptz, now())) AS s
), made AS (
    INSERT INTO outbox.message
        (id, channel, recipient, template, context, category, priority, locale, not_before,
         tags, status, recipient_key, original_not_before, deferred_reason, digest_key,
         idempotency_key, brand)
    SELECT s.digest_id, s.channel, latest.recipient,
           CASE WHEN s.one_template AND EXISTS (
                    SELECT 1 FROM unnest($4::text[], $5::text[]) AS t(channel, template)
                     WHERE t.channel = s.channel AND t.template = s.template)
                THEN s.template || '/digest' ELSE 'digest' END,
           jsonb_build_object('items', s.contexts, 'count', cardinality(s.item_ids)),
           first.category, s.priority, latest.locale, coalesce(h.release_at, now()),
           first.tags, 'pending', s.recipient_key,
           -- Held like notify()'s rows (never transactional or urgent: such are not batched).
           CASE WHEN s.channel <> 'inapp' THEN now() END,
           h.reason, s.digest_key,
           -- A second digest of the same first item would be a bug: refuse it loudly.
           'outboxd:digest:' || s.item_ids[1],
           latest.brand
      FROM summary s
      -- Rows by primary key (LIMIT keeps the planner from hashing whole tables instead).
     CROSS JOIN LATERAL (
           SELECT m.category, m.tags FROM outbox.message m WHERE m.id = s.item_ids[1]
            LIMIT 1) AS first
     CROSS JOIN LATERAL (
           SELECT m.recipient, m.locale, m.brand FROM outbox.message m
            WHERE m.id = s.item_ids[cardinality(s.item_ids)]
            LIMIT 1) AS latest
      LEFT JOIN LATERAL (
            SELECT q.release_at, q.reason
              FROM outbox.recipient r
             CROSS JOIN LATERAL outbox.quiet_hold(now(), r.timezone, r.quiet_hours_start,
                                                  r.quiet_hours_end, r.dnd_until) AS q
             WHERE r.key = s.recipient_key AND s.channel <> 'inapp'
               AND (r.quiet_hours_start IS NOT NULL OR r.dnd_until > now())
             LIMIT 1) AS h
        ON true
     WHERE s.item_ids IS NOT NULL
    RETURNING 1
), folded AS (
    UPDATE outbox.message m
       SET status = 'digested', digest_message_id = f.digest_id, updated_at = now()
      FROM (SELECT unnest(s.item_ids) AS id, s.digest_id FROM summary s) AS f
     WHERE m.id = f.id
       -- By primary key: without it the join hashes the whole table.
       AND m.id = ANY(ARRAY(SELECT unnest(s.item_ids) FROM summary s))
    RETURNING 1
), expired AS (
    UPDATE outbox.message m
       SET status = 'expired', updated_at = now(),
           last_error = 'expired while waiting for its digest'
     WHERE m.id = ANY(ARRAY(SELECT unnest(s.expired_ids) FROM summary s))
    RETURNING 1
)
SELECT (SELECT count(*) FROM made)::integer AS digests,
       (SELECT count(*) FROM folded)::integer AS items,
       (SELECT count(*) FROM expired)::integer AS expired

-- schedule_due(limit, as_of) --
-- Locks enabled schedules that are due or not planned yet (next_at NULL), skipping those
-- another daemon holds, with what planning them needs. Runs in the transaction that fires
-- them and moves them on. `as_of` NULL means now().
SELECT s.id, s.cron, s.next_at, s.updated_at, r.timezone,
       coalesce($2::timestamptz, now()) AS as_of
  FROM outbox.schedule s
  JOIN outbox.recipient r ON r.key = s.recipient_key
 WHERE s.enabled AND s.last_error IS NULL
   AND coalesce(s.next_at, '-infinity') <= coalesce($2::timestamptz, now())
 ORDER BY coalesce(s.next_at, '-infinity')
 LIMIT $1
   FOR UPDATE OF s SKIP LOCKED

-- schedule_fire(schedule_ids, occurrences) --
-- One notify() per (schedule, occurrence), in order; `occurrences` are UTC ISO 8601
-- strings, which make the idempotency key 'schedule:<id>:<occurrence>' (so a second run
-- of the same occurrence creates nothing) and the context's `scheduled_for` (the
-- schedule's own context wins).
SELECT outbox.notify(
           recipient_key => s.recipient_key, template => s.template,
           context => jsonb_build_object('scheduled_for', o.occurrence) || s.context,
           category => s.category, priority => s.priority,
           idempotency_key => format('schedule:%s:%s', s.id, o.occurrence)) AS notification_id
  FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS o(schedule_id, occurrence, n)
  JOIN outbox.schedule s ON s.id = o.schedule_id
 ORDER BY o.n

-- schedule_advance(ids, next_ats, last_fired_ats, errors) --
-- Moves schedules on after a firing (or records why they cannot be planned or fired).
UPDATE outbox.schedule s
   SET next_at = coalesce(x.next_at, s.next_at),
       last_fired_at = coalesce(x.last_fired_at, s.last_fired_at),
       last_error = x.error
  FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[])
       AS x(id, next_at, last_fired_at, error)
 WHERE s.id = x.id

-- In-app inbox (daemon/http/inbox_store.py). Items are always selected by the person's key
-- as well as by id: another person's item is simply not found. The columns are the
-- contract's, in its order.

-- inbox_page(recipient_key, before, unread_only, category, include_archived, limit) --
-- One page, newest first, plus one row to tell whether another page follows. With custom
-- plans (the pool's plan_cache_mode) the unused filters fold away and an unread page walks
-- inbox_unread_idx.
SELECT id, recipient_key, notification_id, message_id, category, priority, title, body, url,
       data, created_at, seen_at, read_at, archived_at
  FROM outbox.inbox
 WHERE recipient_key = $1
   AND ($2::bigint IS NULL OR id < $2)
   AND (NOT $3::boolean OR read_at IS NULL)
   AND ($4::text IS NULL OR category = $4)
   AND ($5::boolean OR archived_at IS NULL)
 ORDER BY id DESC
 LIMIT $6 + 1

-- inbox_page_unread(recipient_key, category, include_archived) --
-- The unread count that goes with a page: same category and archive filters.
SELECT count(*)
  FROM outbox.inbox
 WHERE recipient_key = $1
   AND read_at IS NULL
   AND ($2::text IS NULL OR category = $2)
   AND ($3::boolean OR archived_at IS NULL)

-- inbox_item(recipient_key, id) --
SELECT id, recipient_key, notification_id, message_id, category, priority, title, body, url,
       data, created_at, seen_at, read_at, archived_at
  FROM outbox.inbox
 WHERE recipient_key = $1 AND id = $2

-- inbox_counts(recipient_key) --
-- The /inbox/count numbers, and the person's newest item id (the stream's starting point).
SELECT outbox.inbox_unread_count($1) AS unread,
       outbox.inbox_unseen_count($1) AS unseen,
       (SELECT max(id) FROM outbox.inbox WHERE recipient_key = $1) AS newest

-- inbox_counts_many(recipient_keys) --
-- The counts of many people at once, for the event streams after a burst of changes. The
-- predicates of outbox.inbox_unread_count and outbox.inbox_unseen_count, written out:
-- subqueries are planned once for all the keys, function calls once per key.
SELECT k.key AS recipient_key,
       (SELECT count(*) FROM outbox.inbox i
         WHERE i.recipient_key = k.key AND i.read_at IS NULL AND i.archived_at IS NULL)
           AS unread,
       (SELECT count(*) FROM outbox.inbox i
         WHERE i.recipient_key = k.key AND i.seen_at IS NULL AND i.archived_at IS NULL)
           AS unseen
  FROM unnest($1::text[]) AS k(key)

-- inbox_mark_read(recipient_key, id) --
SELECT outbox.inbox_mark_read($1, ARRAY[$2::bigint])

-- inbox_mark_unread(recipient_key, id) --
SELECT outbox.inbox_mark_unread($1, ARRAY[$2::bigint])

-- inbox_archive(recipient_key, id) --
SELECT outbox.inbox_archive($1, ARRAY[$2::bigint])

-- inbox_mark_all_read(recipient_key) --
SELECT outbox.inbox_mark_all_read($1)

-- inbox_mark_seen(recipient_key) --
SELECT outbox.inbox_mark_seen($1)

-- inbox_items(ids) --
-- New items for the event streams, by the ids their NOTIFY named (unless archived since).
SELECT id, recipient_key, notification_id, message_id, category, priority, title, body, url,
       data, created_at, seen_at, read_at, archived_at
  FROM outbox.inbox
 WHERE id = ANY($1::bigint[]) AND archived_at IS NULL
 ORDER BY id

-- inbox_keys_of(ids) --
-- Whose items these are, for signals whose key was too long to travel in the payload.
SELECT id, recipient_key FROM outbox.inbox WHERE id = ANY($1::bigint[])

-- inbox_replay(recipient_key, after_id, limit) --
-- A reconnecting stream's missed items (Last-Event-ID), oldest first.
SELECT id, recipient_key, notification_id, message_id, category, priority, title, body, url,
       data, created_at, seen_at, read_at, archived_at
  FROM outbox.inbox
 WHERE recipient_key = $1 AND id > $2 AND archived_at IS NULL
 ORDER BY id
 LIMIT $3

-- campaign_due() --
-- The next scheduled campaign whose time has come, locked for this transaction; another
-- daemon skips it.
SELECT id
  FROM outbox.campaign
 WHERE status = 'scheduled' AND coalesce(send_at, '-infinity') <= now()
 ORDER BY send_at NULLS FIRST, id
 LIMIT 1
   FOR UPDATE SKIP LOCKED

-- campaign_start(campaign_id) --
SELECT outbox.start_campaign($1)

-- campaign_start_failed(campaign_id, error) --
-- A start that cannot succeed as things are: back to draft, with the reason.
UPDATE outbox.campaign SET status = 'draft', last_error = $2 WHERE id = $1

-- campaign_winner_due() --
SELECT id
  FROM outbox.campaign
 WHERE status = 'sending' AND test_percent IS NOT NULL AND winner_variant IS NULL
   AND started_at + winner_after <= now()
 ORDER BY started_at, id
 LIMIT 1
   FOR UPDATE SKIP LOCKED

-- campaign_pick_winner(campaign_id) --
SELECT outbox.campaign_pick_winner($1)

-- campaign_finish() --
SELECT outbox.campaign_finish()

-- advance_sequences(max_rows) --
SELECT outbox.advance_sequences($1)

-- campaign_list() --
SELECT c.id, c.name, l.name AS list_name, c.status, c.send_at, c.audience, c.variants,
       c.winner_variant, c.started_at, c.finished_at, c.last_error
  FROM outbox.campaign c
  JOIN outbox.list l ON l.id = c.list_id
 ORDER BY c.id

-- campaign_by_id(campaign_id) --
SELECT c.*, l.name AS list_name
  FROM outbox.campaign c
  JOIN outbox.list l ON l.id = c.list_id
 WHERE c.id = $1

-- campaign_audience_estimate(campaign_id) --
-- How many messages starting it will make at most (active subscribers in the segment,
-- the test share of them for an A/B test), for a progress bar.
SELECT CASE WHEN c.test_percent IS NULL THEN n.total
            ELSE ceil(n.total * c.test_percent / 100.0)::bigint END
  FROM outbox.campaign c
  JOIN outbox.list l ON l.id = c.list_id
 CROSS JOIN LATERAL (SELECT outbox.segment_count(l.name, c.segment) AS total) AS n
 WHERE c.id = $1

-- message_id_high_water() --
-- The message id sequence, read outside any transaction: it moves while another session's
-- INSERT ... SELECT is still running, which is what the expansion progress bar shows.
SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('outbox.message', 'id')::regclass), 0)

-- campaign_progress(campaign_id) --
SELECT status, count(*) AS n
  FROM outbox.message_all
 WHERE campaign_id = $1
 GROUP BY status

-- campaign_stats_of(campaign_id) --
SELECT * FROM outbox.campaign_stats WHERE campaign_id = $1 ORDER BY variant NULLS FIRST

-- campaign_rates(campaign_id) --
SELECT variant, sent, hits, rate FROM outbox.campaign_variant_rates($1)

-- campaign_cancel(campaign_id) --
SELECT outbox.cancel_campaign($1)

-- subscription_of(list_id, recipient_key) --
SELECT s.status, l.name AS list_name
  FROM outbox.subscription s
  JOIN outbox.list l ON l.id = s.list_id
 WHERE s.list_id = $1 AND s.recipient_key = $2

-- confirm_subscription(list_id, recipient_key) --
SELECT outbox.confirm_subscription($1, $2)

-- record_engagement(message_id, event_type, source_id, payload) --
-- An open or click seen by the tracking routes, once per message (opens) or per message
-- and link (clicks); nothing for a message that no longer exists.
INSERT INTO outbox.event (message_id, source, source_id, event_type, recipient, payload, occurred_at)
SELECT m.id, 'tracking', $3, $2, outbox.normalize_recipient(m.channel, m.recipient), $4::jsonb, now()
  FROM outbox.message_all m
 WHERE m.id = $1
ON CONFLICT (source, source_id, event_type) DO NOTHING
RETURNING id

-- ==== Outbound webhooks (daemon/hooks/store.py) ====================================

-- hook_endpoints() --
-- The enabled endpoints the lane posts to (a handful; read every pass, so that an endpoint
-- added, changed or disabled is seen within one poll).
SELECT id, url, secret FROM outbox.webhook_endpoint WHERE enabled ORDER BY id

-- hook_claim(worker, lease_seconds, endpoint_ids, slots) --
-- Claims each endpoint's due deliveries, oldest first, at most its free slots. Every
-- endpoint is claimed on its own, so a dead endpoint's backlog never takes another's turn.
-- The attempt is counted at the claim: a daemon killed mid-POST has used it.
WITH claimed AS (
    SELECT x.id
      FROM unnest($3::bigint[], $4::integer[]) AS s(endpoint_id, slots)
     CROSS JOIN LATERAL (
            SELECT d.id
              FROM outbox.webhook_delivery d
             WHERE d.endpoint_id = s.endpoint_id
               AND d.status = 'pending'
               AND d.next_attempt_at <= now()
             ORDER BY d.next_attempt_at, d.id
             LIMIT s.slots
               FOR UPDATE SKIP LOCKED) AS x
)
UPDATE outbox.webhook_delivery d
   SET status = 'sending', locked_by = $1,
       locked_until = now() + make_interval(secs => $2),
       attempts = d.attempts + 1, updated_at = now()
  FROM claimed c
 WHERE d.id = c.id
RETURNING d.id, d.event_id, d.endpoint_id, d.type, d.data::text AS data, d.created_at,
          d.attempts

-- hook_complete(ids, attempts, delivered, errors, http_statuses, retry_delays, worker, window_seconds) --
-- Writes a batch of results, guarded by the lease (a delivery reclaimed meanwhile is left
-- alone). A failure is retried after its delay, unless that falls outside the retry window
-- counted from the creation (or the last replay): then it is failed, and kept for replay.
UPDATE outbox.webhook_delivery d
   SET status = CASE WHEN r.delivered THEN 'delivered'
                     WHEN now() + make_interval(secs => r.delay)
                          > d.retry_from + make_interval(secs => $8) THEN 'failed'
                     ELSE 'pending' END,
       next_attempt_at = CASE WHEN r.delivered THEN d.next_attempt_at
                              ELSE now() + make_interval(secs => r.delay) END,
       delivered_at = CASE WHEN r.delivered THEN now() END,
       last_error = r.error, last_status = r.http_status,
       locked_by = NULL, locked_until = NULL, updated_at = now()
  FROM unnest($1::bigint[], $2::integer[], $3::boolean[], $4::text[], $5::smallint[],
              $6::float8[]) AS r(id, attempts, delivered, error, http_status, delay)
 WHERE d.id = r.id AND d.status = 'sending' AND d.locked_by = $7 AND d.attempts = r.attempts
RETURNING d.id, d.status

-- hook_reap(limit) --
-- Deliveries whose daemon vanished mid-POST go back to pending (their attempt is spent).
UPDATE outbox.webhook_delivery d
   SET status = 'pending', locked_by = NULL, locked_until = NULL, updated_at = now()
 WHERE d.id IN (SELECT id FROM outbox.webhook_delivery
                 WHERE status = 'sending' AND locked_until < now()
                 ORDER BY locked_until
                 LIMIT $1
                   FOR UPDATE SKIP LOCKED)
RETURNING d.id

-- hook_add(url, secret, events, description) --
INSERT INTO outbox.webhook_endpoint (url, secret, events, description)
VALUES ($1, $2, $3::text[], $4)
RETURNING id

-- hook_remove(id) --
-- The endpoint and its deliveries (no foreign key: see migration 0012).
WITH gone AS (DELETE FROM outbox.webhook_endpoint WHERE id = $1 RETURNING id),
     deliveries AS (DELETE FROM outbox.webhook_delivery d USING gone WHERE d.endpoint_id = gone.id)
SELECT id FROM gone

-- hook_list() --
-- Every endpoint with its deliveries by status (pending includes those being sent).
SELECT e.id, e.url, e.events, e.enabled, e.description, e.created_at,
       count(d.id) FILTER (WHERE d.status IN ('pending', 'sending')) AS pending,
       count(d.id) FILTER (WHERE d.status = 'delivered') AS delivered,
       count(d.id) FILTER (WHERE d.status = 'failed') AS failed
  FROM outbox.webhook_endpoint e
  LEFT JOIN outbox.webhook_delivery d ON d.endpoint_id = e.id
 GROUP BY e.id
 ORDER BY e.id

-- hook_replay(ids, endpoint_id, since, limit, dry_run) --
-- Failed deliveries matching every given filter go back to pending, due now, with a new
-- retry window (their event id stays the same); with dry_run they are only counted.
WITH picked AS (
    SELECT id FROM outbox.webhook_delivery
     WHERE status = 'failed'
       AND ($1::bigint[] IS NULL OR id = ANY ($1::bigint[]))
       AND ($2::bigint IS NULL OR endpoint_id = $2::bigint)
       AND ($3::timestamptz IS NULL OR created_at >= $3::timestamptz)
     ORDER BY id
     LIMIT $4
       FOR UPDATE SKIP LOCKED
), replayed AS (
    UPDATE outbox.webhook_delivery d
       SET status = 'pending', next_attempt_at = now(), retry_from = now(), updated_at = now()
      FROM picked p
     WHERE d.id = p.id AND NOT $5::boolean
    RETURNING d.id
)
SELECT (SELECT count(*) FROM picked) AS matched, (SELECT count(*) FROM replayed) AS replayed

-- hook_wake() --
SELECT pg_notify('outbox_webhook', '')

-- hook_counts() --
-- Unfinished and failed deliveries for the gauges and `outboxd stats`, from the partial
-- indexes (delivered rows, the bulk, are not counted).
SELECT (SELECT count(*) FROM outbox.webhook_delivery WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM outbox.webhook_delivery WHERE status = 'sending') AS sending,
       (SELECT count(*) FROM outbox.webhook_delivery WHERE status = 'failed') AS failed

-- hook_purge(older_than_seconds, limit) --
-- Finished deliveries (delivered or failed) older than the retention, in small batches.
DELETE FROM outbox.webhook_delivery
 WHERE id IN (SELECT id FROM outbox.webhook_delivery
               WHERE created_at < now() - make_interval(secs => $1)
                 AND status IN ('delivered', 'failed')
               ORDER BY created_at
               LIMIT $2)

-- ==== Brands (daemon/delivery/brands.py) ==========================================

-- brands_all() --
SELECT key, name, from_address, reply_to, ses_configuration_set, ses_tenant, url, logo_url,
       colors::text AS colors, postal_address, unsubscribe_base_url
  FROM outbox.brand

-- brand_opt_out(brand, channel, recipient, category) --
-- A recipient opts out of one brand's messages of a category ('*': all but transactional).
INSERT INTO outbox.brand_opt_out (brand, channel, recipient, category)
VALUES ($1, $2, outbox.normalize_recipient($2, $3), $4)
ON CONFLICT DO NOTHING

-- brand_opt_in(brand, channel, recipient, category) --
DELETE FROM outbox.brand_opt_out
 WHERE brand = $1 AND channel = $2 AND recipient = outbox.normalize_recipient($2, $3)
   AND category = $4

-- brand_opt_outs(brand, channel, recipient) --
SELECT category
  FROM outbox.brand_opt_out
 WHERE brand = $1 AND channel = $2 AND recipient = outbox.normalize_recipient($2, $3)
 ORDER BY category

-- ==== SMS receipts and spend (daemon/feedback/sms_receipts.py) ======================

-- sms_receipt_cursors() --
SELECT log_group, last_ms FROM outbox.sms_receipt_cursor

-- sms_receipts_apply(event_ids, provider_message_ids, delivered, prices, responses, occurred, log_group, last_ms) --
-- Records a page of SNS delivery-status records in one statement: each once (outbox.event,
-- by the log event's id), its price and the carrier's answer on the message, delivered
-- moves a sent message forward, a failure fails it with the carrier's reason. The cursor
-- moves in the same transaction. Returns the messages changed.
WITH receipt AS (
    SELECT r.*
      FROM unnest($1::text[], $2::text[], $3::boolean[], $4::numeric[], $5::text[],
                  $6::timestamptz[])
           AS r(event_id, provider_message_id, delivered, price, response, occurred)
), fresh AS (
    INSERT INTO outbox.event
        (message_id, source, source_id, event_type, recipient, payload, occurred_at)
    SELECT (SELECT m.id FROM outbox.message m
             WHERE m.provider_message_id = r.provider_message_id AND m.channel = 'sms'
             ORDER BY m.id DESC LIMIT 1),
           'sns-sms', r.event_id,
           CASE WHEN r.delivered THEN 'delivery' ELSE 'sms_failure' END, NULL,
           jsonb_strip_nulls(jsonb_build_object('price_usd', r.price,
                                                'provider_response', r.response)),
           r.occurred
      FROM receipt r
    ON CONFLICT (source, source_id, event_type) DO NOTHING
    RETURNING message_id, event_type, payload
), changed AS (
    UPDATE outbox.message m
       SET status = CASE WHEN f.event_type = 'delivery' AND m.status = 'sent' THEN 'delivered'
                         WHEN f.event_type = 'sms_failure'
                              AND m.status IN ('sent', 'delivered') THEN 'failed'
                         ELSE m.status END,
           last_error = CASE WHEN f.event_type = 'sms_failure'
                             THEN 'SMS not delivered: ' || coalesce(f.payload ->> 'provider_response', 'no reason given')
                             ELSE m.last_error END,
           price_usd = coalesce((f.payload ->> 'price_usd')::numeric, m.price_usd),
           provider_response = coalesce(f.payload ->> 'provider_response', m.provider_response),
           updated_at = now()
      FROM fresh f
     WHERE m.id = f.message_id
    RETURNING m.id, m.status
), cursor AS (
    INSERT INTO outbox.sms_receipt_cursor (log_group, last_ms) VALUES ($7, $8)
    ON CONFLICT (log_group) DO UPDATE
       SET last_ms = greatest(outbox.sms_receipt_cursor.last_ms, EXCLUDED.last_ms),
           updated_at = now()
)
SELECT id, status FROM changed

-- sms_spend(month_start) --
-- This month's SMS: the priced spend, the priced count, and how many were sent without a
-- price yet (their receipts are still on their way) or are being sent right now.
SELECT coalesce(sum(price_usd), 0)::float8 AS spent,
       count(price_usd) AS priced,
       count(*) FILTER (WHERE price_usd IS NULL AND status IN ('sent', 'delivered'))
       + (SELECT count(*) FROM outbox.message WHERE status = 'sending' AND channel = 'sms')
           AS unpriced,
       count(*) FILTER (WHERE status = 'delivered') AS delivered,
       count(*) FILTER (WHERE status = 'failed' AND provider_response IS NOT NULL) AS failed
  FROM outbox.message_all  -- the month's first days may be in the archive already
 WHERE channel = 'sms' AND sent_at IS NOT NULL AND sent_at >= $1
