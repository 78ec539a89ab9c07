"""What a slow or greedy client may hold: a cap on open connections, a deadline for each
request head and body, and a file-descriptor budget that leaves delivery its share.

aiohttp on its own accepts every connection and waits for a request head as long as the
keep-alive timeout (an hour): 2,000 clients trickling header bytes exhaust the process's
file descriptors, and then the sends fail. Here each server's listening socket hands its
connections to a :class:`ConnectionGuard`, which

* keeps at most ``limit`` connections open: at the cap, the connection that has been
  waiting longest for a request head is closed to make room (a client that is being
  served is never cut off), and if every connection is busy the new one is closed;
* closes a connection that has not sent a complete request head within ``head_timeout``
  seconds of connecting or of its previous response (the same as an idle keep-alive);
* answers 408 to a request whose body does not arrive within ``body_timeout`` seconds.

:func:`raise_file_limit` lifts the soft RLIMIT_NOFILE to the hard limit at start, and
:func:`connection_budget` keeps the HTTP cap to a quarter of it.
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
    """Admits, times and evicts the connections of one listening server."""

    def __init__(self, *, name: str, limit: int, head_timeout: float, body_timeout: float) -> None:
        self.name = name
        self.limit = limit
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        #: Connections waiting for a request head, oldest first, with when they began to.
        self._idle: OrderedDict[asyncio.Transport, float] = OrderedDict()
        #: Connections whose request is being handled.
        self._busy: set[asyncio.Transport] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def open(self) -> int:
        return len(self._idle) + len(self._busy)

    def protocol_factory(
        self, inner: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that guards ``inner``'s protocols."""
        return lambda: _GuardedProtocol(self, inner())

    def start(self) -> None:
        self._schedule_sweep()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # Called by the protocol wrapper.

    def admit(self, transport: asyncio.Transport) -> bool:
        if self.open >= self.limit:
            if not self._idle:
                self._closed("refused")
                return False
            oldest = next(iter(self._idle))
            self._forget(oldest)
            oldest.abort()
            self._closed("evicted")
        self._idle[transport] = asyncio.get_running_loop().time()
        self._gauge()
        return True

    def forget(self, transport: asyncio.Transport) -> None:
        self._forget(transport)
        self._gauge()

    # Called around each request by the middleware.

    def busy(self, transport: asyncio.Transport | None) -> None:
        if transport is not None and self._idle.pop(transport, None) is not None:
            self._busy.add(transport)

    def idle(self, transport: asyncio.Transport | None) -> None:
        if transport is not None and transport in self._busy:
            self._busy.discard(transport)
            self._idle[transport] = asyncio.get_running_loop().time()

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

    def _forget(self, transport: asyncio.Transport) -> None:
        self._idle.pop(transport, None)
        self._busy.discard(transport)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(1.0, self.head_timeout / 4), self._sweep)

    def _sweep(self) -> None:
        """Close connections that have waited too long for a request head."""
        deadline = asyncio.get_running_loop().time() - self.head_timeout
        while self._idle:
            transport, since = next(iter(self._idle.items()))
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
    """Passes everything to aiohttp's protocol, telling the guard of arrivals and exits."""

    __slots__ = ("_admitted", "_guard", "_inner", "_transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self._guard = guard
        self._inner: Any = inner
        self._transport: asyncio.Transport | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if not self._guard.admit(transport):
            transport.abort()
            return
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        assert self._transport is not None
        self._guard.forget(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
