"""The webhook lane's Prometheus metrics (in the daemon's registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from daemon.metrics import REGISTRY

ATTEMPTS = Counter(
    "outboxd_webhook_attempts_total",
    "Webhook POSTs by outcome: delivered (2xx), retry (will be tried again), failed "
    "(retry window over, or the URL refused), kept for `outboxd hooks replay`.",
    ["outcome"],
    registry=REGISTRY,
)
POST_SECONDS = Histogram(
    "outboxd_webhook_post_seconds",
    "Time one webhook POST took, answer included.",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge(
    "outboxd_webhook_in_flight",
    "Webhook POSTs running now.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DELIVERIES = Gauge(
    "outboxd_webhook_deliveries",
    "Webhook deliveries waiting (pending), being posted (sending) or failed and kept for "
    "replay, refreshed with the lease sweep.",
    ["status"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
