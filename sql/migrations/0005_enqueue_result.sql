-- An enqueue that says whether it created the row, and one home for the argument checks.
--
-- outbox.enqueue returns an id, and with a known idempotency_key the existing one: the
-- caller cannot tell the two apart. outbox.enqueue_result returns (id, created); the
-- contract function outbox.enqueue keeps its signature and return value and now calls it.
-- outbox.enqueue_check holds the refusals, so that bulk enqueue (a CHECK constraint on
-- the client's COPY staging table) refuses the same rows with the same messages.

CREATE FUNCTION outbox.enqueue_check(
    channel   text,
    recipient text,
    template  text,
    priority  integer
) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF enqueue_check.channel IS NULL OR enqueue_check.channel NOT IN ('email', 'sms') THEN
        RAISE EXCEPTION 'outbox.enqueue: channel must be ''email'' or ''sms'', got %',
            coalesce(quote_literal(enqueue_check.channel), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(enqueue_check.recipient), '') = '' THEN
        RAISE EXCEPTION 'outbox.enqueue: recipient is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(enqueue_check.template), '') = '' THEN
        RAISE EXCEPTION 'outbox.enqueue: template is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue_check.priority IS NULL OR enqueue_check.priority NOT BETWEEN 0 AND 3 THEN
        RAISE EXCEPTION 'outbox.enqueue: priority must be 0..3, got %', enqueue_check.priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN true;
END $$;

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
         idempotency_key, not_before, expires_at, tags)
    VALUES
        (enqueue_result.channel, btrim(enqueue_result.recipient), enqueue_result.template,
         coalesce(enqueue_result.context, '{}'),
         coalesce(enqueue_result.category, 'transactional'), enqueue_result.priority,
         enqueue_result.locale, enqueue_result.idempotency_key,
         coalesce(enqueue_result.not_before, now()), enqueue_result.expires_at,
         coalesce(enqueue_result.tags, '{}'))
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
    LANGUAGE sql AS $$
    SELECT r.id
      FROM outbox.enqueue_result(enqueue.channel, enqueue.recipient, enqueue.template,
                                 enqueue.context, enqueue.category, enqueue.priority,
                                 enqueue.not_before, enqueue.expires_at,
                                 enqueue.idempotency_key, enqueue.tags, enqueue.locale) AS r
$$;
