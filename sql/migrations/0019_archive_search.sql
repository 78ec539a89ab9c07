-- The console's message search reads the archive too (migration 0016 moves finished
-- messages there): the archive gets the search indexes that outbox.message has (0015).
--
-- They cost nothing on the delivery path: an archived row is written once, by the
-- archiving move, in batches, and never updated but by late feedback (a status). So they
-- need not be partial the way 0015's are: every archived row is finished, and the
-- recipient index takes them all. Created on the partitioned parent, each month's
-- partition gets its own (and so does every partition created later).

-- Search by recipient (case-insensitive), newest first.
CREATE INDEX IF NOT EXISTS message_archive_recipient_search_idx
    ON outbox.message_archive (lower(recipient), id DESC);

-- Search by a troubled status, newest first (sent and delivered, most of the archive,
-- are found by walking the id index, as in outbox.message).
CREATE INDEX IF NOT EXISTS message_archive_trouble_idx ON outbox.message_archive (status, id DESC)
    WHERE status IN ('failed', 'bounced', 'complained', 'suppressed', 'expired', 'cancelled');

-- The messages of one notification (outbox.notify).
CREATE INDEX IF NOT EXISTS message_archive_notification_idx
    ON outbox.message_archive (notification_id)
    WHERE notification_id IS NOT NULL;

-- Search by creation time. outbox.message has no such index (one more entry per message
-- on the delivery path), and needs none for recent times: walking its newest ids finds
-- them at once. In the archive that walk would find nothing recent and go through every
-- archived row (0.4 s at a million) before it answers "none".
CREATE INDEX IF NOT EXISTS message_archive_created_at_idx ON outbox.message_archive (created_at);
