-- Every status change rewrites the row (status is in the claim index's predicate, so no
-- update can be HOT), and a rewritten row gets a new entry in every index. Two claims
-- of a message's life are spent on index entries nobody reads; these become partial.

-- Idempotency keys: only rows that have one are indexed (most have none).
ALTER TABLE outbox.message DROP CONSTRAINT message_idempotency_key_key;
CREATE UNIQUE INDEX message_idempotency_key_idx ON outbox.message (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Retention, requeue and stats look at finished rows by age; rows being delivered
-- (pending, sending) stay out of this index.
DROP INDEX outbox.message_updated_at_idx;
CREATE INDEX message_finished_idx ON outbox.message (updated_at)
    WHERE status NOT IN ('pending', 'sending');

-- The reaper's index of leases covers exactly the leased rows, as before, but is defined
-- on the lease column itself: a completion (status = 'sending' AND locked_by = ...) no
-- longer matches its predicate, so it can only find its rows by primary key. Scanning
-- the lease index instead walks every dead entry that a long transaction keeps alive.
DROP INDEX outbox.message_lease_idx;
CREATE INDEX message_lease_idx ON outbox.message (locked_until)
    WHERE locked_until IS NOT NULL;

-- Whoever holds a lease is sending the message, and only then: completions check the
-- lease holder alone.
ALTER TABLE outbox.message ADD CONSTRAINT message_lease_holder_check
    CHECK ((locked_by IS NOT NULL) = (status = 'sending'));

-- ON CONFLICT must name the partial index's predicate to infer it.
CREATE OR REPLACE FUNCTION outbox.enqueue(
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
    locale          text        DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    IF enqueue.channel IS NULL OR enqueue.channel NOT IN ('email', 'sms') THEN
        RAISE EXCEPTION 'outbox.enqueue: channel must be ''email'' or ''sms'', got %',
            coalesce(quote_literal(enqueue.channel), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(enqueue.recipient), '') = '' THEN
        RAISE EXCEPTION 'outbox.enqueue: recipient is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(enqueue.template), '') = '' THEN
        RAISE EXCEPTION 'outbox.enqueue: template is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.priority IS NULL OR enqueue.priority NOT BETWEEN 0 AND 3 THEN
        RAISE EXCEPTION 'outbox.enqueue: priority must be 0..3, got %', enqueue.priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO outbox.message AS m
        (channel, recipient, template, context, category, priority, locale,
         idempotency_key, not_before, expires_at, tags)
    VALUES
        (enqueue.channel, btrim(enqueue.recipient), enqueue.template,
         coalesce(enqueue.context, '{}'), coalesce(enqueue.category, 'transactional'),
         enqueue.priority, enqueue.locale, enqueue.idempotency_key,
         coalesce(enqueue.not_before, now()), enqueue.expires_at, coalesce(enqueue.tags, '{}'))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING m.id INTO new_id;

    IF new_id IS NULL THEN
        SELECT m.id INTO new_id FROM outbox.message m
        WHERE m.idempotency_key = enqueue.idempotency_key;
    END IF;
    RETURN new_id;
END $$;
