"""Engagement tracking for the email the daemon builds itself (see
:mod:`daemon.campaigns.tracking`): ``GET /t/o/<token>`` answers a 1x1 GIF and records an
open; ``GET /t/c/<token>`` records a click and redirects to the URL signed in the token,
and nowhere else. A forged token is a 403 and records nothing; a HEAD request (a link
checker) records nothing either. The routes always answer genuine tokens, so links in
mail already sent keep working after OUTBOXD_TRACKING__ENABLED is switched off.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from daemon.campaigns.store import CampaignStore
from daemon.campaigns.tokens import InvalidLink, read_click_token, read_open_token
from outbox import errors

logger = logging.getLogger(__name__)

#: The smallest transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_CACHE = {"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"}

KEYS: web.AppKey[list[bytes]] = web.AppKey("tracking_keys")
STORE = web.AppKey("tracking_store", CampaignStore)


async def _record(
    request: web.Request, message_id: int, kind: str, source_id: str, payload: dict[str, Any]
) -> None:
    if request.method == "HEAD":
        return
    try:
        await request.app[STORE].record_engagement(message_id, kind, source_id, payload)
    except errors.DatabaseError as exc:
        # The reader still gets the pixel or the page they clicked for.
        logger.warning("could not record %s: %s", kind, exc, extra={"action": "tracking"})


async def opened(request: web.Request) -> web.Response:
    keys: list[bytes] = request.app[KEYS]
    try:
        message_id = read_open_token(keys, request.match_info["token"])
    except InvalidLink:
        return web.Response(status=403, text="invalid link\n", headers=_NO_CACHE)
    await _record(request, message_id, "open", str(message_id), {})
    return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_CACHE)


async def clicked(request: web.Request) -> web.Response:
    keys: list[bytes] = request.app[KEYS]
    try:
        message_id, url = read_click_token(keys, request.match_info["token"])
    except InvalidLink:
        return web.Response(status=403, text="invalid link\n", headers=_NO_CACHE)
    digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    await _record(request, message_id, "click", f"{message_id}:{digest}", {"url": url})
    return web.Response(status=302, headers={**_NO_CACHE, "Location": url})


def setup(app: web.Application, *, keys: Sequence[bytes], store: CampaignStore) -> None:
    app[KEYS] = list(keys)
    app[STORE] = store
    app.router.add_get("/t/o/{token}", opened)
    app.router.add_get("/t/c/{token}", clicked)
