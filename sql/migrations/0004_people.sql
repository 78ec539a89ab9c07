-- People, not addresses: recipient profiles, notify() fan-out by priority tier, channel
-- preferences, quiet hours and do-not-disturb, a per-person hourly cap, and the tables the
-- in-app inbox and digests build on. See "Contract: people, fan-out and quiet hours".

--------------------------------------------------------------------------------------------
-- Time zones
--------------------------------------------------------------------------------------------

-- The IANA names this server knows. pg_timezone_names reads the whole time zone directory
-- on every call (about 9 ms for ~600 names), far too slow to check every recipient write of
-- a bulk import; this copy answers with one index probe. A name missing here (a newer
-- tzdata after an upgrade) still gets the slow lookup, so the copy can only be stale in
-- the direction of being slower. Also handy for a preference page's time zone picker.
CREATE TABLE outbox.time_zone (
    name text PRIMARY KEY
);
INSERT INTO outbox.time_zone (name) SELECT name FROM pg_timezone_names;

--------------------------------------------------------------------------------------------
-- People
--------------------------------------------------------------------------------------------

CREATE TABLE outbox.recipient (
    key               text        PRIMARY KEY,
    email             text,
    phone             text,
    locale            text,
    timezone          text        NOT NULL DEFAULT 'UTC',
    quiet_hours_start time,
    quiet_hours_end   time,
    dnd_until         timestamptz,
    attrs             jsonb       NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Backstops: recipient_validate() raises clearer errors first.
    CONSTRAINT recipient_key_check CHECK (key <> ''),
    CONSTRAINT recipient_attrs_check CHECK (jsonb_typeof(attrs) = 'object'),
    CONSTRAINT recipient_quiet_hours_check CHECK (
        quiet_hours_start IS NULL AND quiet_hours_end IS NULL
        OR quiet_hours_start IS NOT NULL AND quiet_hours_end IS NOT NULL
           AND quiet_hours_start <> quiet_hours_end)
);

