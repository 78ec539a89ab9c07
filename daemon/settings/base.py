"""What every section of the settings tree shares: the environment prefix and the model
base (unknown fields refused, values frozen)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr

ENV_PREFIX = "OUTBOXD_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def postgres_dsn(value: SecretStr | None) -> SecretStr | None:
    """A field validator's body: a database URL must be a postgresql:// one."""
    if value is not None and not value.get_secret_value().startswith(
        ("postgres://", "postgresql://")
    ):
        raise ValueError("must be a postgresql:// URL")
    return value
