-- Brands (tenants): one install sending for several brands, each with its own sender,
-- SES configuration set and tenant, template look and unsubscribe links.
--
-- A message's brand is the one named by enqueue(brand => ...) / notify(brand => ...), else
-- (notify) the person's. Without a brand everything is as before: the settings' sender,
-- configuration set and OUTBOXD_BRAND_* for templates. Opting out of a brand's marketing
-- (its unsubscribe links) holds for that brand only (outbox.brand_opt_out); hard bounces
-- and complaints stay global (outbox.suppression).

CREATE TABLE outbox.brand (
    key                   text        PRIMARY KEY,
    name                  text        NOT NULL,
    -- The From of its email ('Acme <hi@acme.example>'); NULL: OUTBOXD_EMAIL__FROM.
    from_address          text,
    reply_to              text,
    ses_configuration_set text,
    ses_tenant            text,
    url                   text,
    logo_url              text,
    -- Free-form colours for layouts, e.g. {"primary": "#0b5fff", "text": "#1f2933"}.
    colors                jsonb       NOT NULL DEFAULT '{}',
    postal_address        text,
    -- Base URL of its unsubscribe links (its own domain); NULL: OUTBOXD_PUBLIC_URL.
    unsubscribe_base_url  text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT brand_key_check CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    CONSTRAINT brand_colors_check CHECK (jsonb_typeof(colors) = 'object'),
    CONSTRAINT brand_from_check CHECK (from_address IS NULL OR from_address !~ '[\r\n]'),
    CONSTRAINT brand_reply_to_check CHECK (reply_to IS NULL OR reply_to !~ '[\r\n]'),
    CONSTRAINT brand_unsubscribe_url_check
        CHECK (unsubscribe_base_url IS NULL OR unsubscribe_base_url ~ '^https?://[^[:space:]]+$')
);

-- No foreign keys on the message tables: a check per inserted row would tax every
-- enqueue; enqueue() and notify() check the brand instead, and the daemon refuses to send
-- a message whose brand is gone.
ALTER TABLE outbox.message ADD COLUMN brand text;
ALTER TABLE outbox.notification ADD COLUMN brand text;
ALTER TABLE outbox.recipient ADD COLUMN brand text
    REFERENCES outbox.brand (key) ON UPDATE CASCADE ON DELETE SET NULL;

-- `brand` if it names a brand (or is NULL); else a clear error.
CREATE FUNCTION outbox.brand_check(brand text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF brand_check.brand IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM outbox.brand b WHERE b.key = brand_check.brand) THEN
        RAISE EXCEPTION 'outbox: no brand %', quote_literal(brand_check.brand)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Insert it into outbox.brand first.';
    END IF;
    RETURN brand_check.brand;
END $$;

-- A recipient's opt-out of one brand's messages of a category ('*': all of them but
-- transactional ones), written by that brand's unsubscribe links.
CREATE TABLE outbox.brand_opt_out (
    brand      text        NOT NULL REFERENCES outbox.brand (key) ON UPDATE CASCADE ON DELETE CASCADE,
    channel    text        NOT NULL,
    recipient  text        NOT NULL,
    category   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, recipient, brand, category)
);

CREATE FUNCTION outbox.webhook_brand_opt_out() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox.webhook_emit('recipient.unsubscribed', jsonb_build_object(
        'channel', NEW.channel, 'recipient', NEW.recipient, 'category', NEW.category,
        'brand', NEW.brand, 'status', 'unsubscribed'));
    RETURN NULL;
END $$;

CREATE TRIGGER brand_opt_out_webhook AFTER INSERT ON outbox.brand_opt_out
    FOR EACH ROW EXECUTE FUNCTION outbox.webhook_brand_opt_out();