-- Normalises and validates every write, whoever makes it (the Python helper, a plain
-- INSERT ... ON CONFLICT from any language, a bulk import), with errors that name the
-- column the way outbox.enqueue's name its arguments.
CREATE FUNCTION outbox.recipient_validate() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    canonical text;
BEGIN
    IF coalesce(NEW.key, '') = '' THEN
        RAISE EXCEPTION 'outbox.recipient: key is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- An empty address is a missing one: that channel is skipped, never failed.
    NEW.email := nullif(btrim(NEW.email), '');
    NEW.phone := nullif(btrim(NEW.phone), '');
    NEW.locale := nullif(btrim(NEW.locale), '');
    NEW.attrs := coalesce(NEW.attrs, '{}');
    IF jsonb_typeof(NEW.attrs) <> 'object' THEN
        RAISE EXCEPTION 'outbox.recipient: attrs must be a JSON object, got %', jsonb_typeof(NEW.attrs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    NEW.timezone := coalesce(nullif(btrim(NEW.timezone), ''), 'UTC');
    -- AT TIME ZONE alone would also accept POSIX rules such as 'Mars3', which no IANA
    -- library (the daemon's zoneinfo included) understands: only listed names count.
    IF NOT (TG_OP = 'UPDATE' AND NEW.timezone = OLD.timezone)
       AND NOT EXISTS (SELECT 1 FROM outbox.time_zone z WHERE z.name = NEW.timezone) THEN
        -- The slow path: a zone newer than outbox.time_zone, or another spelling of a
        -- known one ('europe/berlin'), which is stored as the canonical name.
        SELECT z.name INTO canonical
          FROM pg_timezone_names z
         WHERE lower(z.name) = lower(NEW.timezone)
         ORDER BY z.name = NEW.timezone DESC, z.name
         LIMIT 1;
        IF canonical IS NULL THEN
            RAISE EXCEPTION 'outbox.recipient: timezone % is not a known IANA time zone name',
                quote_literal(NEW.timezone)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a name such as ''Europe/Berlin'' (see pg_timezone_names).';
        END IF;
        NEW.timezone := canonical;
    END IF;

    IF (NEW.quiet_hours_start IS NULL) <> (NEW.quiet_hours_end IS NULL) THEN
        RAISE EXCEPTION 'outbox.recipient: quiet_hours_start and quiet_hours_end go together, got % and %',
            coalesce(NEW.quiet_hours_start::text, 'NULL'), coalesce(NEW.quiet_hours_end::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.quiet_hours_start = NEW.quiet_hours_end THEN
        RAISE EXCEPTION 'outbox.recipient: quiet_hours_start and quiet_hours_end are both %: an empty or whole-day window is ambiguous',
            NEW.quiet_hours_start
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set both to NULL for no quiet hours.';
    END IF;

    IF TG_OP = 'UPDATE' THEN
        NEW.created_at := OLD.created_at;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER recipient_validate BEFORE INSERT OR UPDATE ON outbox.recipient
    FOR EACH ROW EXECUTE FUNCTION outbox.recipient_validate();

-- Which channels a priority goes to when notify() is not given `channels`. Operators may
-- edit it; a tier without rows sends nothing.
CREATE TABLE outbox.tier_channel (
    priority smallint NOT NULL,
    channel  text     NOT NULL,
    PRIMARY KEY (priority, channel),
    CONSTRAINT tier_channel_priority_check CHECK (priority BETWEEN 0 AND 3),
    CONSTRAINT tier_channel_channel_check CHECK (channel IN ('email', 'sms', 'inapp'))
);
INSERT INTO outbox.tier_channel (priority, channel) VALUES
    (3, 'sms'), (3, 'email'), (3, 'inapp'),
    (2, 'sms'), (2, 'inapp'),
    (1, 'email'), (1, 'inapp'),
    (0, 'inapp');

-- A person's switches. '*' in channel or category means all; the most specific row wins
-- (channel + category, then channel + '*', then '*' + category, then '*' + '*'); no row
-- means enabled. `frequency` is read by the digests (a later migration's daemon work).
CREATE TABLE outbox.channel_preference (
    recipient_key text        NOT NULL
                  REFERENCES outbox.recipient (key) ON DELETE CASCADE ON UPDATE CASCADE,
    channel       text        NOT NULL,
    category      text        NOT NULL,
    enabled       boolean     NOT NULL DEFAULT true,
    frequency     text        NOT NULL DEFAULT 'instant',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recipient_key, channel, category),
    CONSTRAINT channel_preference_channel_check CHECK (channel IN ('email', 'sms', 'inapp', '*')),
    CONSTRAINT channel_preference_category_check CHECK (category <> ''),
    CONSTRAINT channel_preference_frequency_check
        CHECK (frequency IN ('instant', 'hourly', 'daily', 'weekly'))
);

-- Settings of the people layer that the daemon writes from its configuration at start-up
-- and every notify() reads: one row, typed columns, so a bad value is refused by a CHECK
-- rather than discovered by a cast inside an application's transaction.
CREATE TABLE outbox.people_setting (
    singleton         boolean     PRIMARY KEY DEFAULT true,
    -- Most non-transactional, non-urgent notifications one person gets per hour; the
    -- excess waits for the next hour with room. NULL: no cap.
    person_hourly_cap integer,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT people_setting_singleton_check CHECK (singleton),
    CONSTRAINT people_setting_cap_check CHECK (person_hourly_cap > 0)
);
INSERT INTO outbox.people_setting DEFAULT VALUES;

-- One row per notify().
CREATE TABLE outbox.notification (
    id              bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    recipient_key   text        NOT NULL,
    template        text        NOT NULL,
    context         jsonb       NOT NULL DEFAULT '{}',
    category        text        NOT NULL DEFAULT 'transactional',
    priority        smallint    NOT NULL DEFAULT 1,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Extras (not in the contract):
    -- the channels that got a message row, and why each other candidate got none
    -- ({"sms": "no address", "email": "opted out"}): "why did she get no SMS?" in one look.
    channels        text[]      NOT NULL DEFAULT '{}',
    skipped         jsonb       NOT NULL DEFAULT '{}',
    digest_key      text,
    digest_window   interval,
    -- Set only when escalation applies (an in-app row exists): reading the in-app item
    -- before then cancels this notification's pending rows of the other channels.
    escalate_after  interval,
    -- The UTC hour this notification counts against the per-person cap (NULL when the cap
    -- does not apply: transactional, urgent, digested, or nothing to send).
    cap_hour        timestamptz,
    -- Why the cap moved it, copied into its message rows' deferred_reason.
    deferred_reason text,
    CONSTRAINT notification_priority_check CHECK (priority BETWEEN 0 AND 3),
    CONSTRAINT notification_context_check CHECK (jsonb_typeof(context) = 'object')
);
-- No foreign key to outbox.recipient: history outlives the profile, and notify() checks
-- the key itself with a clearer error.
CREATE UNIQUE INDEX notification_idempotency_key_idx ON outbox.notification (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The cap counts a person's notifications per hour.
CREATE INDEX notification_cap_idx ON outbox.notification (recipient_key, cap_hour)
    WHERE cap_hour IS NOT NULL;

--------------------------------------------------------------------------------------------
-- outbox.message: people columns, the inapp channel, digest statuses
--------------------------------------------------------------------------------------------

-- Nullable columns without defaults: a catalogue change, no table rewrite. Both checks are
-- replaced in this one statement so that the table is scanned once to validate them.
ALTER TABLE outbox.message
    -- The notify() that made the row, and the person (NULL for outbox.enqueue rows). No
    -- foreign keys: they would cost every insert a probe and a lock, and retention purges
    -- messages and notifications independently.
    ADD COLUMN notification_id     bigint,
    ADD COLUMN recipient_key       text,
    -- For rows quiet hours and DND may hold (email and SMS, non-transactional, not urgent):
    -- when the row is due by its own rules (the caller's not_before, escalation, the cap).
    -- Re-timing always starts from here, so shortening or clearing DND releases rows.
    ADD COLUMN original_not_before timestamptz,
    -- Why not_before is later than asked (cap, escalation, DND, quiet hours), or NULL.
    ADD COLUMN deferred_reason     text,
    -- For digests (the flush is later work): the group key, its window, and the digest
    -- message an item was folded into.
    ADD COLUMN digest_key          text,
    ADD COLUMN digest_window       interval,
    ADD COLUMN digest_message_id   bigint,
    DROP CONSTRAINT message_channel_check,
    ADD CONSTRAINT message_channel_check CHECK (channel IN ('email', 'sms', 'inapp')),
    DROP CONSTRAINT message_status_check,
    ADD CONSTRAINT message_status_check CHECK (status IN (
        'pending', 'sending', 'sent', 'delivered', 'bounced', 'complained',
        'failed', 'suppressed', 'expired', 'cancelled', 'batched', 'digested'));

-- A person's pending rows, for re-timing when their quiet hours or DND change and for
-- cancelling escalations. Partial on both conditions: outbox.enqueue rows never enter it,
-- and a claimed row's new version (status 'sending') adds no entry, so the claim pays
-- nothing for it.
CREATE INDEX message_recipient_key_idx ON outbox.message (recipient_key, notification_id)
    WHERE recipient_key IS NOT NULL AND status = 'pending';

--------------------------------------------------------------------------------------------
-- In-app inbox
--------------------------------------------------------------------------------------------

CREATE TABLE outbox.inbox (
    id              bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    recipient_key   text        NOT NULL
                    REFERENCES outbox.recipient (key) ON DELETE CASCADE ON UPDATE CASCADE,
    notification_id bigint,
    -- The inapp message that delivered the item. Unique, so that a redelivery (delivery is
    -- at least once) lands once: ON CONFLICT (message_id) DO NOTHING. No foreign key:
    -- retention purges messages long before a person's inbox items go.
    message_id      bigint      UNIQUE,
    category        text        NOT NULL DEFAULT 'transactional',
    priority        smallint    NOT NULL DEFAULT 1,
    title           text        NOT NULL,
    body            text        NOT NULL DEFAULT '',
    url             text,
    data            jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    seen_at         timestamptz,
    read_at         timestamptz,
    archived_at     timestamptz,
    CONSTRAINT inbox_priority_check CHECK (priority BETWEEN 0 AND 3),
    CONSTRAINT inbox_data_check CHECK (jsonb_typeof(data) = 'object')
);
-- A person's items newest first (id order is creation order), paged with `before`.
CREATE INDEX inbox_recipient_idx ON outbox.inbox (recipient_key, id DESC);
-- Unread counts and the unread listing touch only the unread, unarchived items: a count
-- stays a short index scan however long a person's history grows.
CREATE INDEX inbox_unread_idx ON outbox.inbox (recipient_key, id DESC)
    WHERE read_at IS NULL AND archived_at IS NULL;

--------------------------------------------------------------------------------------------
-- Quiet hours and do-not-disturb
--------------------------------------------------------------------------------------------

-- The first instant after `after` at which the wall clock in `tz` shows `wall`, or, when
-- that wall time does not exist (a spring-forward gap), the instant the clock jumps past it.
-- PostgreSQL's own `wall AT TIME ZONE tz` reads a gap's time with the offset before the
-- jump (02:30 in New York on 2026-03-08 becomes 03:30 EDT, half an hour late) and an
-- ambiguous time with the later offset (01:30 on 2026-11-01 becomes the second 01:30, an
-- hour late for someone still in the first one).
CREATE FUNCTION outbox.local_instant(wall timestamp, tz text, after timestamptz)
    RETURNS timestamptz
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    guess      timestamptz := wall AT TIME ZONE tz;
    -- The offsets a day either side: equal unless a transition is near (never two within
    -- two days in any zone).
    off_before interval := ((guess - interval '1 day') AT TIME ZONE tz)
                           - ((guess - interval '1 day') AT TIME ZONE 'UTC');
    off_after  interval := ((guess + interval '1 day') AT TIME ZONE tz)
                           - ((guess + interval '1 day') AT TIME ZONE 'UTC');
    first_c    timestamptz;
    second_c   timestamptz;
    jump       timestamptz;
BEGIN
    IF off_before = off_after THEN
        RETURN guess;
    END IF;
    -- The wall time read with either offset; each is right if the clock really shows it.
    first_c := least((wall - off_before) AT TIME ZONE 'UTC', (wall - off_after) AT TIME ZONE 'UTC');
    second_c := greatest((wall - off_before) AT TIME ZONE 'UTC', (wall - off_after) AT TIME ZONE 'UTC');
    IF first_c > after AND (first_c AT TIME ZONE tz) = wall THEN
        RETURN first_c;
    END IF;
    IF second_c > after AND (second_c AT TIME ZONE tz) = wall THEN
        RETURN second_c;
    END IF;
    -- A gap: the jump lies between the two readings. Transitions fall on whole minutes.
    SELECT min(s) INTO jump
      FROM generate_series(first_c, second_c, interval '1 minute') AS s
     WHERE s > after AND (s AT TIME ZONE tz) >= wall;
    RETURN coalesce(jump, greatest(second_c, after));
END $$;

-- When a row due at `base` may go, given a person's DND and quiet window [start, end)
-- (local time in `tz`, wrapping midnight when start > end), and a human-readable reason
-- (NULL when it is not held). The one rule that notify() and re-timing share.
CREATE FUNCTION outbox.quiet_hold(
    base        timestamptz,
    tz          text,
    quiet_start time,
    quiet_end   time,
    dnd_until   timestamptz,
    OUT release_at timestamptz,
    OUT reason     text
)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    wall       timestamp;
    window_end timestamp;
BEGIN
    release_at := base;
    IF dnd_until > release_at THEN
        release_at := dnd_until;
        reason := format('do not disturb until %s %s',
                         to_char(dnd_until AT TIME ZONE tz, 'YYYY-MM-DD HH24:MI'), tz);
    END IF;
    IF quiet_start IS NULL OR quiet_end IS NULL OR quiet_start = quiet_end THEN
        RETURN;
    END IF;
    wall := release_at AT TIME ZONE tz;
    IF quiet_start < quiet_end THEN
        IF wall::time < quiet_start OR wall::time >= quiet_end THEN
            RETURN;
        END IF;
        window_end := wall::date + quiet_end;
    ELSE
        IF wall::time < quiet_start AND wall::time >= quiet_end THEN
            RETURN;
        END IF;
        -- In a window that wraps midnight, the evening part ends tomorrow.
        window_end := wall::date + quiet_end
                      + CASE WHEN wall::time >= quiet_start THEN interval '1 day' ELSE interval '0' END;
    END IF;
    release_at := outbox.local_instant(window_end, tz, release_at);
    reason := concat_ws('; ', reason,
                        format('quiet hours %s-%s %s until %s', left(quiet_start::text, 5),
                               left(quiet_end::text, 5), tz,
                               to_char(release_at AT TIME ZONE tz, 'YYYY-MM-DD HH24:MI')));
END $$;

-- A message row's deferred_reason: the notification's own (the cap), escalation for the
-- non-inapp rows, then quiet hours / DND. NULL when nothing deferred it.
CREATE FUNCTION outbox.deferral_reason(
    channel text, cap_reason text, escalate_after interval, hold_reason text
) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT nullif(concat_ws('; ',
        cap_reason,
        CASE WHEN channel <> 'inapp' AND escalate_after IS NOT NULL
             THEN format('escalation: waits %s for the in-app item to be read', escalate_after)
        END,
        hold_reason), '')
$$;

-- Re-times a person's pending rows that quiet hours and DND may hold, from their original
-- not_before, after their window, DND or time zone changed; returns how many moved.
-- Rows the daemon has already tried are left alone: their not_before is a retry backoff.
CREATE FUNCTION outbox.retime_pending(recipient_key text) RETURNS integer
    LANGUAGE sql AS $$
    WITH planned AS (
        SELECT m.id, h.release_at,
               outbox.deferral_reason(m.channel, n.deferred_reason, n.escalate_after, h.reason)
                   AS reason
          FROM outbox.message m
          JOIN outbox.recipient r ON r.key = m.recipient_key
          LEFT JOIN outbox.notification n ON n.id = m.notification_id
         CROSS JOIN LATERAL outbox.quiet_hold(m.original_not_before, r.timezone,
                                              r.quiet_hours_start, r.quiet_hours_end,
                                              r.dnd_until) AS h
         WHERE m.recipient_key = retime_pending.recipient_key
           AND m.status = 'pending'
           AND m.original_not_before IS NOT NULL
           AND m.attempts = 0
    ), moved AS (
        UPDATE outbox.message m
           SET not_before = p.release_at, deferred_reason = p.reason, updated_at = now()
          FROM planned p
         WHERE m.id = p.id
           AND m.status = 'pending'  -- rechecked after waiting for a concurrent claim
           AND (m.not_before, m.deferred_reason) IS DISTINCT FROM (p.release_at, p.reason)
        RETURNING 1
    )
    SELECT count(*)::integer FROM moved
$$;

CREATE FUNCTION outbox.recipient_retime() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF outbox.retime_pending(NEW.key) > 0 THEN
        -- A row released earlier may be due now: wake the claim loops (at commit).
        PERFORM pg_notify('outbox_message', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER recipient_retime
    AFTER UPDATE OF timezone, quiet_hours_start, quiet_hours_end, dnd_until ON outbox.recipient
    FOR EACH ROW
    WHEN (OLD.timezone IS DISTINCT FROM NEW.timezone
          OR OLD.quiet_hours_start IS DISTINCT FROM NEW.quiet_hours_start
          OR OLD.quiet_hours_end IS DISTINCT FROM NEW.quiet_hours_end
          OR OLD.dnd_until IS DISTINCT FROM NEW.dnd_until)
    EXECUTE FUNCTION outbox.recipient_retime();

--------------------------------------------------------------------------------------------
-- notify()
--------------------------------------------------------------------------------------------

-- `priority` is numeric, not integer, so that any integer type and a bare literal resolve
-- while 3.9 reaches the check below (as integer, 3.9 would fail function resolution with
-- an error naming no argument, and a client-side cast would round it to 4).
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
    escalate_after  interval    DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    person        outbox.recipient;
    prio          smallint;
    kind          text := coalesce(notify.category, 'transactional');
    is_plain      boolean;  -- non-transactional and not urgent: may be held, capped, digested
    is_batched    boolean;
    wanted        text[];
    made          text[];
    skips         jsonb;
    start_at      timestamptz := coalesce(notify.not_before, now());
    escalation    interval;
    hourly_cap    integer;
    first_hour    timestamptz;
    slot          record;
    counted_hour  timestamptz;
    cap_note      text;
    bad           text;
    new_id        bigint;
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

    -- Keep the channels with an address that the person has not switched off. The most
    -- specific preference wins; transactional notifications ignore preferences.
    SELECT coalesce(array_agg(w.c ORDER BY w.n) FILTER (WHERE w.why IS NULL), '{}'),
           coalesce(jsonb_object_agg(w.c, w.why) FILTER (WHERE w.why IS NOT NULL), '{}')
      INTO made, skips
      FROM (SELECT u.c, u.n,
                   CASE WHEN CASE u.c WHEN 'email' THEN person.email
                                      WHEN 'sms' THEN person.phone
                                      ELSE person.key END IS NULL THEN 'no address'
                        WHEN kind <> 'transactional' AND NOT coalesce(
                            (SELECT p.enabled FROM outbox.channel_preference p
                              WHERE p.recipient_key = person.key
                                AND p.channel IN (u.c, '*') AND p.category IN (kind, '*')
                              ORDER BY p.channel = '*', p.category = '*'
                              LIMIT 1), true) THEN 'opted out'
                   END AS why
              FROM unnest(wanted) WITH ORDINALITY AS u(c, n)) AS w;

    is_plain := kind <> 'transactional' AND prio < 3;
    is_batched := is_plain AND notify.digest_key IS NOT NULL;
    IF 'inapp' = ANY (made) THEN
        escalation := notify.escalate_after;
    END IF;

    -- The per-person cap (outbox.people_setting): a notification over it moves, all its
    -- rows, to the start of the next hour with room. Hours are UTC hours of when the rows
    -- are due. The advisory lock serialises one person's concurrent notify() calls until
    -- their transactions end, so two of them cannot both take the last place.
    IF is_plain AND NOT is_batched AND cardinality(made) > 0 THEN
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
         skipped, digest_key, digest_window, escalate_after, cap_hour, deferred_reason)
    VALUES
        (person.key, notify.template, coalesce(notify.context, '{}'), kind, prio,
         notify.idempotency_key, made, skips, notify.digest_key, notify.digest_window,
         escalation, counted_hour, cap_note)
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
         deferred_reason, digest_key, digest_window)
    SELECT c.channel, c.address, notify.template, coalesce(notify.context, '{}'), kind, prio,
           person.locale, coalesce(h.release_at, c.due), notify.expires_at,
           coalesce(notify.tags, '{}'),
           CASE WHEN is_batched THEN 'batched' ELSE 'pending' END,
           new_id, person.key,
           CASE WHEN c.holdable THEN c.due END,
           outbox.deferral_reason(c.channel, cap_note, escalation, h.reason),
           CASE WHEN is_batched THEN notify.digest_key END,
           CASE WHEN is_batched THEN notify.digest_window END
      FROM (SELECT u.c AS channel, u.n,
                   CASE u.c WHEN 'email' THEN person.email
                            WHEN 'sms' THEN person.phone
                            ELSE person.key END AS address,
                   start_at + CASE WHEN u.c <> 'inapp' THEN coalesce(escalation, interval '0')
                                   ELSE interval '0' END AS due,
                   -- In-app items never wake anyone; batched rows wait for their digest.
                   is_plain AND NOT is_batched AND u.c <> 'inapp' AS holdable
              FROM unnest(made) WITH ORDINALITY AS u(c, n)) AS c
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
