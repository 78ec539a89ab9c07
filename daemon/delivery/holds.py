"""Operator pauses: a small loop that reads ``outbox.channel_pause`` (written by the console,
or by hand) and holds the lanes of the channels listed there, in every daemon sharing the
database, until their row is deleted.

Unlike the circuit breaker (a provider refusing sends, probed after a cool-down), a hold
claims nothing at all, and lasts until an operator lifts it. Sends already in flight
finish; claimed messages not yet started go back to pending without using an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

import asyncpg

logger = logging.getLogger(__name__)

PAUSES = "SELECT channel, reason FROM outbox.channel_pause"


class Holdable(Protocol):
    def hold(self, reason: str) -> None: ...
    def release_hold(self) -> None: ...


class Holds:
    """Keeps each lane held exactly while its channel has a row in outbox.channel_pause."""

    def __init__(self, pool: asyncpg.Pool, lanes: Mapping[str, Holdable], interval: float) -> None:
        self.pool = pool
        self.lanes = lanes
        self.interval = interval

    async def refresh(self) -> None:
        """Read the pauses once and apply them (also before the lanes start)."""
        try:
            rows = await self.pool.fetch(PAUSES, timeout=max(self.interval, 5.0))
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            # Keep the holds as they are: a database we cannot read is no reason to resume.
            logger.warning("could not read channel pauses: %s", exc, extra={"action": "pause"})
            return
        reasons = {row["channel"]: row["reason"] for row in rows}
        for channel, lane in self.lanes.items():
            if channel in reasons:
                lane.hold(reasons[channel])
            else:
                lane.release_hold()

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh every ``interval`` seconds until ``stopping`` is set."""
        while not stopping.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await stopping.wait()
