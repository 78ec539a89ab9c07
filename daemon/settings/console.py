"""Settings of the operator console on the admin server (``OUTBOXD_CONSOLE__*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from daemon.settings.base import _Section

#: A token shorter than this is guessable by anyone who can reach the admin port.
MIN_TOKEN_LENGTH = 16


class ConsoleSettings(_Section):
    token: SecretStr | None = Field(
        None,
        description="Operators sign in to the console (/console on the admin server) with "
        "this token; unset, the console is off. At least 16 characters; changing it signs "
        "everyone out.",
    )
    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="How long a console sign-in lasts, in hours."
    )
    batch_size: int = Field(
        1000,
        ge=1,
        le=50_000,
        description="Messages a console action on a whole search changes per transaction.",
    )
    max_rows: int = Field(
        100_000,
        ge=1,
        description="Messages one console action on a search changes at most (run it again "
        "for more).",
    )
    holds_interval: float = Field(
        2.0,
        gt=0,
        le=300,
        description="Seconds between the daemon's reads of outbox.channel_pause (operator "
        "pauses and resumes take effect within this).",
    )

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters")
        return value
