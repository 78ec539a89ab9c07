"""Operator pauses: a held lane claims nothing until released, and the holds loop follows
outbox.channel_pause (in-memory store, virtual time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.delivery.holds import Holds
from outbox.models import Status
from tests.unit.test_lane import Daemon

pytestmark = pytest.mark.virtual_time


class Pauses:
    """Stands in for the pool: the rows of outbox.channel_pause, or a failure."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.error: Exception | None = None

    async def fetch(self, query: str, *args: Any, **options: Any) -> list[Any]:
        if self.error is not None:
            raise self.error
        return list(self.rows)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(tmp_path)
    yield daemon
    for task in daemon.tasks:
        task.cancel()
    await asyncio.gather(*daemon.tasks, return_exceptions=True)


async def test_a_held_lane_claims_nothing_until_released(daemon: Daemon) -> None:
    pauses = Pauses()
    holds = Holds(pauses, {"email": daemon.lane}, interval=2.0)  # type: ignore[arg-type]
    pauses.rows = [{"channel": "email", "reason": "DNS move"}]
    await holds.refresh()
    daemon.store.add(10)
    daemon.start()
    await asyncio.sleep(600)
    assert daemon.store.claims == [] and daemon.lane.hold_reason == "DNS move"
    pauses.rows = []
    await holds.refresh()
    await daemon.all(Status.SENT)
    assert daemon.lane.hold_reason is None


async def test_the_holds_loop_follows_the_table_and_keeps_holds_it_cannot_read(
    daemon: Daemon,
) -> None:
    pauses = Pauses()
    holds = Holds(pauses, {"email": daemon.lane}, interval=2.0)  # type: ignore[arg-type]
    stopping = asyncio.Event()
    loop = asyncio.create_task(holds.run(stopping))
    pauses.rows = [{"channel": "email", "reason": "bounces climbing"}]
    await asyncio.sleep(3)
    assert daemon.lane.hold_reason == "bounces climbing"
    pauses.error = asyncpg.PostgresConnectionError("connection lost")
    pauses.rows = []
    await asyncio.sleep(10)
    assert daemon.lane.hold_reason == "bounces climbing"  # not resumed by an outage
    pauses.error = None
    await asyncio.sleep(3)
    assert daemon.lane.hold_reason is None
    stopping.set()
    await loop
