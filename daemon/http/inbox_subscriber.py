"""One open inbox stream as the hub sees it (:class:`Subscriber`), and the Server-Sent
Events frames the hub writes to it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from daemon.http.inbox_store import Counts

#: A comment line: keeps proxies from closing an idle stream, and finds clients gone.
HEARTBEAT = b": keep-alive\n\n"

#: Writes one frame to a live stream's socket; False when the client is gone or too far
#: behind, which ends the stream.
Sink = Callable[[int, bytes], bool]


class Subscriber:
    """One open stream: its person, and where its frames go.

    Until the stream has sent its opening (replay and counts), frames wait in a short
    queue; then the stream goes live, and the hub writes each frame straight to the socket
    through :attr:`sink`, waking nobody: one write per client, however many clients.
    """

    __slots__ = ("_done", "_frames", "_queued", "closed", "counts", "expires", "key", "limit",
                 "on_overflow", "sink")  # fmt: skip

    def __init__(self, key: str, expires: int, limit: int) -> None:
        self.key = key
        self.expires = expires
        #: Bytes a client may be behind (queued here, or unsent in its socket's buffer).
        self.limit = limit
        self._frames: list[tuple[int, bytes]] = []
        self._queued = 0
        self._done = asyncio.Event()
        self.closed = False
        #: The counts this client was last told (None until the stream has sent them).
        self.counts: tuple[int, int] | None = None
        self.sink: Sink | None = None
        self.on_overflow: Callable[[], None] | None = None

    def push(self, item_id: int, frame: bytes) -> None:
        """Send (or queue) a frame; ``item_id`` is 0 for anything but an item. A client
        that falls ``limit`` bytes behind is dropped: it reconnects and catches up."""
        if self.closed:
            return
        if self.sink is not None:
            if not self.sink(item_id, frame):
                self.drop()
            return
        self._queued += len(frame)
        if self._queued > self.limit:
            self.drop()
            return
        self._frames.append((item_id, frame))

    def go_live(self, sink: Sink) -> list[tuple[int, bytes]]:
        """From now on frames go to ``sink``; returns those queued so far, to be written
        before anything else (there is no await between the two)."""
        frames, self._frames, self._queued = self._frames, [], 0
        self.sink = sink
        return frames

    def close(self) -> None:
        """End the stream."""
        self.closed = True
        self._done.set()

    def drop(self) -> None:
        """End the stream at once, without what is still unsent."""
        self.close()
        self._frames.clear()
        if self.on_overflow is not None:
            self.on_overflow()

    async def closed_wait(self) -> None:
        await self._done.wait()


def item_frame(item_id: int, item_json: str) -> bytes:
    return f"event: item\nid: {item_id}\ndata: {item_json}\n\n".encode()


def count_frame(counts: Counts, event_id: int | None = None) -> bytes:
    id_line = f"id: {event_id}\n" if event_id else ""
    return f"event: count\n{id_line}data: {counts.as_json()}\n\n".encode()
