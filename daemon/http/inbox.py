"""The in-app inbox over HTTP ("Contract: in-app inbox"): the list, counts, read / unread /
archive, read-all, seen, the event stream (:mod:`daemon.http.inbox_stream`) and the bell
widget. Every route but the widget needs a subscriber token; another person's item is
not found (404), whatever its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from daemon.http import inbox_access as access
from daemon.http import inbox_hub, inbox_stream
from daemon.http.inbox_store import InboxStore, dumps
from daemon.http.state import ServiceState

logger = logging.getLogger(__name__)

STORE: web.AppKey[InboxStore] = web.AppKey("inbox_store", InboxStore)
WIDGET_PATH = Path(__file__).parent / "static" / "outboxd-bell.js"

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_MAX_ID = 2**63 - 1
_MAX_CATEGORY = 200


def _int(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise access.Refused(400, f"{name} must be a whole number")
    value = int(raw)
    if value < low:
        raise access.Refused(400, f"{name} must be at least {low}")
    return min(value, high)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise access.Refused(400, f"{name} must be 1 or 0")


def _item_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    value = int(raw)  # the route only matches digits
    if value > _MAX_ID:
        raise access.Refused(404, "no such item")
    return value


@access.guarded
async def list_items(request: web.Request) -> web.Response:
    """``GET /inbox``: newest first, ``?limit=&before=&unread=1&category=&archived=1``."""
    key = access.claim(request).key
    limit = _int(request, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
    before = _int(request, "before", 1, _MAX_ID)
    category = request.query.get("category") or None
    if category is not None and len(category) > _MAX_CATEGORY:
        raise access.Refused(400, "category is too long")
    if category is not None and "\x00" in category:
        raise access.Refused(400, "category must not contain NUL")  # no text column can
    page = await request.app[STORE].page(
        key,
        before=before,
        unread_only=_flag(request, "unread"),
        category=category,
        include_archived=_flag(request, "archived"),
        limit=limit,
    )
    body = dumps({"items": page.items, "unread": page.unread, "next": page.next})
    return access.json_response(request, body)


@access.guarded
async def count(request: web.Request) -> web.Response:
    """``GET /inbox/count``: ``{"unread": n, "unseen": n}`` (archived items not counted)."""
    key = access.claim(request).key
    counts = await request.app[STORE].counts(key)
    return access.json_response(request, counts.as_json())


async def _act(request: web.Request, action: str) -> web.Response:
    key = access.claim(request).key
    item = await request.app[STORE].act(key, _item_id(request), action)
    if item is None:
        raise access.Refused(404, "no such item")
    return access.json_response(request, dumps(item))


@access.guarded
async def read(request: web.Request) -> web.Response:
    """``POST /inbox/{id}/read``: the item, read (and seen); its escalation is cancelled."""
    return await _act(request, "read")


@access.guarded
async def unread(request: web.Request) -> web.Response:
    """``POST /inbox/{id}/unread``: the item, unread again."""
    return await _act(request, "unread")


@access.guarded
async def archive(request: web.Request) -> web.Response:
    """``POST /inbox/{id}/archive``: the item, archived (out of the list and the counts)."""
    return await _act(request, "archive")


@access.guarded
async def read_all(request: web.Request) -> web.Response:
    """``POST /inbox/read-all``: every unread item read; ``{"updated": n}``."""
    key = access.claim(request).key
    updated = await request.app[STORE].mark_all_read(key)
    return access.json_response(request, dumps({"updated": updated}))


@access.guarded
async def seen(request: web.Request) -> web.Response:
    """``POST /inbox/seen``: every unseen item seen; ``{"updated": n}``."""
    key = access.claim(request).key
    updated = await request.app[STORE].mark_seen(key)
    return access.json_response(request, dumps({"updated": updated}))


def _widget(path: Path) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /inbox/widget.js``: the bell web component, read once, with an ETag."""
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'

    async def widget(request: web.Request) -> web.Response:
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=body, content_type="text/javascript", charset="utf-8", headers=headers
        )

    return widget


def _report_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "the inbox event hub stopped: streams get no live events",
            exc_info=task.exception(),
            extra={"action": "inbox"},
        )


def setup(app: web.Application, state: ServiceState) -> None:
    """Serve the inbox routes from ``app``; the stream hub lives as long as the app."""
    settings = state.settings.inbox
    store = InboxStore(state.store.pool)
    hub = inbox_hub.InboxHub(
        store,
        dsn=state.dsn,
        heartbeat_seconds=settings.heartbeat_seconds,
        buffer_bytes=settings.stream_buffer,
        max_streams=settings.max_streams,
    )
    access.setup(app, keys=state.signing_keys, origins=settings.allowed_origins)
    app[STORE] = store
    app[inbox_stream.STORE] = store
    app[inbox_stream.HUB] = hub

    async def run_hub(_app: web.Application) -> AsyncIterator[None]:
        if not state.listen:
            # LISTEN through a transaction pooler would miss signals: streams are refused.
            yield
            return
        task = asyncio.create_task(hub.run(), name="inbox-hub")
        task.add_done_callback(_report_death)
        yield
        hub.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def end_streams(_app: web.Application) -> None:
        # Before the server waits for its handlers: open streams would never end.
        hub.closing = True
        hub.close_all()

    app.cleanup_ctx.append(run_hub)
    app.on_shutdown.append(end_streams)

    routes = [
        ("GET", "/inbox", list_items),
        ("GET", "/inbox/count", count),
        ("GET", "/inbox/stream", inbox_stream.stream),
        ("POST", "/inbox/read-all", read_all),
        ("POST", "/inbox/seen", seen),
        ("POST", "/inbox/{id:[0-9]{1,19}}/read", read),
        ("POST", "/inbox/{id:[0-9]{1,19}}/unread", unread),
        ("POST", "/inbox/{id:[0-9]{1,19}}/archive", archive),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route("OPTIONS", path, access.preflight)
    app.router.add_get("/inbox/widget.js", _widget(WIDGET_PATH))