-- Webhook events of a branded message name the brand (from 0012_webhooks.sql, with it).
CREATE OR REPLACE FUNCTION outbox.webhook_messages_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT outbox.webhook_listened() THEN
        RETURN NULL;
    END IF;
    INSERT INTO outbox.webhook_delivery (event_id, endpoint_id, type, data)
    SELECT ev.event_id, e.id, ev.type, ev.data
      FROM (SELECT gen_random_uuid() AS event_id, 'message.' || n.status AS type,
                   jsonb_strip_nulls(jsonb_build_object(
                       'message_id', n.id,
                       'recipient', n.recipient,
                       'status', n.status,
                       'channel', n.channel,
                       'template', n.template,
                       'category', n.category,
                       'recipient_key', n.recipient_key,
                       'notification_id', n.notification_id,
                       'provider', n.provider,
                       'provider_message_id', n.provider_message_id,
                       'tags', NULLIF(n.tags, '{}'::jsonb),
                       'brand', n.brand,
                       'last_error', CASE WHEN n.status IN ('failed', 'bounced', 'complained')
                                          THEN n.last_error END)) AS data
              FROM new_rows n
              JOIN old_rows o ON o.id = n.id
             WHERE n.status IS DISTINCT FROM o.status
               AND n.status IN ('sent', 'delivered', 'bounced', 'complained', 'failed')
             ORDER BY n.id) AS ev
      JOIN outbox.webhook_endpoint e
        ON e.enabled AND (ev.type = ANY (e.events) OR '*' = ANY (e.events));
    IF FOUND THEN
        PERFORM pg_notify('outbox_webhook', '');
    END IF;
    RETURN NULL;
END $$;

-- enqueue and notify take `brand`. Dropped and created again (not replaced): a second
-- signature beside the first would make every call without `brand` ambiguous.
DROP FUNCTION outbox.enqueue(text, text, text, jsonb, text, integer, timestamptz, timestamptz,
                             text, jsonb, text);
DROP FUNCTION outbox.enqueue_result(text, text, text, jsonb, text, integer, timestamptz,
                                    timestamptz, text, jsonb, text);
DROP FUNCTION outbox.notify(text, text, jsonb, text, numeric, text[], timestamptz, timestamptz,
                            text, jsonb, text, interval, interval);

