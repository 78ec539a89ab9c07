"""A stream's queue: frames in order, a bounded length, and a clean end."""

from __future__ import annotations

import asyncio

from daemon.http.inbox_hub import Subscriber, count_frame, item_frame
from daemon.http.inbox_store import Counts


async def test_frames_come_out_in_order_then_none_once_closed() -> None:
    subscriber = Subscriber("u1", expires=0, limit=8)
    subscriber.push(1, b"a")
    subscriber.push(0, b"b")
    subscriber.close()
    subscriber.push(2, b"ignored after close")
    assert await subscriber.take() == [(1, b"a"), (0, b"b")]
    assert await subscriber.take() is None


async def test_a_waiting_reader_wakes_on_push() -> None:
    subscriber = Subscriber("u1", expires=0, limit=8)
    waiting = asyncio.create_task(subscriber.take())
    await asyncio.sleep(0)
    assert not waiting.done()
    subscriber.push(5, b"x")
    assert await waiting == [(5, b"x")]


async def test_a_client_a_whole_queue_behind_is_dropped() -> None:
    dropped: list[bool] = []
    subscriber = Subscriber("u1", expires=0, limit=3)
    subscriber.on_overflow = lambda: dropped.append(True)
    for i in range(3):
        subscriber.push(i + 1, b"f")
    assert not subscriber.closed
    subscriber.push(4, b"one too many")
    assert subscriber.closed and dropped == [True]
    assert await subscriber.take() is None  # its queue is freed at once


def test_frames_are_server_sent_events() -> None:
    assert item_frame(7, '{"id":7}') == b'event: item\nid: 7\ndata: {"id":7}\n\n'
    counts = Counts(unread=2, unseen=1)
    assert count_frame(counts) == b'event: count\ndata: {"unread":2,"unseen":1}\n\n'
    assert count_frame(counts, 9) == b'event: count\nid: 9\ndata: {"unread":2,"unseen":1}\n\n'
