-- The operator console: channel pauses set by an operator, and the two indexes its message
-- search needs. Every status change rewrites a message row and adds an entry to each index
-- whose predicate the new version matches, so each index is paid for twice per message
-- (claim, completion); `python -m daemon.bench.console` measures that cost.

-- A channel an operator paused from the console (or with SQL): the daemons' lanes claim
-- nothing for it until the row is deleted. One row per channel; `reason` says why.
CREATE TABLE outbox.channel_pause (
    channel    text        PRIMARY KEY,
    reason     text        NOT NULL,
    paused_by  text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT channel_pause_channel_check CHECK (channel IN ('email', 'sms', 'inapp')),
    CONSTRAINT channel_pause_reason_check CHECK (btrim(reason) <> '')
);

-- Search by recipient (case-insensitive), newest first. Only rows out of the delivery path:
-- a message gets one entry here (at its completion) instead of one per row version
-- (enqueue, claim, completion), which measured a third off the claim + completion rate.
-- The search finds a recipient's pending and leased rows through the claim and lease
-- indexes instead (docs/CONSOLE.md).
CREATE INDEX IF NOT EXISTS message_recipient_search_idx ON outbox.message (lower(recipient), id DESC)
    WHERE status NOT IN ('pending', 'sending');

-- Search by a troubled status, newest first. Partial: a message that goes pending ->
-- sending -> sent never has an entry here, so the happy path pays only the predicate.
CREATE INDEX IF NOT EXISTS message_trouble_idx ON outbox.message (status, id DESC)
    WHERE status IN ('failed', 'bounced', 'complained', 'suppressed', 'expired', 'cancelled');

-- The messages of one notification (outbox.notify), out of the delivery path as above
-- (message_recipient_key_idx holds the pending ones).
CREATE INDEX IF NOT EXISTS message_notification_idx ON outbox.message (notification_id)
    WHERE notification_id IS NOT NULL AND status NOT IN ('pending', 'sending');