-- From 0005_enqueue_result.sql, with `brand`.
CREATE FUNCTION outbox.enqueue_result(
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
    IF NOT enqueue_result.created THEN
        -- A new statement, so it sees the row of a concurrent enqueue that committed
        -- while this one waited on the key.
        SELECT m.id INTO enqueue_result.id FROM outbox.message m
         WHERE m.idempotency_key = enqueue_result.idempotency_key;
    END IF;
END $$;

-- From 0005_enqueue_result.sql, with `brand`.
CREATE FUNCTION outbox.enqueue(
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
    brand           text        DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql AS $$
    SELECT r.id
      FROM outbox.enqueue_result(enqueue.channel, enqueue.recipient, enqueue.template,
                                 enqueue.context, enqueue.category, enqueue.priority,
                                 enqueue.not_before, enqueue.expires_at,
                                 enqueue.idempotency_key, enqueue.tags, enqueue.locale,
                                 enqueue.brand) AS r
$$;

-- From 0009_digests.sql, with `brand` (the caller's, else the person's).
CREATE FUNCTION outbox.notify(
    recipient_key   text,
    template        text,
    context         jsonb       DEFAULT '{}',
    category        text        DEFAULT 'transactional',
    priority        numeric     DEFAULT 1,
    channels        text[]      DEFAULT NULL,
    not_before      timestamptz DEFAULT NULL,
    expires_at      timestamptz DEFAULT NULL,
    idempotency_key text        DEFAULT NULL,
    tags            jsonb       DEFAULT '{}',
    digest_key      text        DEFAULT NULL,
    digest_window   interval    DEFAULT NULL,
    escalate_after  interval    DEFAULT NULL,
    brand           text        DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    person        outbox.recipient;
    prio          smallint;
    kind          text := coalesce(notify.category, 'transactional');
    is_plain      boolean;  -- non-transactional and not urgent: may be held, capped, digested
    batched       text[] := '{}';  -- the channels whose rows wait for a digest
    frequencies   jsonb;    -- channel -> the person's digest frequency, where not instant
    wanted        text[];
    made          text[];
    skips         jsonb;
    start_at      timestamptz := coalesce(notify.not_before, now());
    -- When the caller wants it sent: a digest window starts here, whatever the cap does.
    requested_at  timestamptz := coalesce(notify.not_before, now());
    escalation    interval;
    hourly_cap    integer;
    first_hour    timestamptz;
    slot          record;
    counted_hour  timestamptz;
    cap_note      text;
    bad           text;
    new_id        bigint;
    sender_brand  text;
BEGIN
    -- Arguments first: a bad call fails the same way whether or not its key was seen.
    IF coalesce(btrim(notify.recipient_key), '') = '' THEN
        RAISE EXCEPTION 'outbox.notify: recipient_key is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(notify.template), '') = '' THEN
        RAISE EXCEPTION 'outbox.notify: template is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF btrim(kind) IN ('', '*') THEN
        RAISE EXCEPTION 'outbox.notify: category must be a name, got %', quote_literal(kind)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF notify.priority IS NULL OR notify.priority <> trunc(notify.priority)
       OR notify.priority NOT BETWEEN 0 AND 3 THEN
        RAISE EXCEPTION 'outbox.notify: priority must be an integer 0..3, got %',
            coalesce(notify.priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    prio := notify.priority::smallint;
    IF jsonb_typeof(coalesce(notify.context, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'outbox.notify: context must be a JSON object, got %', jsonb_typeof(notify.context)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(coalesce(notify.tags, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'outbox.notify: tags must be a JSON object, got %', jsonb_typeof(notify.tags)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF notify.channels IS NOT NULL THEN
        SELECT coalesce(quote_literal(c), 'NULL') INTO bad
          FROM unnest(notify.channels) WITH ORDINALITY AS u(c, n)
         WHERE c IS NULL OR c NOT IN ('email', 'sms', 'inapp')
         ORDER BY n
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'outbox.notify: channels contains unknown channel %', bad
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The channels are ''email'', ''sms'' and ''inapp''.';
        END IF;
        IF cardinality(notify.channels) = 0 THEN
            RAISE EXCEPTION 'outbox.notify: channels is empty (NULL means the priority''s tier)'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF (notify.digest_key IS NULL) <> (notify.digest_window IS NULL) THEN
        RAISE EXCEPTION 'outbox.notify: digest_key and digest_window go together'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF notify.digest_key IS NOT NULL AND btrim(notify.digest_key) = '' THEN
        RAISE EXCEPTION 'outbox.notify: digest_key is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF notify.digest_window <= interval '0' OR notify.digest_window > interval '31 days' THEN
        RAISE EXCEPTION 'outbox.notify: digest_window must be more than 0 and at most 31 days, got %',
            notify.digest_window
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF notify.escalate_after <= interval '0' THEN
        RAISE EXCEPTION 'outbox.notify: escalate_after must be positive, got %', notify.escalate_after
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF notify.escalate_after IS NOT NULL AND notify.digest_key IS NOT NULL THEN
        RAISE EXCEPTION 'outbox.notify: escalate_after and digest_key cannot be combined'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO person FROM outbox.recipient r WHERE r.key = notify.recipient_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'outbox.notify: recipient_key % is not in outbox.recipient',
            quote_literal(notify.recipient_key)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Upsert the person first (outbox.upsert_recipient in Python).';
    END IF;
    -- The brand: the caller's, else the person's (NULL: the settings' defaults).
    sender_brand := outbox.brand_check(coalesce(notify.brand, person.brand));

    IF notify.idempotency_key IS NOT NULL THEN
        SELECT n.id INTO new_id FROM outbox.notification n
         WHERE n.idempotency_key = notify.idempotency_key;
        IF FOUND THEN
            RETURN new_id;
        END IF;
    END IF;

    -- The channels: the caller's (deduplicated, in order) or the priority's tier.
    IF notify.channels IS NOT NULL THEN
        wanted := ARRAY(SELECT c FROM unnest(notify.channels) WITH ORDINALITY AS u(c, n)
                         GROUP BY c ORDER BY min(n));
    ELSE
        wanted := ARRAY(SELECT t.channel FROM outbox.tier_channel t
                         WHERE t.priority = prio ORDER BY t.channel);
    END IF;
    IF notify.escalate_after IS NOT NULL AND NOT 'inapp' = ANY (wanted) THEN
        RAISE EXCEPTION 'outbox.notify: escalate_after needs the inapp channel, got channels %', wanted
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Keep the channels with an address that the person has not switched off, and note
    -- the ones the person takes as a digest. The most specific preference wins, for both;
    -- transactional notifications ignore preferences.
    SELECT coalesce(array_agg(w.c ORDER BY w.n) FILTER (WHERE w.why IS NULL), '{}'),
           coalesce(jsonb_object_agg(w.c, w.why) FILTER (WHERE w.why IS NOT NULL), '{}'),
           coalesce(jsonb_object_agg(w.c, w.frequency)
                    FILTER (WHERE w.why IS NULL AND w.frequency <> 'instant'), '{}')
      INTO made, skips, frequencies
      FROM (SELECT u.c, u.n, p.frequency,
                   CASE WHEN CASE u.c WHEN 'email' THEN person.email
                                      WHEN 'sms' THEN person.phone
                                      ELSE person.key END IS NULL THEN 'no address'
                        WHEN NOT coalesce(p.enabled, true) THEN 'opted out'
                   END AS why
              FROM unnest(wanted) WITH ORDINALITY AS u(c, n)
              LEFT JOIN LATERAL (
                    SELECT p.enabled, p.frequency FROM outbox.channel_preference p
                     WHERE kind <> 'transactional'
                       AND p.recipient_key = person.key
                       AND p.channel IN (u.c, '*') AND p.category IN (kind, '*')
                     ORDER BY p.channel = '*', p.category = '*'
                     LIMIT 1) AS p ON true) AS w;

    is_plain := kind <> 'transactional' AND prio < 3;
    -- Digested: every channel when the caller gave a digest_key; otherwise the channels the
    -- person takes hourly, daily or weekly (unless escalation asks for speed).
    IF is_plain THEN
        batched := ARRAY(SELECT c FROM unnest(made) AS c
                          WHERE notify.digest_key IS NOT NULL
                             OR (notify.escalate_after IS NULL AND frequencies ? c));
    END IF;
    IF 'inapp' = ANY (made) THEN
        escalation := notify.escalate_after;
    END IF;

    -- The per-person cap (outbox.people_setting): a notification over it moves, all its
    -- rows, to the start of the next hour with room. Hours are UTC hours of when the rows
    -- are due. The advisory lock serialises one person's concurrent notify() calls until
    -- their transactions end, so two of them cannot both take the last place.
    IF is_plain AND cardinality(made) > cardinality(batched) THEN
        first_hour := date_trunc('hour', start_at, 'UTC');
        counted_hour := first_hour;
        SELECT s.person_hourly_cap INTO hourly_cap FROM outbox.people_setting s;
        IF hourly_cap IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext('outbox.person_hourly_cap'),
                                          hashtext(person.key));
            FOR slot IN
                SELECT n.cap_hour AS hour, count(*) AS n
                  FROM outbox.notification n
                 WHERE n.recipient_key = person.key AND n.cap_hour >= first_hour
                 GROUP BY n.cap_hour
                 ORDER BY n.cap_hour
            LOOP
                EXIT WHEN slot.hour > counted_hour OR slot.n < hourly_cap;
                counted_hour := slot.hour + interval '1 hour';
            END LOOP;
            IF counted_hour > first_hour THEN
                start_at := counted_hour;
                cap_note := format('per-person hourly cap of %s reached for %s UTC; deferred to %s UTC',
                                   hourly_cap,
                                   to_char(first_hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                                   to_char(counted_hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'));
            END IF;
        END IF;
    END IF;

    INSERT INTO outbox.notification AS n
        (recipient_key, template, context, category, priority, idempotency_key, channels,
         skipped, digest_key, digest_window, escalate_after, cap_hour, deferred_reason, brand)
    VALUES
        (person.key, notify.template, coalesce(notify.context, '{}'), kind, prio,
         notify.idempotency_key, made, skips, notify.digest_key, notify.digest_window,
         escalation, counted_hour, cap_note, sender_brand)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING n.id INTO new_id;
    IF new_id IS NULL THEN
        -- A concurrent call with the same key committed first.
        SELECT n.id INTO new_id FROM outbox.notification n
         WHERE n.idempotency_key = notify.idempotency_key;
        RETURN new_id;
    END IF;

    INSERT INTO outbox.message
        (channel, recipient, template, context, category, priority, locale, not_before,
         expires_at, tags, status, notification_id, recipient_key, original_not_before,
         deferred_reason, digest_key, digest_window, brand)
    SELECT c.channel, c.address, notify.template, coalesce(notify.context, '{}'), kind, prio,
           person.locale,
           -- A batched row's not_before is when its group's window closes if it is the
           -- group's first item (the flush takes the earliest of the group).
           CASE WHEN c.batched THEN d.closes_at ELSE coalesce(h.release_at, c.due) END,
           notify.expires_at,
           coalesce(notify.tags, '{}'),
           CASE WHEN c.batched THEN 'batched' ELSE 'pending' END,
           new_id, person.key,
           CASE WHEN c.holdable THEN c.due END,
           CASE WHEN c.batched
                THEN format('digest %s: its window closes by %s %s', d.digest_key,
                            to_char(d.closes_at AT TIME ZONE person.timezone, 'YYYY-MM-DD HH24:MI'),
                            person.timezone)
                ELSE outbox.deferral_reason(c.channel, cap_note, escalation, h.reason) END,
           d.digest_key, d.digest_window, sender_brand
      FROM (SELECT u.c AS channel, u.n,
                   CASE u.c WHEN 'email' THEN person.email
                            WHEN 'sms' THEN person.phone
                            ELSE person.key END AS address,
                   start_at + CASE WHEN u.c <> 'inapp' THEN coalesce(escalation, interval '0')
                                   ELSE interval '0' END AS due,
                   u.c = ANY (batched) AS batched,
                   frequencies ->> u.c AS frequency,
                   -- In-app items never wake anyone; batched rows wait for their digest.
                   is_plain AND NOT u.c = ANY (batched) AND u.c <> 'inapp' AS holdable
              FROM unnest(made) WITH ORDINALITY AS u(c, n)) AS c
      -- The group and when its window closes: the person's frequency (a group per
      -- category and frequency) wins over the caller's digest_key and window.
      LEFT JOIN LATERAL (
            SELECT CASE WHEN c.frequency IS NOT NULL
                        THEN format('frequency:%s:%s', c.frequency, kind)
                        ELSE notify.digest_key END AS digest_key,
                   CASE WHEN c.frequency IS NULL THEN notify.digest_window END AS digest_window,
                   CASE WHEN c.frequency IS NOT NULL
                        THEN outbox.digest_closes_at(c.frequency, person.timezone, requested_at)
                        ELSE requested_at + notify.digest_window END AS closes_at
             WHERE c.batched) AS d
        ON true
      LEFT JOIN LATERAL (
            SELECT q.release_at, q.reason
              FROM outbox.quiet_hold(c.due, person.timezone, person.quiet_hours_start,
                                     person.quiet_hours_end, person.dnd_until) AS q
             WHERE c.holdable
               AND (person.quiet_hours_start IS NOT NULL OR person.dnd_until > c.due)) AS h
        ON true
     ORDER BY c.n;

    RETURN new_id;
END $$;


