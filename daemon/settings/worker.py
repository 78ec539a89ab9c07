"""Settings of the database connection and the delivery loops (``OUTBOXD_DATABASE__*``,
``OUTBOXD_WORKER__*``)."""

from __future__ import annotations

import enum

from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.settings.base import ENV_PREFIX, _Section, postgres_dsn


class PoolMode(enum.StrEnum):
    SESSION = "session"
    TRANSACTION = "transaction"


class DatabaseSettings(_Section):
    """How outboxd talks to PostgreSQL (the DSN itself is OUTBOXD_DATABASE_URL)."""

    pool_mode: PoolMode = Field(
        PoolMode.SESSION,
        description=(
            "`session`: OUTBOXD_DATABASE_URL is PostgreSQL itself (or a session pooler). "
            "`transaction`: it is a transaction pooler such as PgBouncer in pool_mode="
            "transaction: no prepared statements are kept, no settings are sent at connect "
            "(set statement_timeout on the role), and LISTEN goes to LISTEN_URL."
        ),
    )
    listen_url: SecretStr | None = Field(
        None,
        description=(
            "A direct PostgreSQL DSN for LISTEN (new-message wake-ups, in-app streams) and "
            "for migrations. Unset: OUTBOXD_DATABASE_URL in session mode; in transaction "
            "mode the claim loops poll every OUTBOXD_WORKER__POLL_INTERVAL and in-app live "
            "streams are unavailable."
        ),
    )

    @field_validator("listen_url")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        return postgres_dsn(value)


class WorkerSettings(_Section):
    concurrency: int = Field(
        256,
        ge=1,
        le=10_000,
        description=(
            "Sends in flight per channel (SMTP: at most one per pooled connection of a "
            "recipient domain, domains served in turn)."
        ),
    )
    processes: int = Field(
        1, ge=1, le=64, description="Daemon processes `run` starts (one per core is sensible)."
    )
    batch_size: int = Field(200, ge=1, le=10_000, description="Max rows per claim.")
    lease_seconds: float = Field(
        120.0, gt=0, description="How long a claimed row stays leased before it is reclaimed."
    )
    max_attempts: int = Field(8, ge=1, description="Attempts before a message is failed.")
    retry_base_seconds: float = Field(5.0, gt=0, description="First retry delay (upper bound).")
    retry_max_seconds: float = Field(3600.0, gt=0, description="Cap on the retry delay.")
    poll_interval: float = Field(
        5.0, gt=0, description="Seconds between polls when no NOTIFY arrives."
    )
    render_timeout: float = Field(
        0.5,
        gt=0,
        description=(
            "Seconds one message's templates may take to render; over it, the message "
            "fails for good (a runaway template)."
        ),
    )
    grace_seconds: float = Field(
        30.0, ge=0, description="On shutdown, how long in-flight sends may take to finish."
    )
    reap_interval: float = Field(10.0, gt=0, description="Seconds between lease-expiry sweeps.")
    pause_seconds: float = Field(
        60.0,
        gt=0,
        description=(
            "A paused channel (e.g. SES sending paused, a full disk) probes again after an "
            "eighth of this, then twice as long after each failed probe, up to this."
        ),
    )
    retention_days: float | None = Field(
        None, gt=0, description="Purge finished messages older than this; unset = keep."
    )
    archive_after_hours: float | None = Field(
        24.0,
        ge=0,
        description=(
            "Move messages finished longer ago than this out of outbox.message into the "
            "monthly outbox.message_archive (see outbox.message_all); unset = never."
        ),
    )
    idempotency_days: float = Field(
        30.0,
        gt=0,
        description=(
            "How long an archived message's idempotency key still refuses a second enqueue "
            "(kept even after its archive partition is dropped)."
        ),
    )

    @model_validator(mode="after")
    def _retry_bounds(self) -> WorkerSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(
                f"{ENV_PREFIX}WORKER__RETRY_MAX_SECONDS: must be >= "
                f"{ENV_PREFIX}WORKER__RETRY_BASE_SECONDS"
            )
        return self
