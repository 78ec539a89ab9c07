"""Settings of lists, campaigns and engagement tracking (``OUTBOXD_CAMPAIGNS__*``,
``OUTBOXD_TRACKING__*``)."""

from __future__ import annotations

from pydantic import Field

from daemon.settings.base import _Section


class CampaignSettings(_Section):
    confirm_token_days: float = Field(
        7.0,
        gt=0,
        description="How long a double opt-in confirmation link stays valid, in days.",
    )
    interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between passes of the campaign loop: scheduled starts, A/B "
        "winners, finished campaigns and due sequence steps.",
    )
    sequence_batch: int = Field(
        500, ge=1, le=100_000, description="Sequence enrollments advanced per transaction."
    )


class TrackingSettings(_Section):
    enabled: bool = Field(
        False,
        description="Open pixel and click redirects (signed /t/o and /t/c links) in the HTML "
        "of non-transactional email sent through SMTP or the file provider. SES tracks "
        "opens and clicks itself (event publishing).",
    )
