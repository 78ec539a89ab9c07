-- SMS delivery receipts and cost: SNS writes a delivery-status record of every SMS to
-- CloudWatch Logs (a group for successes, one for failures); the daemon reads them and
-- records the outcome, the carrier's answer and the price on the message.

ALTER TABLE outbox.message
    ADD COLUMN price_usd         numeric(12, 6),
    -- What the carrier said (SNS providerResponse), for delivered and failed SMS alike.
    ADD COLUMN provider_response text;

-- Where reading each log group got to: the timestamp of the newest record read (records
-- of that same millisecond are read again; outbox.event drops the repeats).
CREATE TABLE outbox.sms_receipt_cursor (
    log_group   text        PRIMARY KEY,
    last_ms     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The month's SMS spend: every priced message, and how many were sent that the provider has
-- not priced yet. sent_at of this month (UTC) decides the month.
CREATE INDEX message_sms_month_idx ON outbox.message (sent_at)
    WHERE channel = 'sms' AND sent_at IS NOT NULL;
