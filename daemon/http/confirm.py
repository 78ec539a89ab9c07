"""Double opt-in: ``GET /confirm?token=`` shows a page and changes nothing (mail scanners
prefetch links); ``POST /confirm`` (token in the query or the form) makes the pending
subscription active, idempotently.

Tokens are signed (:mod:`daemon.campaigns.tokens`): a malformed or tampered one is a 403,
an expired one a 410; the subscription then stays as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from daemon.campaigns.store import CampaignStore
from daemon.campaigns.tokens import ConfirmClaim, ExpiredLink, InvalidLink, read_confirm_token
from daemon.http import forms
from outbox import errors

logger = logging.getLogger(__name__)

_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
#: Pages carry no script and load nothing; they may only post back to us.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

KEYS: web.AppKey[list[bytes]] = web.AppKey("confirm_keys")
STORE = web.AppKey("confirm_store", CampaignStore)

_ENDED = frozenset({"unsubscribed", "bounced", "complained"})


def _page(status: int, state: str, **context: Any) -> web.Response:
    html = _PAGES.get_template("confirm.html.j2").render(
        state=state, **{"list_name": "", "token": "", **context}
    )
    return web.Response(
        status=status, text=html, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def _claim(request: web.Request, token: str) -> ConfirmClaim | web.Response:
    """The claim of ``token``, or the page that refuses it."""
    if not token:
        return _page(400, "invalid")
    keys: list[bytes] = request.app[KEYS]
    try:
        return read_confirm_token(keys, token)
    except ExpiredLink:
        return _page(410, "expired")
    except InvalidLink:
        return _page(403, "invalid")


async def confirm_page(request: web.Request) -> web.Response:
    token = request.query.get("token", "")
    claim = _claim(request, token)
    if isinstance(claim, web.Response):
        return claim
    try:
        row = await request.app[STORE].subscription(claim.list_id, claim.recipient_key)
    except errors.DatabaseError:
        return _page(503, "unavailable")
    if row is None:
        return _page(404, "unknown")
    status, list_name = row["status"], row["list_name"]
    if status == "pending":
        return _page(200, "confirm", list_name=list_name, token=token)
    if status in _ENDED:
        return _page(409, "ended", list_name=list_name)
    return _page(200, "active", list_name=list_name)


async def _form_token(request: web.Request) -> str:
    """The token field of the posted form; empty when there is none or the body is
    unreadable (read as strictly as every form: :mod:`daemon.http.forms`)."""
    try:
        form = await forms.read_form(request)
    except forms.FormRejected:
        return ""
    return form.get("token", "")


async def confirm_post(request: web.Request) -> web.Response:
    token = request.query.get("token") or await _form_token(request)
    claim = _claim(request, token)
    if isinstance(claim, web.Response):
        return claim
    store = request.app[STORE]
    try:
        status = await store.confirm(claim.list_id, claim.recipient_key)
        row = await store.subscription(claim.list_id, claim.recipient_key)
    except errors.DatabaseError:
        return _page(503, "unavailable")
    if status is None or row is None:
        return _page(404, "unknown")
    if status in _ENDED:
        return _page(409, "ended", list_name=row["list_name"])
    logger.info("subscription confirmed", extra={"action": "confirm", "list_id": claim.list_id})
    return _page(200, "confirmed", list_name=row["list_name"])


def setup(app: web.Application, *, keys: Sequence[bytes], store: CampaignStore) -> None:
    app[KEYS] = list(keys)
    app[STORE] = store
    app.router.add_get("/confirm", confirm_page)
    app.router.add_post("/confirm", confirm_post)
