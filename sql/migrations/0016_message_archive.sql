-- Retention without bloat: finished messages leave outbox.message for an archive that is
-- partitioned by month, and retention drops whole partitions instead of deleting rows.
--
-- outbox.message stays the table applications insert into and operators query: it holds
-- every message being delivered and those finished within the archive delay
-- (OUTBOXD_WORKER__ARCHIVE_AFTER_HOURS). The maintenance loop moves older finished rows,
-- in batches, with one statement each (outbox.archive_messages): a DELETE ... RETURNING
-- whose rows go into outbox.message_archive. The space they leave in outbox.message is
-- reused by new rows, so the hot table and its indexes stay the size of the delay's worth
-- of traffic however long the archive is kept. outbox.message_all is both together.
--
-- Why not make outbox.message itself the partitioned parent: its primary key, the unique
-- idempotency key and outbox.event's reference would all have to include the partition
-- key, and every status change that crosses a partition boundary would be a delete plus
-- an insert on the claim path (a concurrent SKIP LOCKED claim then fails on the moved
-- row instead of skipping it).
--
-- Keep outbox.message_archive's columns those of outbox.message followed by archived_at:
-- a migration that adds a column to outbox.message adds it here too, and recreates
-- outbox.message_all (tests/integration/test_archive.py checks the two agree).

-- Moving a row out must not touch its events: the reference (ON DELETE SET NULL) would
-- unlink every event of an archived message. Events keep the id; the archive keeps it too.
ALTER TABLE outbox.event DROP CONSTRAINT IF EXISTS event_message_id_fkey;

