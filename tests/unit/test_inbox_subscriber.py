"""A stream's subscriber: frames queued until it goes live, then written through its sink;
a client too far behind is dropped."""

from __future__ import annotations

import asyncio

from daemon.http.inbox_store import Counts
from daemon.http.inbox_subscriber import Subscriber, count_frame, item_frame


async def test_frames_wait_until_live_then_go_straight_to_the_sink() -> None:
    subscriber = Subscriber("u1", expires=0, limit=1024)
    subscriber.push(1, b"a")
    subscriber.push(0, b"b")
    written: list[tuple[int, bytes]] = []

    def sink(item_id: int, frame: bytes) -> bool:
        written.append((item_id, frame))
        return True

    assert subscriber.go_live(sink) == [(1, b"a"), (0, b"b")]
    subscriber.push(2, b"c")
    assert written == [(2, b"c")]


async def test_close_ends_the_wait_and_ignores_later_frames() -> None:
    subscriber = Subscriber("u1", expires=0, limit=1024)
    waiting = asyncio.create_task(subscriber.closed_wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    subscriber.close()
    await waiting
    subscriber.push(3, b"ignored")
    assert subscriber.go_live(lambda i, f: True) == []


async def test_a_client_too_far_behind_is_dropped() -> None:
    dropped: list[bool] = []
    subscriber = Subscriber("u1", expires=0, limit=10)
    subscriber.on_overflow = lambda: dropped.append(True)
    subscriber.push(1, b"12345")
    subscriber.push(2, b"67890")
    assert not subscriber.closed
    subscriber.push(3, b"x")  # 11 bytes queued
    assert subscriber.closed and dropped == [True]
    # Live, the sink decides: it refuses when the socket's unsent bytes are over the limit.
    live = Subscriber("u1", expires=0, limit=10)
    live.on_overflow = lambda: dropped.append(True)
    live.go_live(lambda i, f: False)
    live.push(4, b"y")
    assert live.closed and dropped == [True, True]


def test_frames_are_server_sent_events() -> None:
    assert item_frame(7, '{"id":7}') == b'event: item\nid: 7\ndata: {"id":7}\n\n'
    counts = Counts(unread=2, unseen=1)
    assert count_frame(counts) == b'event: count\ndata: {"unread":2,"unseen":1}\n\n'
    assert count_frame(counts, 9) == b'event: count\nid: 9\ndata: {"unread":2,"unseen":1}\n\n'
