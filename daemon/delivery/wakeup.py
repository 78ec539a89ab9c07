"""LISTEN for new-message notifications on a dedicated connection, reconnecting forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from outbox.store import DRIVER_ERRORS

logger = logging.getLogger(__name__)

CHANNEL = "outbox_message"
_KEEPALIVE_SECONDS = 15.0


class WakeupListener:
    """Wakes the lanes when new messages are committed (NOTIFY outbox_message, or the
    given ``channel``)."""

    def __init__(
        self, dsn: str | None, on_notify: Callable[[], None], *, channel: str = CHANNEL
    ) -> None:
        #: None behind a transaction pooler without a direct DSN: nothing to listen on,
        #: the lanes poll.
        self.dsn = dsn
        self.on_notify = on_notify
        self.channel = channel
        self._stopping = asyncio.Event()
        self.connected = False

    def stop(self) -> None:
        self._stopping.set()

    def _callback(self, *_: Any) -> None:
        self.on_notify()

    async def run(self) -> None:
        if self.dsn is None:
            await self._stopping.wait()
            return
        failures = 0
        while not self._stopping.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10)
                await conn.add_listener(self.channel, self._callback)
                self.connected = True
                if failures:
                    logger.info("LISTEN connection restored", extra={"action": "listen"})
                failures = 0
                # Notifications sent while we were away are lost: look once now.
                self.on_notify()
                await self._watch(conn)
            except DRIVER_ERRORS as exc:
                failures += 1
                delay = min(0.5 * 2**failures, 15.0)
                logger.warning(
                    "LISTEN connection lost, retrying in %.1fs: %s", delay, exc,
                    extra={"action": "listen"},
                )  # fmt: skip
                await self._pause(delay)
            finally:
                self.connected = False
                if conn is not None and not conn.is_closed():
                    # Closing a connection the server already dropped may fail: it is gone.
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await conn.close(timeout=2)

    async def _watch(self, conn: asyncpg.Connection) -> None:
        # A periodic query notices a dead server on a half-open socket.
        while not self._stopping.is_set():
            await self._pause(_KEEPALIVE_SECONDS)
            if self._stopping.is_set():
                return
            await conn.execute("SELECT 1", timeout=10)

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass
