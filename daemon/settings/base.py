"""What every section of the settings tree shares: the environment prefix and the model
base (unknown fields refused, values frozen)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "OUTBOXD_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
