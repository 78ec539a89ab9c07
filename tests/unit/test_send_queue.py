"""SendQueue against a send of our own making: concurrency, hand-over, shutdown, deadlines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from daemon.delivery.deadlines import Deadlines
from daemon.delivery.send_queue import SendQueue
from outbox.models import Message, Status
from outbox.store import Completion


def _message(i: int) -> Message:
    now = datetime.now(UTC)
    return Message(i, "email", f"u{i}@example.com", "t", {}, "transactional", 1, None, {}, 1,
                   None, now)  # fmt: skip


class _Recorder:
    def __init__(self, *, pause: float = 0.0, timeout: float = 5.0, concurrency: int = 3) -> None:
        self.pause = pause
        self.in_flight = 0
        self.most_in_flight = 0
        self.finished: list[Completion] = []
        self.changed = asyncio.Event()
        self.senders = SendQueue(
            concurrency=concurrency,
            deadlines=Deadlines(timeout),
            send=self.send,
            timed_out=lambda m: Completion(m.id, m.attempts, Status.PENDING, error="timed out"),
            finished=self.record,
        )

    async def send(self, message: Message) -> Completion:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.pause:
                await asyncio.sleep(self.pause)
        finally:
            self.in_flight -= 1
        return Completion(message.id, message.attempts, Status.SENT)

    def record(self, completion: Completion) -> None:
        self.finished.append(completion)
        self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.finished) < count:
                self.changed.clear()
                await self.changed.wait()


async def test_slow_sends_run_up_to_the_concurrency_and_all_finish() -> None:
    r = _Recorder(pause=0.05)
    r.senders.add([_message(i) for i in range(10)])
    await r.until(10)
    assert r.most_in_flight == 3
    assert sorted(c.message_id for c in r.finished) == list(range(10))


async def test_messages_added_as_the_last_sender_finishes_are_still_sent() -> None:
    r = _Recorder(concurrency=1)
    r.senders.add([_message(1)])
    await r.until(1)  # the sender has returned, whether or not its callbacks ran
    r.senders.add([_message(2)])
    await r.until(2)
    for _ in range(3):
        r.senders.add([_message(3)])
        await asyncio.sleep(0)
    await r.until(5)


async def test_drain_gives_back_the_waiting_and_cuts_off_what_runs_too_long() -> None:
    r = _Recorder(pause=10)
    r.senders.add([_message(i) for i in range(5)])
    await asyncio.sleep(0.05)
    assert await r.senders.drain(0.1) == 3
    by_id = {c.message_id: c for c in r.finished}
    assert len(by_id) == 5
    assert {by_id[i].error for i in (3, 4)} == {
        "claimed but not started (shutdown or paused channel); not sent"
    }
    assert all(by_id[i].status == Status.PENDING and by_id[i].refund for i in (3, 4))
    assert all("interrupted" in (by_id[i].error or "") for i in (0, 1, 2))


async def test_a_send_past_the_deadline_fails_and_the_sender_goes_on() -> None:
    r = _Recorder(pause=0.3, timeout=0.1)
    r.senders.add([_message(i) for i in range(4)])
    await r.until(4)
    by_id = {c.message_id: c for c in r.finished}
    assert {by_id[i].error for i in range(3)} == {"timed out"}
    # The fourth waited the whole wait limit (here the timeout) for a sender: given back
    # unsent, so that its lease outlasts any send it starts.
    assert by_id[3].status == Status.PENDING and by_id[3].refund
    assert "waited too long" in (by_id[3].error or "")
    assert r.senders.busy == 0


async def test_a_slow_destination_keeps_to_its_own_slots() -> None:
    sent: list[int] = []
    progress = asyncio.Event()

    async def send(message: Message) -> Completion:
        await asyncio.sleep(10 if message.recipient.endswith("@slow.example") else 0.001)
        sent.append(message.id)
        progress.set()
        return Completion(message.id, message.attempts, Status.SENT)

    finished: list[Completion] = []
    queue = SendQueue(
        concurrency=4, deadlines=Deadlines(30), send=send,
        timed_out=lambda m: Completion(m.id, m.attempts, Status.PENDING),
        finished=finished.append, destination=lambda m: m.recipient.rpartition("@")[2],
        per_destination=2,
    )  # fmt: skip
    # The slow ones first: they must not take every sender.
    queue.add([_message(i)._replace(recipient="x@slow.example") for i in range(8)])
    async with asyncio.timeout(5):
        for first in range(10, 30, 5):
            queue.add([_message(i) for i in range(first, first + 5)])
            while len(sent) < first - 5:
                progress.clear()
                await progress.wait()
    assert sorted(sent) == list(range(10, 30))
    assert queue.busy == 2  # the slow destination's own two slots
    await queue.drain(0)


async def test_messages_claimed_after_the_drain_go_straight_back() -> None:
    # A claim that was in flight when shutdown began returns after the drain: its rows
    # must not sit in the queue, leased, until their lease runs out.
    r = _Recorder()
    assert await r.senders.drain(1.0) == 0
    r.senders.add([_message(1), _message(2)])
    assert [(c.message_id, c.status, c.refund) for c in r.finished] == [
        (1, Status.PENDING, True),
        (2, Status.PENDING, True),
    ]
    assert not r.senders.waiting
