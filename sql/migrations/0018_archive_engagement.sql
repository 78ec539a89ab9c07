-- Opens and clicks come days after the send, when the message may be in the archive
-- (0016): the webhook of an engagement event reads outbox.message_all (from 0012).
CREATE OR REPLACE FUNCTION outbox.webhook_engagement() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    msg record;
BEGIN
    IF NOT outbox.webhook_listened() THEN
        RETURN NULL;
    END IF;
    SELECT * INTO msg FROM outbox.message_all m WHERE m.id = NEW.message_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM outbox.webhook_emit(
        CASE NEW.event_type WHEN 'open' THEN 'message.opened' ELSE 'message.clicked' END,
        jsonb_strip_nulls(jsonb_build_object(
            'message_id', msg.id,
            'recipient', msg.recipient,
            'status', msg.status,
            'channel', msg.channel,
            'template', msg.template,
            'category', msg.category,
            'recipient_key', msg.recipient_key,
            'url', NEW.payload ->> 'url',
            'occurred_at', NEW.occurred_at)));
    RETURN NULL;
END $$;
