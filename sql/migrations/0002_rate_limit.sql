-- Cluster-wide token buckets: one row per channel, shared by every daemon on this database.
-- `factor` is the AIMD multiplier of the configured rate: halved on throttling (at most once
-- a second), recovering linearly towards 1.
CREATE TABLE outbox.rate_bucket (
    channel     text        PRIMARY KEY,
    tokens      float8      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    factor      float8      NOT NULL DEFAULT 1.0,
    factor_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
