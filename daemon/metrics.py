"""Prometheus metrics, in a registry of our own (served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

SENT = Counter(
    "outboxd_messages_sent_total",
    "Messages accepted by a provider.",
    ["channel", "provider"],
    registry=REGISTRY,
)
FAILED = Counter(
    "outboxd_messages_failed_total",
    "Messages that ended failed: permanent error, exhausted attempts, template, bad recipient.",
    ["channel", "provider", "reason"],
    registry=REGISTRY,
)
RETRIED = Counter(
    "outboxd_messages_retried_total",
    "Attempts that will be retried: transient error, throttling, paused channel.",
    ["channel", "provider", "reason"],
    registry=REGISTRY,
)
SUPPRESSED = Counter(
    "outboxd_messages_suppressed_total",
    "Messages not sent because the recipient is suppressed or opted out.",
    ["channel"],
    registry=REGISTRY,
)
EXPIRED = Counter(
    "outboxd_messages_expired_total",
    "Messages not sent because their expires_at passed.",
    ["channel"],
    registry=REGISTRY,
)
CLAIMED = Counter(
    "outboxd_messages_claimed_total",
    "Messages claimed (leased) by this process.",
    ["channel"],
    registry=REGISTRY,
)
SEND_SECONDS = Histogram(
    "outboxd_send_seconds",
    "Time one provider send took.",
    ["channel", "provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
CLAIM_SECONDS = Histogram(
    "outboxd_claim_seconds",
    "Time one claim query took.",
    ["channel"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)
COMPLETE_BATCH_SIZE = Histogram(
    "outboxd_complete_batch_size",
    "Results written per completion statement.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("outboxd_in_flight", "Sends running now.", ["channel"], registry=REGISTRY)
QUEUE_DEPTH = Gauge(
    "outboxd_queue_depth",
    "Messages waiting (pending) or being sent (sending), refreshed every 15 s.",
    ["channel", "status"],
    registry=REGISTRY,
)
OLDEST_PENDING = Gauge(
    "outboxd_oldest_pending_seconds",
    "Age of the oldest due pending message: how far behind delivery is.",
    ["channel"],
    registry=REGISTRY,
)
FEEDBACK_EVENTS = Counter(
    "outboxd_feedback_events_total",
    "Provider feedback events recorded (delivery, bounce, complaint...).",
    ["type"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT = Counter(
    "outboxd_rate_limit_wait_seconds_total",
    "Time claim loops spent waiting for the cluster-wide rate limit.",
    ["channel"],
    registry=REGISTRY,
)
CHANNEL_PAUSED = Gauge(
    "outboxd_channel_paused",
    "1 while the provider has paused sending for the channel (circuit open).",
    ["channel"],
    registry=REGISTRY,
)
LEASES_REAPED = Counter(
    "outboxd_leases_reaped_total",
    "Leases that expired (a worker was lost) and were returned to pending.",
    registry=REGISTRY,
)
HEARTBEAT = Gauge(
    "outboxd_claim_loop_heartbeat_timestamp_seconds",
    "Unix time the slowest claim loop last completed a cycle.",
    registry=REGISTRY,
)
BUILD_INFO = Info("outboxd_build", "Version and worker id of this process.", registry=REGISTRY)


def render() -> tuple[bytes, str]:
    """The exposition body and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
