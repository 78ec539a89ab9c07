"""Settings of outbound webhooks to the application (``OUTBOXD_HOOKS__*``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from daemon.feedback.outbound import Allowlist
from daemon.settings.base import ENV_PREFIX, _Section


class HookSettings(_Section):
    enabled: bool = Field(
        True, description="Run the webhook lane (posts outbox.webhook_delivery rows)."
    )
    allow_private: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated hosts or CIDR networks a webhook may reach although "
        "they are not public (and over plain http); everything else must be https to a "
        "public address.",
    )
    retry_base_seconds: float = Field(10.0, gt=0, description="First retry delay (upper bound).")
    retry_max_seconds: float = Field(3600.0, gt=0, description="Cap on the retry delay.")
    retry_window_seconds: float = Field(
        86400.0,
        gt=0,
        description="How long a delivery is retried before it is marked failed (kept for "
        "`outboxd hooks replay`).",
    )
    timeout: float = Field(10.0, gt=0, le=300, description="Seconds one POST may take.")
    concurrency: int = Field(
        8, ge=1, le=1000, description="POSTs in flight per endpoint (one endpoint never "
        "takes another's slots)."
    )  # fmt: skip
    batch_size: int = Field(100, ge=1, le=10_000, description="Deliveries per claim at most.")
    poll_interval: float = Field(
        2.0, gt=0, description="Seconds between polls when no NOTIFY arrives."
    )
    lease_seconds: float = Field(
        60.0, gt=0, description="How long a claimed delivery stays leased before it is retried."
    )
    breaker_failures: int = Field(
        5, ge=1, description="Failures in a row after which an endpoint's circuit opens."
    )
    breaker_seconds: float = Field(
        30.0, gt=0, description="While an endpoint's circuit is open, one probe per this."
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Bytes of an endpoint's answer read at most."
    )

    @field_validator("allow_private", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allow_private")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        Allowlist.parse(value)  # raises ValueError naming the bad entry
        return value

    @model_validator(mode="after")
    def _bounds(self) -> HookSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(
                f"{ENV_PREFIX}HOOKS__RETRY_MAX_SECONDS: must be >= "
                f"{ENV_PREFIX}HOOKS__RETRY_BASE_SECONDS"
            )
        if self.lease_seconds <= self.timeout * 2:
            raise ValueError(
                f"{ENV_PREFIX}HOOKS__LEASE_SECONDS: must exceed twice {ENV_PREFIX}HOOKS__TIMEOUT"
            )
        return self
