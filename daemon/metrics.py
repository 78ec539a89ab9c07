"""Prometheus metrics, in a registry of our own (served at ``GET /metrics``).

With ``outboxd run --processes N`` every process writes its values to files in a directory
shared through ``PROMETHEUS_MULTIPROC_DIR`` (see :func:`daemon.processes.shared_metrics`),
and the parent's ``/metrics`` adds them up: counters and histograms are summed, and each
gauge says how its processes' values combine (``multiprocess_mode``; ignored with one
process).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
)

from daemon.processes import METRICS_DIR_VARIABLE

REGISTRY = CollectorRegistry(auto_describe=True)
#: Whether prometheus_client came up in multiprocess mode (it decides once, on import).
SHARED = bool(os.environ.get(METRICS_DIR_VARIABLE))

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
RENDERS = Counter(
    "outboxd_renders_total",
    "Messages rendered, by where: in a worker thread, or on the event loop (templates "
    "with a record of quick renders).",
    ["where"],
    registry=REGISTRY,
)
COMPLETE_BATCH_SIZE = Histogram(
    "outboxd_complete_batch_size",
    "Results written per completion statement.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "outboxd_in_flight",
    "Sends running now.",
    ["channel"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "outboxd_queue_depth",
    "Messages waiting (pending) or being sent (sending), refreshed every 15 s.",
    ["channel", "status"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",  # only the process serving /metrics counts
)
OLDEST_PENDING = Gauge(
    "outboxd_oldest_pending_seconds",
    "Age of the oldest due pending message: how far behind delivery is.",
    ["channel"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
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
    multiprocess_mode="livemax",  # paused in any process
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
    multiprocess_mode="livemin",  # the slowest loop of all processes
)
HTTP_CONNECTIONS = Gauge(
    "outboxd_http_connections",
    "Open HTTP connections, by server (public, admin).",
    ["server"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
HTTP_CONNECTIONS_CLOSED = Counter(
    "outboxd_http_connections_closed_total",
    "HTTP connections closed by outboxd: evicted or refused at the cap, or too slow to "
    "send a request head or body.",
    ["server", "reason"],
    registry=REGISTRY,
)

#: Metrics of the serving process alone (multiprocess mode has no Info).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
BUILD_INFO = Info(
    "outboxd_build", "Version and worker id of this process.", registry=PROCESS_REGISTRY
)


def render() -> tuple[bytes, str]:
    """The exposition body and its content type: every process's metrics when several
    processes share a metrics directory, this process's otherwise."""
    if SHARED:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(PROCESS_REGISTRY), CONTENT_TYPE_LATEST
