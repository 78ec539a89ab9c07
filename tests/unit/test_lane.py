"""Lane: claims only what it can send, waits for a congested completer, probes a paused
channel once per cool-down, and stops without losing a row (in-memory store, virtual time).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.delivery.completer import Completer
from daemon.delivery.dispatch import Dispatcher
from daemon.delivery.lane import Lane
from daemon.settings import WorkerSettings
from outbox import errors
from outbox.models import Status
from tests.unit import fakes

pytestmark = pytest.mark.virtual_time

CONCURRENCY = 4
COOL_DOWN = 60.0


class Daemon:
    """The lane with what the daemon gives it: dispatcher, completer, pause callback."""

    def __init__(self, directory: Path, *, send_timeout: float = 1000.0, **worker: Any) -> None:
        self.store = fakes.MemoryStore()
        self.provider = fakes.ScriptedProvider()
        settings = WorkerSettings(
            **{"concurrency": CONCURRENCY, "batch_size": 100, "poll_interval": 5.0,
               "pause_seconds": COOL_DOWN, "max_attempts": 3, **worker}
        )  # fmt: skip
        self.completer = Completer(self.store, "w1")  # type: ignore[arg-type]
        dispatcher = Dispatcher(
            renderer=fakes.renderer(directory),
            providers={"email": self.provider},
            worker=settings,
            on_paused=lambda channel, reason: self.lane.pause(reason),
        )
        self.lane = Lane(
            "email",
            store=self.store,  # type: ignore[arg-type]
            dispatcher=dispatcher,
            completer=self.completer,
            worker=settings,
            worker_id="w1",
            send_timeout=send_timeout,
        )
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.completer.run()),
            asyncio.create_task(self.lane.run()),
        ]

    async def stop(self, grace: float = 30.0) -> int:
        self.lane.stop()
        await self.tasks[1]
        cancelled = await self.lane.drain(grace)
        self.completer.stop()
        await self.tasks[0]
        return cancelled

    async def all(self, status: Status) -> None:
        await self.store.wait_for(
            lambda: len(self.store.with_status(status)) == len(self.store.rows)
        )

    @property
    def claimed(self) -> int:
        return sum(len(claim.ids) for claim in self.store.claims)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(tmp_path)
    yield daemon
    for task in daemon.tasks:
        task.cancel()
    await asyncio.gather(*daemon.tasks, return_exceptions=True)


async def test_claims_only_as_many_rows_as_it_has_free_slots(daemon: Daemon) -> None:
    daemon.store.add(30)
    daemon.provider.gate = gate = asyncio.Event()  # every send hangs
    daemon.start()
    await daemon.provider.wait_for(lambda: daemon.provider.in_flight == CONCURRENCY)
    await asyncio.sleep(600)  # ten minutes of slow sends: nothing more is claimed
    # The slots, and as many claimed rows waiting for one (they never outlive a lease).
    assert [(claim.limit, len(claim.ids)) for claim in daemon.store.claims] == [(8, 8)]
    assert daemon.provider.in_flight == CONCURRENCY
    gate.set()
    await daemon.all(Status.SENT)
    assert all(claim.limit <= 2 * CONCURRENCY for claim in daemon.store.claims)
    assert daemon.provider.most_in_flight == CONCURRENCY
    assert sorted(daemon.provider.accepted) == list(range(1, 31))


async def test_claims_nothing_while_the_completer_cannot_keep_up(daemon: Daemon) -> None:
    daemon.store.add(200)
    daemon.store.write_gate = gate = asyncio.Event()  # sends are quick, the database is not
    daemon.start()
    await asyncio.sleep(600)  # the first write hangs; the results of quick sends pile up
    assert daemon.completer.backlog > 4 * CONCURRENCY  # four a slot: congested
    claimed = daemon.claimed
    assert claimed <= 4 * CONCURRENCY + 2 * CONCURRENCY
    await asyncio.sleep(600)
    assert daemon.claimed == claimed  # no claim while results wait to be written
    gate.set()
    await daemon.all(Status.SENT)
    assert daemon.claimed == 200


async def test_a_paused_channel_probes_early_then_once_per_cool_down(daemon: Daemon) -> None:
    daemon.store.add(30)
    daemon.provider.error = errors.ChannelPaused("sending paused for the account")
    daemon.start()
    await daemon.store.wait_for(lambda: daemon.lane.pause_reason is not None)
    probe_times = [COOL_DOWN * n / 8 for n in (1, 3, 7, 15, 23)]  # gaps 1/8, 1/4, 1/2, 1, 1
    await asyncio.sleep(probe_times[-1] + 1)
    first, *probes = daemon.store.claims
    assert (first.at, first.limit) == (0.0, 2 * CONCURRENCY)
    assert [(claim.limit, len(claim.ids)) for claim in probes] == [(1, 1)] * 5
    assert [claim.at for claim in probes] == pytest.approx(probe_times, abs=1e-3)
    assert daemon.lane.pause_reason == "sending paused for the account"
    # The provider takes sends again: the next probe goes through, and the lane resumes at
    # once rather than after another cool-down.
    daemon.provider.error = None
    await daemon.all(Status.SENT)
    assert daemon.lane.pause_reason is None
    # (within a poll interval: a claim that resumes its scan may first find too little)
    assert probe_times[-1] + COOL_DOWN <= fakes.now() < probe_times[-1] + COOL_DOWN + 5.0
    assert max(claim.limit for claim in daemon.store.claims[6:]) > 1
    # Refused sends used no attempt: each row counts only the send that went through.
    assert {row.attempts for row in daemon.store.rows.values()} == {1}


async def test_a_database_error_while_claiming_is_retried(daemon: Daemon) -> None:
    daemon.store.add(5)
    daemon.store.failing_claims = 2
    daemon.start()
    await daemon.all(Status.SENT)
    assert fakes.now() == pytest.approx(0.4 + 0.8, abs=1e-3)  # backoff between claims


async def test_stop_gives_back_what_waits_and_cuts_off_what_outlives_the_grace(
    daemon: Daemon,
) -> None:
    daemon.store.add(10)
    daemon.provider.gate = asyncio.Event()  # sends that never finish
    daemon.start()
    await daemon.provider.wait_for(lambda: daemon.provider.in_flight == CONCURRENCY)
    stopped_at = fakes.now()
    assert await daemon.stop(grace=30.0) == CONCURRENCY
    assert fakes.now() - stopped_at == pytest.approx(30.0, abs=1e-3)
    rows = daemon.store.rows.values()
    assert daemon.store.with_status(Status.SENDING) == []  # nothing is left leased
    interrupted = [r for r in rows if r.error and r.error.startswith("interrupted by shutdown")]
    given_back = [r for r in rows if r.error and r.error.startswith("claimed but not started")]
    never_claimed = [r for r in rows if r.error is None]
    assert (len(interrupted), len(given_back), len(never_claimed)) == (4, 4, 2)
    assert {r.attempts for r in interrupted} == {1}  # they may have been sent
    assert {r.attempts for r in given_back + never_claimed} == {0}
    assert {r.status for r in rows} == {Status.PENDING}


async def test_stop_lets_sends_finish_within_the_grace(daemon: Daemon) -> None:
    daemon.store.add(10)
    daemon.provider.gate = gate = asyncio.Event()
    daemon.start()
    await daemon.provider.wait_for(lambda: daemon.provider.in_flight == CONCURRENCY)
    stopping = asyncio.create_task(daemon.stop(grace=30.0))
    await asyncio.sleep(10)
    gate.set()
    assert await stopping == 0
    assert fakes.now() == pytest.approx(10.0, abs=1e-3)
    assert len(daemon.store.with_status(Status.SENT)) == CONCURRENCY
    assert len(daemon.store.with_status(Status.PENDING)) == 10 - CONCURRENCY


async def test_a_send_that_outlives_the_send_timeout_is_cut_off_and_retried(
    tmp_path: Path,
) -> None:
    daemon = Daemon(tmp_path, send_timeout=10.0, retry_base_seconds=5.0)
    daemon.store.add(1)
    daemon.provider.gate = gate = asyncio.Event()
    daemon.start()
    try:
        await daemon.store.wait_for(lambda: bool(daemon.store.writes))
        assert fakes.now() == pytest.approx(10.0, abs=1e-3)
        [[cut_off]] = daemon.store.writes
        assert (cut_off.status, cut_off.error) == (
            Status.PENDING, "scripted: no answer within 10s"
        )  # fmt: skip
        assert 0 <= cut_off.retry_delay <= 5.0
        gate.set()  # the provider answers again: the retry goes through
        await daemon.all(Status.SENT)
        assert daemon.store.rows[1].attempts == 2
    finally:
        await daemon.stop()
