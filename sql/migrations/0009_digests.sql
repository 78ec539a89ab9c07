-- Digests and recurring schedules. See "Contract: digests and schedules" in DESIGN.md.
--
-- Digests: notify() leaves a digested notification's message rows `batched`; the daemon's
-- flush (sql/queries.sql: digest_flush) folds each group (recipient_key, channel,
-- digest_key) into one pending message once the group's window has closed. Schedules:
-- outbox.schedule rows, planned and fired by the daemon (cron needs a real parser, and
-- PostgreSQL has none), each occurrence one notify() with an idempotency key.

--------------------------------------------------------------------------------------------
-- Batched rows
--------------------------------------------------------------------------------------------

-- A batched row's not_before is when its group's window closes if it is the group's first
-- item. The flush finds the groups whose earliest row is due here, then gathers each
-- group's rows with the second index. Both are partial on status = 'batched': the claim's
-- index holds pending rows only, so a million rows waiting for their digests cost a claim
-- nothing but the table's size, and these indexes stay as small as the waiting backlog.
CREATE INDEX message_batched_due_idx ON outbox.message (not_before)
    WHERE status = 'batched';
CREATE INDEX message_batched_group_idx ON outbox.message (recipient_key, channel, digest_key)
    WHERE status = 'batched';

-- An item can still be cancelled while it waits for its digest; the flush leaves it out.
CREATE OR REPLACE FUNCTION outbox.cancel(message_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    WITH cancelled AS (
        UPDATE outbox.message
           SET status = 'cancelled', updated_at = now(),
               last_error = 'cancelled by outbox.cancel()'
         WHERE id = message_id AND status IN ('pending', 'batched')
        RETURNING 1
    )
    SELECT count(*) > 0 FROM cancelled
$$;

-- When a digest taken `hourly`, `daily` or `weekly` goes out, for an item that arrives at
-- `after`: the next full hour, the next 08:00, or the next Monday 08:00, local time in
-- `tz`, strictly after `after`. DST-correct: outbox.local_instant() reads a wall time that
-- a spring-forward gap skips as the jump, and an ambiguous one as its first occurrence.
CREATE FUNCTION outbox.digest_closes_at(frequency text, tz text, after timestamptz)
    RETURNS timestamptz
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    wall timestamp := after AT TIME ZONE tz;
    day  date := wall::date;
BEGIN
    CASE frequency
    WHEN 'hourly' THEN
        -- Local hours: in a zone offset by half an hour they start at :30 UTC.
        RETURN date_trunc('hour', after, tz) + interval '1 hour';
    WHEN 'daily' THEN
        IF wall::time >= time '08:00' THEN
            day := day + 1;
        END IF;
    WHEN 'weekly' THEN
        day := day + (8 - extract(isodow FROM day)::integer) % 7;  -- this or the next Monday
        IF day = wall::date AND wall::time >= time '08:00' THEN
            day := day + 7;
        END IF;
    ELSE
        RAISE EXCEPTION 'outbox.digest_closes_at: frequency must be hourly, daily or weekly, got %',
            coalesce(quote_literal(frequency), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    RETURN outbox.local_instant(day + time '08:00', tz, after);
END $$;

--------------------------------------------------------------------------------------------
-- notify(): a person's digest frequency batches their rows
--------------------------------------------------------------------------------------------

-- As in 0004_people.sql, with one change: the frequency of the person's most specific
-- channel preference (instant, hourly, daily, weekly) is read with its `enabled`, and a
-- non-transactional, non-urgent, non-escalated notification's rows for a channel taken
-- hourly, daily or weekly wait `batched` in the group 'frequency:<frequency>:<category>'
-- until outbox.digest_closes_at(). A caller's digest_key now also sets when the window
-- closes (not_before = the item's not_before + digest_window), and batched rows say why
-- they wait in deferred_reason.
CREATE OR REPLACE FUNCTION outbox.notify(
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
           d.digest_key, d.digest_window
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

--------------------------------------------------------------------------------------------
-- Recurring schedules
--------------------------------------------------------------------------------------------

-- The values one cron field stands for, or NULL when it is malformed: a comma-separated
-- list of *, a value, or a range a-b, each optionally with a step /n; values are numbers
-- lo..hi or the given names (the first name standing for `first_name`). Read the way the
-- daemon's parser (cronsim) reads them; `5/15` means 5 to the end, every 15.
CREATE FUNCTION outbox.cron_field_values(
    field text, lo integer, hi integer, names text[], first_name integer
) RETURNS integer[]
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    term   text;
    parts  text[];
    found  integer[] := '{}';
    a      integer;
    b      integer;
    step   numeric;
BEGIN
    FOREACH term IN ARRAY string_to_array(field, ',') LOOP
        step := NULL;
        IF term LIKE '%/%' THEN
            IF term LIKE '%/%/%' OR split_part(term, '/', 2) !~ '^[0-9]+$' THEN
                RETURN NULL;
            END IF;
            step := split_part(term, '/', 2)::numeric;
            IF step = 0 THEN
                RETURN NULL;
            END IF;
            term := split_part(term, '/', 1);
        END IF;
        IF term = '*' THEN
            a := lo;
            b := hi;
        ELSE
            parts := string_to_array(term, '-');
            IF cardinality(parts) NOT IN (1, 2) THEN
                RETURN NULL;
            END IF;
            FOR i IN 1 .. cardinality(parts) LOOP
                IF array_position(names, parts[i]) IS NOT NULL THEN
                    parts[i] := (array_position(names, parts[i]) - 1 + first_name)::text;
                ELSIF parts[i] !~ '^[0-9]+$' OR parts[i]::numeric NOT BETWEEN lo AND hi THEN
                    RETURN NULL;
                END IF;
            END LOOP;
            a := parts[1]::numeric;
            b := parts[cardinality(parts)]::numeric;
            IF b < a THEN
                RETURN NULL;
            END IF;
            IF cardinality(parts) = 1 AND step IS NOT NULL THEN
                b := hi;
            END IF;
        END IF;
        -- Every field spans fewer than 100 values: a longer step means the first one.
        found := found || ARRAY(SELECT generate_series(a, b, least(coalesce(step, 1), 100)::integer));
    END LOOP;
    RETURN found;
END $$;

-- NULL when `cron` is a valid five-field expression (minute hour day-of-month month
-- day-of-week) in the syntax above, else what is wrong with it. The extensions L, W and #
-- and a sixth (seconds) field are refused. Checked by outbox.schedule's trigger, so that
-- a bad expression is refused by the INSERT that writes it; the daemon still parses it
-- (with cronsim) and records anything it cannot plan in the row's last_error.
CREATE FUNCTION outbox.cron_problem(cron text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    raw     text[];
    fields  text[];
    labels  text[] := ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'];
    lows    integer[] := ARRAY[0, 0, 1, 1, 0];
    highs   integer[] := ARRAY[59, 23, 31, 12, 7];
    months  text[] := ARRAY['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP',
                            'OCT', 'NOV', 'DEC'];
    days    text[] := ARRAY['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];
    lengths integer[] := ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    values  integer[];
    first_day integer;
BEGIN
    IF cron IS NULL OR btrim(cron, E' \t\r\n') = '' THEN
        RETURN 'it is empty';
    END IF;
    raw := regexp_split_to_array(btrim(cron, E' \t\r\n'), E'[ \t\r\n]+');
    fields := regexp_split_to_array(upper(btrim(cron, E' \t\r\n')), E'[ \t\r\n]+');
    IF cardinality(fields) <> 5 THEN
        RETURN format('it has %s fields, not the 5 of minute hour day-of-month month day-of-week',
                      cardinality(fields));
    END IF;
    FOR i IN 1 .. 5 LOOP
        values := outbox.cron_field_values(
            fields[i], lows[i], highs[i],
            CASE i WHEN 4 THEN months WHEN 5 THEN days ELSE '{}'::text[] END,
            CASE i WHEN 4 THEN 1 ELSE 0 END);
        IF values IS NULL THEN
            RETURN format('the %s field %s is not a list of values %s-%s%s, ranges a-b and steps /n',
                          labels[i], quote_literal(raw[i]), lows[i], highs[i],
                          CASE i WHEN 4 THEN ' (or jan-dec)' WHEN 5 THEN ' (or sun-sat)' ELSE '' END);
        END IF;
        IF i = 3 THEN
            first_day := (SELECT min(d) FROM unnest(values) AS d);
        END IF;
        -- When day-of-month or day-of-week starts with *, a day must match both, so the
        -- day of month must exist in one of the months (cron's OR applies otherwise).
        IF i = 4 AND (fields[3] LIKE '*%' OR fields[5] LIKE '*%')
           AND first_day > (SELECT max(lengths[m]) FROM unnest(values) AS m) THEN
            RETURN format('day-of-month %s never occurs in month %s', raw[3], raw[4]);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Recurring notifications. The daemon plans next_at (the next cron time in the person's
-- time zone after the row was written, when it is NULL) and fires each due occurrence as
-- one notify() with idempotency key 'schedule:<id>:<occurrence as UTC ISO 8601>'.
CREATE TABLE outbox.schedule (
    id            bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL,
    recipient_key text        NOT NULL
                  REFERENCES outbox.recipient (key) ON DELETE CASCADE ON UPDATE CASCADE,
    template      text        NOT NULL,
    context       jsonb       NOT NULL DEFAULT '{}',
    category      text        NOT NULL DEFAULT 'transactional',
    priority      smallint    NOT NULL DEFAULT 1,
    cron          text        NOT NULL,
    next_at       timestamptz,
    enabled       boolean     NOT NULL DEFAULT true,
    -- Extras (not in the contract): the latest occurrence notified, and why the daemon
    -- could not plan or fire the schedule (it waits until the row is edited).
    last_fired_at timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- When the definition last changed: a NULL next_at is planned from here.
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- An app upserts a person's schedule by name: ON CONFLICT (recipient_key, name).
    CONSTRAINT schedule_name_key UNIQUE (recipient_key, name),
    -- Backstops: schedule_validate() raises clearer errors first.
    CONSTRAINT schedule_priority_check CHECK (priority BETWEEN 0 AND 3),
    CONSTRAINT schedule_context_check CHECK (jsonb_typeof(context) = 'object')
);
-- The daemon's poll: enabled, plannable rows by when they are due (unplanned ones first).
CREATE INDEX schedule_due_idx ON outbox.schedule ((coalesce(next_at, '-infinity')))
    WHERE enabled AND last_error IS NULL;

CREATE FUNCTION outbox.schedule_validate() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    problem text;
BEGIN
    IF coalesce(btrim(NEW.name), '') = '' THEN
        RAISE EXCEPTION 'outbox.schedule: name is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(NEW.template), '') = '' THEN
        RAISE EXCEPTION 'outbox.schedule: template is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    NEW.category := coalesce(NEW.category, 'transactional');
    IF btrim(NEW.category) IN ('', '*') THEN
        RAISE EXCEPTION 'outbox.schedule: category must be a name, got %', quote_literal(NEW.category)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.priority IS NULL OR NEW.priority NOT BETWEEN 0 AND 3 THEN
        RAISE EXCEPTION 'outbox.schedule: priority must be an integer 0..3, got %',
            coalesce(NEW.priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    NEW.context := coalesce(NEW.context, '{}');
    IF jsonb_typeof(NEW.context) <> 'object' THEN
        RAISE EXCEPTION 'outbox.schedule: context must be a JSON object, got %', jsonb_typeof(NEW.context)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    problem := outbox.cron_problem(NEW.cron);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'outbox.schedule: cron % is invalid: %',
            coalesce(quote_literal(NEW.cron), 'NULL'), problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Five fields: minute hour day-of-month month day-of-week, e.g. ''0 9 * * 1'' for Mondays at 09:00 in the person''s time zone.';
    END IF;
    NEW.cron := array_to_string(regexp_split_to_array(btrim(NEW.cron, E' \t\r\n'), E'[ \t\r\n]+'), ' ');
    IF NOT EXISTS (SELECT 1 FROM outbox.recipient r WHERE r.key = NEW.recipient_key) THEN
        RAISE EXCEPTION 'outbox.schedule: recipient_key % is not in outbox.recipient',
            coalesce(quote_literal(NEW.recipient_key), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Upsert the person first (outbox.upsert_recipient in Python).';
    END IF;

    IF TG_OP = 'INSERT' THEN
        NEW.updated_at := NEW.created_at;
        NEW.last_error := NULL;
        RETURN NEW;
    END IF;
    NEW.created_at := OLD.created_at;
    -- The daemon writes only next_at, last_fired_at and last_error. Any other change is an
    -- edit: it clears the daemon's complaint, and one that moves the occurrences (the
    -- cron, enabling again) is planned afresh from now unless next_at is set in the same
    -- statement. (A change of the person's time zone re-plans too: see below.)
    IF (NEW.name, NEW.recipient_key, NEW.template, NEW.context, NEW.category, NEW.priority,
        NEW.cron, NEW.enabled)
       IS DISTINCT FROM
       (OLD.name, OLD.recipient_key, OLD.template, OLD.context, OLD.category, OLD.priority,
        OLD.cron, OLD.enabled) THEN
        NEW.last_error := NULL;
        NEW.updated_at := now();
        IF NEW.next_at IS NOT DISTINCT FROM OLD.next_at
           AND (NEW.cron IS DISTINCT FROM OLD.cron OR (NEW.enabled AND NOT OLD.enabled)) THEN
            NEW.next_at := NULL;
        END IF;
    END IF;
    IF NEW.next_at IS NULL AND OLD.next_at IS NOT NULL THEN
        NEW.updated_at := now();  -- planned afresh from now, skipping nothing in between
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER schedule_validate BEFORE INSERT OR UPDATE ON outbox.schedule
    FOR EACH ROW EXECUTE FUNCTION outbox.schedule_validate();

-- A person's schedules follow their time zone: their next occurrences are planned afresh.
CREATE FUNCTION outbox.recipient_replan_schedules() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbox.schedule s SET next_at = NULL
     WHERE s.recipient_key = NEW.key AND s.next_at IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER recipient_replan_schedules AFTER UPDATE OF timezone ON outbox.recipient
    FOR EACH ROW
    WHEN (OLD.timezone IS DISTINCT FROM NEW.timezone)
    EXECUTE FUNCTION outbox.recipient_replan_schedules();
