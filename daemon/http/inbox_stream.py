"""``GET /inbox/stream``: Server-Sent Events for the in-app inbox, fed by the process's
:class:`~daemon.http.inbox_hub.InboxHub`.

``event: item`` (SSE id = the inbox id, data = the item JSON) and ``event: count`` (data =
the /inbox/count JSON, on connect and whenever it changes). With Last-Event-ID (or
``?last_event_id=``) the stream first sends the person's items after it, in id order.
"""

from __future__ import annotations

import contextlib
import random

import asyncpg
from aiohttp import web

from daemon.http import inbox_access as access
from daemon.http.connections import GUARD
from daemon.http.inbox_hub import InboxHub
from daemon.http.inbox_store import InboxStore, dumps, item_dict
from daemon.http.inbox_subscriber import Sink, Subscriber, count_frame, item_frame
from outbox import errors

_REPLAY_PAGE = 500
_MAX_ID = 2**63 - 1

HUB: web.AppKey[InboxHub] = web.AppKey("inbox_hub", InboxHub)
STORE: web.AppKey[InboxStore] = web.AppKey("inbox_stream_store", InboxStore)


def last_event_id(request: web.Request) -> int | None:
    """Where a reconnecting client left off: the Last-Event-ID header, else the
    ``last_event_id`` query parameter (for clients that open a new EventSource)."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > _MAX_ID:
        raise access.Refused(400, "Last-Event-ID must be an inbox item id")
    return int(raw)


@access.guarded
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``item`` (id = inbox id) and ``count``; with Last-Event-ID,
    first the person's items after it, in id order."""
    hub, store = request.app[HUB], request.app[STORE]
    claim = access.claim(request)
    after = last_event_id(request)
    subscriber = hub.subscribe(claim.key, claim.expires)
    try:
        # Subscribed first: what commits from now on is queued, what committed before is
        # in the replay or the counts below.
        replay = await store.replay(claim.key, after, _REPLAY_PAGE) if after is not None else []
        response = web.StreamResponse(
            headers={
                **access.cors_headers(request),
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache, no-transform",
                # nginx would otherwise buffer the stream.
                "X-Accel-Buffering": "no",
            }
        )
        # A client that went away, or a database that did, ends the stream; the client
        # reconnects (if it is still there) and catches up.
        with contextlib.suppress(ConnectionResetError, errors.DatabaseError):
            await response.prepare(request)
            transport = request.transport
            if transport is not None:
                subscriber.on_overflow = transport.abort
            guard = request.app.get(GUARD)
            if guard is not None:  # streams are bounded by OUTBOXD_INBOX__MAX_STREAMS
                guard.long_lived(transport)
            await _serve(request, response, subscriber, store, claim.key, after, replay)
        return response
    finally:
        hub.unsubscribe(subscriber)


async def _serve(
    request: web.Request,
    response: web.StreamResponse,
    subscriber: Subscriber,
    store: InboxStore,
    key: str,
    after: int | None,
    replay: list[asyncpg.Record],
) -> None:
    # Reconnections spread over a few seconds, so that a restart is not met by every client
    # at the same instant.
    await response.write(f"retry: {random.randint(1000, 5000)}\n\n".encode())
    last_sent = after or 0
    replayed: set[int] = set()
    while replay:
        for row in replay:
            await response.write(item_frame(row["id"], dumps(item_dict(row))))
            replayed.add(row["id"])
            last_sent = row["id"]
        if len(replay) < _REPLAY_PAGE:
            break
        replay = await store.replay(key, last_sent, _REPLAY_PAGE)
    counts = await store.counts(key)
    subscriber.counts = (counts.unread, counts.unseen)
    # The first count carries the person's newest item id, so that even a client that has
    # received no item yet reconnects with a Last-Event-ID and misses nothing in between.
    newest = counts.newest if counts.newest > last_sent else None
    await response.write(count_frame(counts, newest))

    sink = _socket_sink(request, response, replayed, subscriber.limit)
    for item_id, frame in subscriber.go_live(sink):
        if not sink(item_id, frame):
            subscriber.drop()
    await subscriber.closed_wait()


def _socket_sink(
    request: web.Request, response: web.StreamResponse, replayed: set[int], limit: int
) -> Sink:
    """Writes frames to the response's socket directly, in the response's own framing
    (HTTP/1.1 chunks), skipping items the replay already sent."""
    chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"

    def sink(item_id: int, frame: bytes) -> bool:
        if item_id and item_id in replayed:
            return True
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > limit:
            return False  # the client is not reading
        transport.write(b"%x\r\n%s\r\n" % (len(frame), frame) if chunked else frame)
        return True

    return sink
