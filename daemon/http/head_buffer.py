"""The first thing a connection meets: its bytes are held until its request head is
complete (at most :data:`MAX_HEAD_BYTES`, else 431; ASCII only, else 400), and only then is
the connection handed to aiohttp, so that a slow head costs a small buffer, not a request
handler. Who may connect, and for how long, is the :class:`Admission`'s decision
(:class:`~daemon.http.connections.ConnectionGuard`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, cast

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


class Admission(Protocol):
    """What the protocol tells about its connection: its arrival (False: turn it away),
    its bytes (whether the request head is complete) and its end."""

    def admit(self, transport: asyncio.Transport) -> bool: ...

    def received(self, transport: asyncio.Transport, head_complete: bool) -> None: ...

    def forget(self, transport: asyncio.Transport) -> None: ...


class HeadBufferProtocol(asyncio.Protocol):
    """Holds a new connection's bytes until its request head is complete, and only then
    hands the connection to aiohttp's protocol: a slow head never costs more than this
    object and its buffer. Tells the guard of arrivals, progress and exits."""

    __slots__ = ("_guard", "_head", "_inner", "_make_inner", "_tail", "_transport")

    def __init__(self, guard: Admission, make_inner: Callable[[], asyncio.BaseProtocol]):
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
