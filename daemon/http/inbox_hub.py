"""The in-app inbox's event hub: one ``LISTEN outbox_inbox`` connection per process (migration
0008's triggers signal every new item and every change of a person's counts), fanned out in
memory to the open streams of each person; a client never costs a connection.

* A signal for a person nobody here listens to costs nothing; the others are batched: one
  query fetches the new items, one the changed counts, however many signals arrived
  during the previous batch.
* Frames are written straight to each live stream's socket by the hub (no task per client
  wakes up). A client that falls OUTBOXD_INBOX__STREAM_BUFFER bytes behind is disconnected
  (its memory stays bounded); it reconnects with Last-Event-ID and catches up from the
  database.
* While the LISTEN connection is down, signals are lost: new streams are refused (503,
  Retry-After), and when it is back every stream opened before is ended, so that its
  client reconnects and catches up the same way.
* Heartbeats are comment lines, so that proxies keep idle streams open; they also find
  clients that went away, and end streams whose token has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from daemon.http import inbox_access as access
from daemon.http.inbox_store import Counts, InboxStore, dumps, item_dict
from daemon.http.inbox_subscriber import HEARTBEAT, Subscriber, count_frame, item_frame
from outbox import errors
from outbox.store import DRIVER_ERRORS

logger = logging.getLogger(__name__)

CHANNEL = "outbox_inbox"
_KEEPALIVE_SECONDS = 15.0
_FETCH_CHUNK = 5000


class InboxHub:
    """The process's LISTEN connection and the streams it feeds."""

    def __init__(
        self,
        store: InboxStore,
        *,
        dsn: str | None,
        heartbeat_seconds: float,
        buffer_bytes: int,
        max_streams: int,
    ) -> None:
        self.store = store
        self.dsn = dsn
        self.heartbeat_seconds = heartbeat_seconds
        self.buffer_bytes = buffer_bytes
        self.max_streams = max_streams
        self._by_key: dict[str, set[Subscriber]] = {}
        self.streams = 0
        self._items: set[int] = set()
        self._count_keys: set[str] = set()
        #: Signals whose key was too long for the payload: (kind, id).
        self._unkeyed: set[tuple[str, int]] = set()
        self._work = asyncio.Event()
        self._stopping = asyncio.Event()
        self.closing = False
        #: Set while the LISTEN connection is up; streams are refused (503) otherwise.
        self.listening = asyncio.Event()

    # Streams ----------------------------------------------------------------------------

    def subscribe(self, key: str, expires: int) -> Subscriber:
        if self.closing:
            raise access.Refused(503, "the server is stopping", {"Retry-After": "5"})
        if not self.listening.is_set():
            # A stream now would miss what commits before the LISTEN connection is back.
            raise access.Refused(503, "live updates are not available yet", {"Retry-After": "2"})
        if self.streams >= self.max_streams:
            raise access.Refused(503, "too many open streams", {"Retry-After": "10"})
        subscriber = Subscriber(key, expires, self.buffer_bytes)
        self._by_key.setdefault(key, set()).add(subscriber)
        self.streams += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._by_key.get(subscriber.key)
        if group is None or subscriber not in group:
            return
        group.discard(subscriber)
        if not group:
            del self._by_key[subscriber.key]
        self.streams -= 1

    def close_all(self) -> None:
        """End every open stream (its client reconnects and catches up)."""
        for group in self._by_key.values():
            for subscriber in group:
                subscriber.close()

    # The hub's loops --------------------------------------------------------------------

    def stop(self) -> None:
        self.closing = True
        self.close_all()
        self._stopping.set()
        self._work.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen(), name="inbox-listen")
            group.create_task(self._fan_out(), name="inbox-fan-out")
            group.create_task(self._heartbeats(), name="inbox-heartbeat")

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self.dsn is None:
            # Without a DSN of its own (tests building the app by hand), hold a pooled one.
            async with self.store.pool.acquire() as conn:
                yield conn
            return
        conn = await asyncpg.connect(
            self.dsn, timeout=10, server_settings={"application_name": "outboxd-inbox"}
        )
        try:
            yield conn
        finally:
            with contextlib.suppress(*DRIVER_ERRORS):
                await conn.close(timeout=2)

    async def _listen(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                async with self._connection() as conn:
                    await conn.add_listener(CHANNEL, self._on_signal)
                    try:
                        # Signals sent while no connection listened are lost: streams open
                        # now end, and their clients catch up with Last-Event-ID.
                        self.close_all()
                        self.listening.set()
                        if failures:
                            logger.info("inbox LISTEN restored", extra={"action": "listen"})
                        failures = 0
                        while not self._stopping.is_set():
                            await self._pause(_KEEPALIVE_SECONDS)
                            if not self._stopping.is_set():
                                await conn.execute("SELECT 1", timeout=10)
                    finally:
                        self.listening.clear()
                        if not conn.is_closed():
                            with contextlib.suppress(*DRIVER_ERRORS):
                                await conn.remove_listener(CHANNEL, self._on_signal)
            except DRIVER_ERRORS as exc:
                failures += 1
                delay = min(0.5 * 2**failures, 15.0)
                logger.warning(
                    "inbox LISTEN connection lost, retrying in %.1fs: %s", delay, exc,
                    extra={"action": "listen"},
                )  # fmt: skip
                await self._pause(delay)

    def _on_signal(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            signal = json.loads(payload)
            kind = signal["kind"]
            item_id = int(signal["id"])
            key = signal.get("recipient_key")
        except (ValueError, TypeError, KeyError):
            logger.warning("ignored a malformed %s signal", CHANNEL, extra={"action": "listen"})
            return
        if key is None:
            self._unkeyed.add((kind, item_id))
        elif key in self._by_key:
            if kind == "item":
                self._items.add(item_id)
            self._count_keys.add(key)
        else:
            return
        self._work.set()

    async def _heartbeats(self) -> None:
        while not self._stopping.is_set():
            await self._pause(self.heartbeat_seconds)
            now = time.time()
            for group in list(self._by_key.values()):
                for subscriber in list(group):
                    if now >= subscriber.expires:
                        # The client's reconnection meets a 401 and asks for a new token.
                        subscriber.close()
                    else:
                        subscriber.push(0, HEARTBEAT)

    async def _fan_out(self) -> None:
        while not self._stopping.is_set():
            await self._work.wait()
            # The signals of one commit arrive over several socket reads: gather those
            # already received, so that a burst costs a few queries, not one per read.
            for _ in range(20):
                waiting = len(self._items) + len(self._count_keys) + len(self._unkeyed)
                await asyncio.sleep(0)
                if len(self._items) + len(self._count_keys) + len(self._unkeyed) == waiting:
                    break
            self._work.clear()
            if self._stopping.is_set():
                return
            items, keys, unkeyed = self._items, self._count_keys, self._unkeyed
            self._items, self._count_keys, self._unkeyed = set(), set(), set()
            try:
                await self._deliver(items, keys, unkeyed)
            except errors.DatabaseError as exc:
                # The affected clients missed something: end their streams so that they
                # catch up from the database when they reconnect.
                logger.warning("inbox fan-out failed: %s", exc, extra={"action": "inbox"})
                for key in keys:
                    for subscriber in self._by_key.get(key, ()):
                        subscriber.close()

    async def _deliver(
        self, items: set[int], keys: set[str], unkeyed: set[tuple[str, int]]
    ) -> None:
        if unkeyed:
            owners = await self.store.keys_of([item_id for _, item_id in unkeyed])
            for kind, item_id in unkeyed:
                key = owners.get(item_id)
                if key is not None and key in self._by_key:
                    if kind == "item":
                        items.add(item_id)
                    keys.add(key)
        listening = [key for key in keys if key in self._by_key]
        # The counts are read while the items go out: an item reaches its client without
        # waiting for them (its count follows).
        counting = asyncio.ensure_future(self._counts(listening))
        try:
            ordered = sorted(items)
            for start in range(0, len(ordered), _FETCH_CHUNK):
                for row in await self.store.items(ordered[start : start + _FETCH_CHUNK]):
                    group = self._by_key.get(row["recipient_key"])
                    if group:
                        frame = item_frame(row["id"], dumps(item_dict(row)))
                        for subscriber in list(group):
                            subscriber.push(row["id"], frame)
            counts = await counting
        finally:
            if not counting.done():
                counting.cancel()
                with contextlib.suppress(asyncio.CancelledError, errors.DatabaseError):
                    await counting
        for key, count in counts.items():
            pair = (count.unread, count.unseen)
            frame = count_frame(count)
            for subscriber in list(self._by_key.get(key, ())):
                # A stream that has not sent its first count yet reads its own.
                if subscriber.counts is not None and pair != subscriber.counts:
                    subscriber.counts = pair
                    subscriber.push(0, frame)

    async def _counts(self, keys: list[str]) -> dict[str, Counts]:
        counts: dict[str, Counts] = {}
        for start in range(0, len(keys), _FETCH_CHUNK):
            counts.update(await self.store.counts_many(keys[start : start + _FETCH_CHUNK]))
        return counts
