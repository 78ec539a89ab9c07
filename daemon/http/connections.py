"""What a slow or greedy client may hold: a cap on open connections, a deadline for each
request head and body, and a file-descriptor budget that leaves delivery its share.

aiohttp on its own accepts every connection and waits for a request head as long as its
keep-alive timeout (an hour): 2,000 clients trickling header bytes exhaust the process's
file descriptors, and then the sends fail. Here each server's listening socket hands its
connections to a :class:`ConnectionGuard`, which

* buffers a connection's bytes until its request head is complete (at most
  :data:`~daemon.http.head_buffer.MAX_HEAD_BYTES`, else 431; ASCII only, else 400) and
  only then hands it to aiohttp, so that a slow head costs a small buffer, not a request
  handler;
* keeps at most ``limit`` connections open: at the cap, the connection that has waited
  longest for its head is closed to make room (one whose head has arrived, or that is
  being served, never is), and if every connection is being served the new one is closed;
* closes a connection that has not sent a complete request head within ``head_timeout``
  seconds of connecting or of its previous response (the same as an idle keep-alive);
* answers 408 to a request whose body does not arrive within ``body_timeout`` seconds.

The bytes of a head are held by :class:`~daemon.http.head_buffer.HeadBufferProtocol`;
the cap itself comes from :mod:`daemon.http.file_limits`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon import metrics
from daemon.http.head_buffer import HeadBufferProtocol

#: The kernel's queue of connections not yet accepted: deep, so that a flood does not
#: drop the SYNs of real clients. (asyncio accepts up to the backlog given to
#: ``create_server`` per turn of the loop, which stays at aiohttp's 128: batches larger
#: than the cap would push out newcomers before their first bytes are read.)
LISTEN_BACKLOG = 4096


class ConnectionGuard:
    """Admits, times and evicts the connections of one listening server.

    A connection is *fresh* until its first bytes arrive, then *waiting* while its request
    head is incomplete (or it idles between keep-alive requests), *arrived* once the head
    is complete, and *busy* while a handler serves it. At the cap, a newcomer pushes out
    the longest-waiting connection, else the oldest fresh one, else (every connection is
    being served) it is turned away. Arrived and busy connections are never pushed out:
    that is what a client that sends its request at once, as real ones do, gets.
    """

    def __init__(self, *, name: str, limit: int, head_timeout: float, body_timeout: float) -> None:
        self.name = name
        self.limit = limit
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        # Each with the time the connection began to wait for a head, oldest first.
        self._fresh: OrderedDict[asyncio.Transport, float] = OrderedDict()
        self._waiting: OrderedDict[asyncio.Transport, float] = OrderedDict()
        self._arrived: OrderedDict[asyncio.Transport, float] = OrderedDict()
        self._busy: set[asyncio.Transport] = set()
        #: Long-lived responses (event streams): bounded by their own limit, not the cap.
        self._streams: set[asyncio.Transport] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def open(self) -> int:
        return len(self._fresh) + len(self._waiting) + len(self._arrived) + len(self._busy)

    def protocol_factory(
        self, inner: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that guards ``inner``'s protocols."""
        return lambda: HeadBufferProtocol(self, inner)

    def start(self) -> None:
        self._schedule_sweep()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # Called by the protocol wrapper.

    def admit(self, transport: asyncio.Transport) -> bool:
        now = asyncio.get_running_loop().time()
        if self.open >= self.limit:
            victim = self._victim()
            if victim is None:
                self._closed("refused")
                return False
            self._forget(victim)
            victim.abort()
            self._closed("evicted")
        self._fresh[transport] = now
        self._gauge()
        return True

    def received(self, transport: asyncio.Transport, head_complete: bool) -> None:
        since = self._fresh.pop(transport, None)
        if since is None:
            since = self._waiting.pop(transport, None)
        if since is not None:
            (self._arrived if head_complete else self._waiting)[transport] = since

    def forget(self, transport: asyncio.Transport) -> None:
        self._forget(transport)
        self._gauge()

    # Called around each request by the middleware.

    def busy(self, transport: asyncio.Transport | None) -> None:
        if transport is not None and self._pop_waiting(transport) is not None:
            self._busy.add(transport)

    def long_lived(self, transport: asyncio.Transport | None) -> None:
        """The request on ``transport`` became a long-lived response (an event stream): it
        no longer counts against the cap, so that open streams, which their own setting
        bounds, never turn away the webhook or a page. Until the handler returns."""
        if transport is not None and transport in self._busy:
            self._busy.discard(transport)
            self._streams.add(transport)

    def idle(self, transport: asyncio.Transport | None) -> None:
        if transport is not None and transport in self._streams:
            self._streams.discard(transport)
            self._busy.add(transport)
        if transport is not None and transport in self._busy:
            self._busy.discard(transport)
            self._waiting[transport] = asyncio.get_running_loop().time()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while its request is handled, and bounds the time its
        body may take to arrive."""
        transport = request.transport
        self.busy(transport)
        try:
            if request.can_read_body:
                try:
                    async with asyncio.timeout(self.body_timeout):
                        await request.read()
                except TimeoutError:
                    self._closed("body_timeout")
                    response = web.Response(status=408, text="request body too slow\n")
                    response.force_close()
                    return response
            return await handler(request)
        finally:
            self.idle(transport)

    def _victim(self) -> asyncio.Transport | None:
        for state in (self._waiting, self._fresh):
            if state:
                return next(iter(state))
        return None

    def _pop_waiting(self, transport: asyncio.Transport) -> float | None:
        for state in (self._fresh, self._waiting, self._arrived):
            since = state.pop(transport, None)
            if since is not None:
                return since
        return None

    def _forget(self, transport: asyncio.Transport) -> None:
        self._pop_waiting(transport)
        self._busy.discard(transport)
        self._streams.discard(transport)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(1.0, self.head_timeout / 4), self._sweep)

    def _sweep(self) -> None:
        """Close connections that have waited too long for a request head (or for a
        handler: bytes that end a head may not have been a request)."""
        deadline = asyncio.get_running_loop().time() - self.head_timeout
        for state in (self._fresh, self._waiting, self._arrived):
            while state:
                transport, since = next(iter(state.items()))
                if since > deadline:
                    break
                self._forget(transport)
                transport.abort()
                self._closed("head_timeout")
        self._gauge()
        self._schedule_sweep()

    def _closed(self, reason: str) -> None:
        metrics.HTTP_CONNECTIONS_CLOSED.labels(self.name, reason).inc()

    def _gauge(self) -> None:
        metrics.HTTP_CONNECTIONS.labels(self.name).set(self.open)


#: The guard of the server an app is served by (set when the server starts).
GUARD = web.AppKey("connection_guard", ConnectionGuard)
