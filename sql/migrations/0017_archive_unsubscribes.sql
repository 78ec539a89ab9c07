-- Unsubscribes find the list message they come from in the archive too (migration 0016).
--
-- An opt-out from a category (the one-click, the unsubscribe page, a person's switches) ends
-- the list subscription of the most recent campaign or sequence message of that category,
-- and undoing it restores what it ended. Those messages may have moved to
-- outbox.message_archive: these functions (from migration 0010) read outbox.message_all.

CREATE OR REPLACE FUNCTION outbox.unsubscribe_event(channel text, recipient text, category text)
    RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    found_id bigint;
BEGIN
    IF channel IS DISTINCT FROM 'email' THEN
        RETURN NULL;
    END IF;
    SELECT x.id INTO found_id
      FROM (SELECT m.id, m.sent_at
              FROM outbox.recipient r
              JOIN outbox.campaign c
                ON unsubscribe_event.category IS NULL OR c.category = unsubscribe_event.category
              JOIN outbox.message_all m ON m.campaign_id = c.id AND m.recipient_key = r.key
             WHERE outbox.normalize_recipient('email', r.email) = unsubscribe_event.recipient
               AND m.sent_at IS NOT NULL
            UNION ALL
            SELECT m.id, m.sent_at
              FROM outbox.recipient r
              JOIN outbox.sequence_enrollment e ON e.recipient_key = r.key
              JOIN outbox.sequence q ON q.id = e.sequence_id
              JOIN outbox.message_all m ON m.id = e.last_message_id
             WHERE outbox.normalize_recipient('email', r.email) = unsubscribe_event.recipient
               AND (unsubscribe_event.category IS NULL OR q.category = unsubscribe_event.category)
               AND m.sent_at IS NOT NULL) AS x
     ORDER BY x.sent_at DESC, x.id DESC
     LIMIT 1;
    IF found_id IS NOT NULL THEN
        INSERT INTO outbox.event
            (message_id, source, source_id, event_type, recipient, payload, occurred_at)
        VALUES (found_id, 'outboxd', 'unsubscribe:' || found_id, 'unsubscribe',
                unsubscribe_event.recipient,
                jsonb_strip_nulls(jsonb_build_object('category', unsubscribe_event.category)), now())
        ON CONFLICT (source, source_id, event_type) DO NOTHING;
    END IF;
    RETURN found_id;
END $$;

CREATE OR REPLACE FUNCTION outbox.preference_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.opted_out AND (TG_OP = 'INSERT' OR NOT OLD.opted_out) THEN
        PERFORM outbox.unsubscribe_event(NEW.channel, NEW.recipient, NEW.category);
    ELSIF TG_OP = 'UPDATE' AND OLD.opted_out AND NOT NEW.opted_out AND NEW.channel = 'email' THEN
        UPDATE outbox.subscription s
           SET status = 'active', ended_at = NULL, ended_by_message_id = NULL, updated_at = now()
          FROM outbox.recipient r, outbox.message_all m
         WHERE r.key = s.recipient_key
           AND outbox.normalize_recipient('email', r.email) = NEW.recipient
           AND s.status = 'unsubscribed'
           AND m.id = s.ended_by_message_id AND m.category = NEW.category;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION outbox.channel_preference_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    address text;
BEGIN
    SELECT outbox.normalize_recipient('email', r.email) INTO address
      FROM outbox.recipient r
     WHERE r.key = NEW.recipient_key AND r.email IS NOT NULL;
    IF address IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT NEW.enabled AND (TG_OP = 'INSERT' OR OLD.enabled) THEN
        IF NEW.category <> '*' THEN
            PERFORM outbox.unsubscribe_event('email', address, NEW.category);
        ELSIF NOT EXISTS (SELECT 1
                            FROM outbox.channel_preference p
                           WHERE p.recipient_key = NEW.recipient_key
                             AND p.channel IN ('email', '*') AND p.category <> '*'
                             AND p.enabled) THEN
            PERFORM outbox.unsubscribe_event('email', address, NULL);
            UPDATE outbox.subscription s
               SET status = 'unsubscribed', ended_at = now(), updated_at = now()
             WHERE s.recipient_key = NEW.recipient_key AND s.status IN ('active', 'pending');
        END IF;
    ELSIF NEW.category <> '*' AND NEW.enabled AND TG_OP = 'UPDATE' AND NOT OLD.enabled THEN
        UPDATE outbox.subscription s
           SET status = 'active', ended_at = NULL, ended_by_message_id = NULL, updated_at = now()
          FROM outbox.message_all m
         WHERE s.recipient_key = NEW.recipient_key
           AND s.status = 'unsubscribed'
           AND m.id = s.ended_by_message_id
           AND m.category = NEW.category;
    END IF;
    RETURN NULL;
END $$;