CREATE TABLE outbox.message_archive (
    LIKE outbox.message INCLUDING DEFAULTS,
    archived_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (archived_at);

-- What reads archived rows: lookups by id (events, the console), feedback that arrives
-- late (bounces and complaints days after the send), campaign statistics.
CREATE INDEX message_archive_id_idx ON outbox.message_archive (id);
CREATE INDEX message_archive_provider_message_id_idx ON outbox.message_archive (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX message_archive_campaign_idx ON outbox.message_archive (campaign_id)
    WHERE campaign_id IS NOT NULL;

-- Idempotency across the move: the keys of archived messages, kept for the idempotency
-- horizon (OUTBOXD_WORKER__IDEMPOTENCY_DAYS) even when their partition is dropped sooner.
-- Small: only messages that had a key, one row each.
CREATE TABLE outbox.message_key (
    idempotency_key text        PRIMARY KEY,
    message_id      bigint      NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_key_archived_at_idx ON outbox.message_key (archived_at);

CREATE VIEW outbox.message_all AS
SELECT m.*, NULL::timestamptz AS archived_at FROM outbox.message m
UNION ALL
SELECT a.* FROM outbox.message_archive a;

COMMENT ON VIEW outbox.message_all IS
    'Every message: outbox.message (being delivered, or finished within the archive delay) '
    'and outbox.message_archive (finished earlier; archived_at is set).';

-- The month partition that holds `at` (UTC months), created when missing; its name.
CREATE FUNCTION outbox.archive_partition(at timestamptz) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    low  timestamptz := date_trunc('month', at, 'UTC');
    high timestamptz := date_trunc('month', at, 'UTC') + interval '1 month';
    name text := 'message_archive_' || to_char(low AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass('outbox.' || name) IS NULL THEN
        -- Two daemons may both find it missing: one creates it, the other waits and sees it.
        PERFORM pg_advisory_xact_lock(hashtext('outbox.message_archive'));
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS outbox.%I PARTITION OF outbox.message_archive '
            'FOR VALUES FROM (%L) TO (%L)', name, low, high);
    END IF;
    RETURN name;
END $$;

-- Moves up to max_rows messages finished longer than finished_before ago into the archive,
-- in one statement; returns how many. Rows of a campaign still being sent stay: its
-- expansion, A/B winner and completion read them where they are.
CREATE FUNCTION outbox.archive_messages(finished_before interval, max_rows integer)
    RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM outbox.archive_partition(now());
    WITH doomed AS (
        SELECT m.id
          FROM outbox.message m
         WHERE m.status IN ('sent', 'delivered', 'bounced', 'complained', 'failed',
                            'suppressed', 'expired', 'cancelled', 'digested')
           AND m.updated_at < now() - finished_before
           AND (m.campaign_id IS NULL
                OR NOT EXISTS (SELECT 1 FROM outbox.campaign c
                                WHERE c.id = m.campaign_id AND c.status = 'sending'))
         LIMIT max_rows
           FOR UPDATE SKIP LOCKED
    ), moved AS (
        DELETE FROM outbox.message m
         WHERE m.id = ANY(ARRAY(SELECT id FROM doomed))
        RETURNING m.*
    ), keys AS (
        INSERT INTO outbox.message_key (idempotency_key, message_id)
        SELECT moved.idempotency_key, moved.id FROM moved
         WHERE moved.idempotency_key IS NOT NULL
        ON CONFLICT (idempotency_key) DO UPDATE
           SET message_id = EXCLUDED.message_id, archived_at = EXCLUDED.archived_at
    )
    INSERT INTO outbox.message_archive SELECT moved.*, now() FROM moved;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Drops the archive partitions whose whole month ended before `cutoff`; returns their
-- names. Dropping a partition takes a moment whatever its size and leaves no dead rows.
CREATE FUNCTION outbox.archive_drop_before(cutoff timestamptz) RETURNS SETOF text
    LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
                   AS upper_bound
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'outbox.message_archive'::regclass
         ORDER BY c.relname
    LOOP
        IF part.upper_bound <= cutoff THEN
            EXECUTE format('DROP TABLE outbox.%I', part.relname);
            RETURN NEXT part.relname;
        END IF;
    END LOOP;
END $$;

-- From 0014_brands.sql, with idempotency across the move. The insert comes first: it waits for an archiving move of
-- the same key that is under way, and a following statement then sees that key in
-- outbox.message_key (READ COMMITTED), so the row just inserted is taken back.
CREATE OR REPLACE FUNCTION outbox.enqueue_result(
    channel         text,
    recipient       text,
    template        text,
    context         jsonb       DEFAULT '{}',
    category        text        DEFAULT 'transactional',
    priority        integer     DEFAULT 1,
    not_before      timestamptz DEFAULT NULL,
    expires_at      timestamptz DEFAULT NULL,
    idempotency_key text        DEFAULT NULL,
    tags            jsonb       DEFAULT '{}',
    locale          text        DEFAULT NULL,
    brand           text        DEFAULT NULL,
    OUT id          bigint,
    OUT created     boolean
)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    archived bigint;
BEGIN
    PERFORM outbox.enqueue_check(enqueue_result.channel, enqueue_result.recipient,
                                 enqueue_result.template, enqueue_result.priority);

    INSERT INTO outbox.message AS m
        (channel, recipient, template, context, category, priority, locale,
         idempotency_key, not_before, expires_at, tags, brand)
    VALUES
        (enqueue_result.channel, btrim(enqueue_result.recipient), enqueue_result.template,
         coalesce(enqueue_result.context, '{}'),
         coalesce(enqueue_result.category, 'transactional'), enqueue_result.priority,
         enqueue_result.locale, enqueue_result.idempotency_key,
         coalesce(enqueue_result.not_before, now()), enqueue_result.expires_at,
         coalesce(enqueue_result.tags, '{}'), outbox.brand_check(enqueue_result.brand))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING m.id INTO enqueue_result.id;

    enqueue_result.created := enqueue_result.id IS NOT NULL;
    IF enqueue_result.created AND enqueue_result.idempotency_key IS NOT NULL THEN
        SELECT k.message_id INTO archived FROM outbox.message_key k
         WHERE k.idempotency_key = enqueue_result.idempotency_key;
        IF archived IS NOT NULL THEN
            DELETE FROM outbox.message m WHERE m.id = enqueue_result.id;
            enqueue_result.id := archived;
            enqueue_result.created := false;
        END IF;
    ELSIF NOT enqueue_result.created THEN
        -- A new statement, so it sees the row of a concurrent enqueue that committed
        -- while this one waited on the key.
        SELECT m.id INTO enqueue_result.id FROM outbox.message m
         WHERE m.idempotency_key = enqueue_result.idempotency_key;
    END IF;
END $$;

-- Unsubscribes, bounces and complaints end the list subscription of the message they are
-- about, archived or not (from migration 0010, reading outbox.message_all).
CREATE OR REPLACE FUNCTION outbox.event_ends_subscription() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    ended text;
    about record;
BEGIN
    ended := CASE
        WHEN NEW.event_type = 'unsubscribe' THEN 'unsubscribed'
        WHEN NEW.event_type = 'bounce' AND NEW.subtype = 'Permanent' THEN 'bounced'
        WHEN NEW.event_type = 'complaint' AND NEW.subtype IS DISTINCT FROM 'not-spam' THEN 'complained'
    END;
    IF ended IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT m.list_id, m.recipient_key INTO about FROM outbox.message_all m WHERE m.id = NEW.message_id;
    IF about.list_id IS NULL OR about.recipient_key IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE outbox.subscription s
       SET status = ended, ended_at = now(), ended_by_message_id = NEW.message_id,
           updated_at = now()
     WHERE s.list_id = about.list_id AND s.recipient_key = about.recipient_key
       AND (s.status IN ('active', 'pending')
            OR s.status = 'unsubscribed' AND ended IN ('bounced', 'complained'));
    RETURN NULL;
END $$;

-- Campaign statistics count archived messages too (from migration 0010).
CREATE OR REPLACE VIEW outbox.campaign_stats AS
SELECT m.campaign_id,
       m.variant,
       count(*) FILTER (WHERE m.sent_at IS NOT NULL) AS sent,
       count(*) FILTER (WHERE e.delivered) AS delivered,
       count(*) FILTER (WHERE e.opened) AS opened,
       count(*) FILTER (WHERE e.clicked) AS clicked,
       count(*) FILTER (WHERE e.bounced) AS bounced,
       count(*) FILTER (WHERE e.complained) AS complained,
       count(*) FILTER (WHERE e.unsubscribed) AS unsubscribed
  FROM outbox.message_all m
  LEFT JOIN LATERAL (
       SELECT bool_or(ev.event_type = 'delivery') AS delivered,
              bool_or(ev.event_type = 'open') AS opened,
              bool_or(ev.event_type = 'click') AS clicked,
              bool_or(ev.event_type = 'bounce' AND ev.subtype = 'Permanent') AS bounced,
              bool_or(ev.event_type = 'complaint' AND ev.subtype IS DISTINCT FROM 'not-spam')
                  AS complained,
              bool_or(ev.event_type = 'unsubscribe') AS unsubscribed
         FROM outbox.event ev
        WHERE ev.message_id = m.id) AS e ON true
 WHERE m.campaign_id IS NOT NULL
 GROUP BY m.campaign_id, m.variant;
