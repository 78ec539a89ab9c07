"""What a slow or greedy client may hold: a cap on open connections, a deadline for each
request head and body, and a file-descriptor budget that leaves delivery its share.

aiohttp on its own accepts every connection and waits for a request head as long as its
keep-alive timeout (an hour): 2,000 clients trickling header bytes exhaust the process's
file descriptors, and then the sends fail. Here each server's listening socket hands its
connections to a :class:`ConnectionGuard`, which

* buffers a connection's bytes until its request head is complete (at most
  :data:`MAX_HEAD_BYTES`, else 431; ASCII only, else 400) and only then hands it to
  aiohttp, so that a slow head costs a small buffer, not a request handler;
* keeps at most ``limit`` connections open: at the cap, the connection that has waited
  longest for its head is closed to make room (one whose head has arrived, or that is
  being served, never is), and if every connection is being served the new one is closed;
* closes a connection that has not sent a complete request head within ``head_timeout``
  seconds of connecting or of its previous response (the same as an idle keep-alive);
* answers 408 to a request whose body does not arrive within ``body_timeout`` seconds.

:func:`raise_file_limit` lifts the soft RLIMIT_NOFILE to the hard limit at start, and
:func:`connection_budget` keeps the HTTP cap to a quarter of it (connections being closed
and those accepted in one turn of the loop come on top: at most twice the cap in all).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon import metrics

logger = logging.getLogger(__name__)

#: Share of the file-descriptor limit the public HTTP server may hold.
HTTP_SHARE_OF_FILES = 4
#: A request head longer than this is refused (431) before aiohttp sees the connection.
MAX_HEAD_BYTES = 32 * 1024
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
_HEAD_NOT_ASCII = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 26\r\n"
    b"Connection: close\r\n\r\nrequest head is not ASCII\n"
)
#: The kernel's queue of connections not yet accepted: deep, so that a flood does not
#: drop the SYNs of real clients. (asyncio accepts up to the backlog given to
#: ``create_server`` per turn of the loop, which stays at aiohttp's 128: batches larger
#: than the cap would push out newcomers before their first bytes are read.)
LISTEN_BACKLOG = 4096


def raise_file_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the soft limit now set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit: %s", exc)
    return soft


def connection_budget(wanted: int, file_limit: int) -> int:
    """``wanted`` connections, at most a quarter of ``file_limit`` (the rest stays for the
    database pool, SMTP and AWS connections, files and the claim loops)."""
    budget = max(1, min(wanted, file_limit // HTTP_SHARE_OF_FILES))
    if budget < wanted:
        logger.warning(
            "HTTP connections capped at %d: a quarter of the open-files limit (%d)",
            budget,
            file_limit,
            extra={"action": "start"},
        )
    return budget


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
        return lambda: _GuardedProtocol(self, inner)

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


class _GuardedProtocol(asyncio.Protocol):
    """Holds a new connection's bytes until its request head is complete, and only then
    hands the connection to aiohttp's protocol: a slow head never costs more than this
    object and its buffer. Tells the guard of arrivals, progress and exits."""

    __slots__ = ("_guard", "_head", "_inner", "_make_inner", "_tail", "_transport")

    def __init__(self, guard: ConnectionGuard, make_inner: Callable[[], asyncio.BaseProtocol]):
        self._guard = guard
        self._make_inner = make_inner
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._head: bytearray | None = bytearray()
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        if not self._guard.admit(transport):
            transport.abort()
            return
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return  # turned away at the door
        self._guard.forget(self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        head_complete = b"\r\n\r\n" in self._tail + data
        self._tail = (self._tail + data)[-3:]
        # A complete head protects the connection from eviction at once: aiohttp takes a
        # moment to hand it to a handler, in which a flood of newcomers could push it out.
        self._guard.received(transport, head_complete)
        if self._inner is not None:
            self._inner.data_received(data)
            return
        assert self._head is not None
        self._head += data
        if not head_complete:
            if len(self._head) > MAX_HEAD_BYTES:
                transport.write(_HEAD_TOO_LARGE)
                transport.close()
            return
        buffered, self._head = bytes(self._head), None
        head_end = buffered.find(b"\r\n\r\n")
        if not buffered[:head_end].isascii():
            # aiohttp keeps such bytes as surrogates, which some of its own error paths
            # cannot encode again (an Expect header of them is a 500); no client of ours
            # needs them (RFC 9110 obs-text).
            transport.write(_HEAD_NOT_ASCII)
            transport.close()
            return
        self._inner = self._make_inner()
        self._inner.connection_made(transport)
        self._inner.data_received(buffered)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None  # a head that will never end: close
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


#: The guard of the server an app is served by (set when the server starts).
GUARD = web.AppKey("connection_guard", ConnectionGuard)
