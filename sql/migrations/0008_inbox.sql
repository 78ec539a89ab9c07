-- The in-app inbox: functions for the application's own backend, escalation cancelled by
-- reading, the signal the daemon's event streams listen to, and the indexes for unseen
-- counts and retention. See "Contract: in-app inbox". outbox.inbox itself is in 0004.

--------------------------------------------------------------------------------------------
-- Indexes
--------------------------------------------------------------------------------------------

-- The bell's second number: items the person has not yet seen in the list. Reading an
-- item also marks it seen, so these are a subset of the unread ones.
CREATE INDEX inbox_unseen_idx ON outbox.inbox (recipient_key)
    WHERE seen_at IS NULL AND archived_at IS NULL;

-- Retention: read or archived items, by when that happened (least() ignores NULLs). The
-- reaper's purge walks this instead of scanning every person's history.
CREATE INDEX inbox_retention_idx ON outbox.inbox ((least(read_at, archived_at)))
    WHERE read_at IS NOT NULL OR archived_at IS NOT NULL;

--------------------------------------------------------------------------------------------
-- Signals for the event streams
--------------------------------------------------------------------------------------------

-- The NOTIFY payload on channel 'outbox_inbox': {"kind": "item"|"count", "id": n,
-- "recipient_key": k}. "item": a new item (id) was committed; "count": some of the
-- person's items changed state (id: one of them). A key that would not fit NOTIFY's
-- 8000-byte payload is left out (listeners then look it up by id): a long key must never
-- make an insert fail. Identical payloads of one transaction are delivered once, so a
-- read-all is one signal per person.
CREATE FUNCTION outbox.inbox_signal(kind text, id bigint, recipient_key text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN octet_length(s.keyed) <= 7900 THEN s.keyed
                ELSE json_build_object('kind', kind, 'id', id)::text
           END
      FROM (SELECT json_build_object('kind', kind, 'id', id,
                                     'recipient_key', recipient_key)::text AS keyed) AS s
$$;

CREATE FUNCTION outbox.inbox_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- Delivered at commit, never for a rolled-back insert; ON CONFLICT DO NOTHING rows
    -- are not in new_items.
    PERFORM pg_notify('outbox_inbox', outbox.inbox_signal('item', n.id, n.recipient_key))
       FROM new_items n
      ORDER BY n.id;
    RETURN NULL;
END $$;

CREATE TRIGGER inbox_inserted AFTER INSERT ON outbox.inbox
    REFERENCING NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.inbox_inserted();

-- After any update, however made (the daemon's routes, the functions below, an app's own
-- UPDATE): cancel escalations of items that became read, and signal each person whose
-- unread or unseen count may have changed.
CREATE FUNCTION outbox.inbox_updated() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- Escalation: notify(..., escalate_after) left the other channels' rows pending until
    -- the interval ends; reading the in-app item first makes them 'cancelled'. Rows already
    -- claimed or sent are left alone. An item inserted without notification_id is traced
    -- through the message that delivered it.
    WITH became_read AS (
        SELECT n.id, n.recipient_key, n.read_at,
               coalesce(n.notification_id, m.notification_id) AS notification_id
          FROM new_items n
          JOIN old_items o ON o.id = n.id
          LEFT JOIN outbox.message m ON m.id = n.message_id AND n.notification_id IS NULL
         WHERE o.read_at IS NULL AND n.read_at IS NOT NULL
    )
    UPDATE outbox.message m
       SET status = 'cancelled',
           last_error = format(
               'escalation cancelled: in-app item %s was read at %s UTC (escalate_after %s)',
               r.id, to_char(r.read_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
               nt.escalate_after),
           updated_at = now()
      FROM became_read r
      JOIN outbox.notification nt ON nt.id = r.notification_id
     WHERE nt.escalate_after IS NOT NULL
       AND m.recipient_key = r.recipient_key  -- message_recipient_key_idx
       AND m.notification_id = r.notification_id
       AND m.status = 'pending'
       AND m.channel <> 'inapp';

    PERFORM pg_notify('outbox_inbox', outbox.inbox_signal('count', c.id, c.recipient_key))
       FROM (SELECT n.recipient_key, max(n.id) AS id
               FROM new_items n
               JOIN old_items o ON o.id = n.id
              WHERE (o.read_at IS NULL, o.seen_at IS NULL, o.archived_at IS NULL)
                    IS DISTINCT FROM (n.read_at IS NULL, n.seen_at IS NULL, n.archived_at IS NULL)
                 OR o.recipient_key IS DISTINCT FROM n.recipient_key
              GROUP BY n.recipient_key) AS c;
    RETURN NULL;
END $$;

CREATE TRIGGER inbox_updated AFTER UPDATE ON outbox.inbox
    REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.inbox_updated();

--------------------------------------------------------------------------------------------
-- Functions for the application's own backend (no HTTP needed)
--------------------------------------------------------------------------------------------

-- Unread, unarchived items of a person: a short scan of inbox_unread_idx.
CREATE FUNCTION outbox.inbox_unread_count(recipient_key text) RETURNS bigint
    LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM outbox.inbox i
     WHERE i.recipient_key = inbox_unread_count.recipient_key
       AND i.read_at IS NULL AND i.archived_at IS NULL
$$;

-- Unseen, unarchived items of a person (inbox_unseen_idx).
CREATE FUNCTION outbox.inbox_unseen_count(recipient_key text) RETURNS bigint
    LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM outbox.inbox i
     WHERE i.recipient_key = inbox_unseen_count.recipient_key
       AND i.seen_at IS NULL AND i.archived_at IS NULL
$$;

-- The following return how many items changed. Ids that are not the person's, or do not
-- exist, are ignored: the caller learns nothing about other people's items.

-- Marks items read (and seen); cancels their pending escalations.
CREATE FUNCTION outbox.inbox_mark_read(recipient_key text, ids bigint[]) RETURNS integer
    LANGUAGE sql AS $$
    WITH changed AS (
        UPDATE outbox.inbox i
           SET read_at = now(), seen_at = coalesce(i.seen_at, now())
         WHERE i.recipient_key = inbox_mark_read.recipient_key
           AND i.id = ANY (inbox_mark_read.ids)
           AND i.read_at IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM changed
$$;

-- Every unread item of the person, archived ones included; cancels their escalations.
CREATE FUNCTION outbox.inbox_mark_all_read(recipient_key text) RETURNS integer
    LANGUAGE sql AS $$
    WITH changed AS (
        UPDATE outbox.inbox i
           SET read_at = now(), seen_at = coalesce(i.seen_at, now())
         WHERE i.recipient_key = inbox_mark_all_read.recipient_key
           AND i.read_at IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM changed
$$;

-- Marks items unread again (they stay seen). A cancelled escalation is not revived.
CREATE FUNCTION outbox.inbox_mark_unread(recipient_key text, ids bigint[]) RETURNS integer
    LANGUAGE sql AS $$
    WITH changed AS (
        UPDATE outbox.inbox i
           SET read_at = NULL
         WHERE i.recipient_key = inbox_mark_unread.recipient_key
           AND i.id = ANY (inbox_mark_unread.ids)
           AND i.read_at IS NOT NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM changed
$$;

-- Archives items: they leave the list and the counts (the retention setting purges them).
CREATE FUNCTION outbox.inbox_archive(recipient_key text, ids bigint[]) RETURNS integer
    LANGUAGE sql AS $$
    WITH changed AS (
        UPDATE outbox.inbox i
           SET archived_at = now()
         WHERE i.recipient_key = inbox_archive.recipient_key
           AND i.id = ANY (inbox_archive.ids)
           AND i.archived_at IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM changed
$$;

-- Marks every unseen, unarchived item seen (the person opened the list): the unseen count
-- clears, unread items stay unread.
CREATE FUNCTION outbox.inbox_mark_seen(recipient_key text) RETURNS integer
    LANGUAGE sql AS $$
    WITH changed AS (
        UPDATE outbox.inbox i
           SET seen_at = now()
         WHERE i.recipient_key = inbox_mark_seen.recipient_key
           AND i.seen_at IS NULL AND i.archived_at IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM changed
$$;
