"""Settings of the time-based work on people: hourly caps, preference pages, digests and
schedules (``OUTBOXD_PEOPLE__*``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from daemon.settings.base import _Section


class PeopleSettings(_Section):
    hourly_cap: int | None = Field(
        None,
        ge=1,
        description=(
            "Most non-transactional, non-urgent notifications one person gets per hour; "
            "the excess is deferred to the next hour with room. Unset: no cap. Written to "
            "outbox.people_setting at start-up, so every outbox.notify() sees it."
        ),
    )
    categories: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "Categories a person's preference page always shows, comma-separated, besides "
            "those the person has switches for and the one of the message they came from."
        ),
    )

    digest_interval: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Longest pause between digest flushes, in seconds; the flush also wakes "
        "when the next digest window closes.",
    )
    digest_batch: int = Field(
        1000, ge=1, le=10_000, description="Digest groups folded per transaction."
    )
    schedule_catch_up: int = Field(
        1,
        ge=1,
        le=1000,
        description="How many missed occurrences of a schedule a daemon that was down still "
        "sends (the newest); older ones are skipped and logged.",
    )
    schedule_batch: int = Field(
        200, ge=1, le=10_000, description="Schedules fired per transaction."
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, tuple | list) and any(
            c in ("*", "transactional") or len(c) > 100 for c in value
        ):
            raise ValueError("must be category names (not '*' or 'transactional')")
        return value
