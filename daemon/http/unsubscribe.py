"""Unsubscribe: RFC 8058 one-click, and a small page where the recipient confirms and
manages categories (the links themselves are made by :mod:`daemon.delivery.links`).

``GET`` never changes anything (mail scanners prefetch links); ``POST`` does, and answers
with a page or a short text, never a redirect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from daemon.addresses import mask
from daemon.feedback.store import FeedbackStore
from outbox import errors
from outbox.tokens import InvalidToken, UnsubscribeClaim, read_token

logger = logging.getLogger(__name__)

_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


KEYS: web.AppKey[list[bytes]] = web.AppKey("unsubscribe_keys")
STORE = web.AppKey("unsubscribe_store", FeedbackStore)


def _claim(request: web.Request) -> UnsubscribeClaim | None:
    token = request.query.get("token", "")
    if not token or len(token) > 2048:
        return None
    try:
        keys: list[bytes] = request.app[KEYS]
        return read_token(keys, token)
    except InvalidToken:
        return None


def _page(status: int, **context: Any) -> web.Response:
    html = _PAGES.get_template("unsubscribe.html.j2").render(
        state=context.pop("state"), **{"claim": None, "masked": "", "categories": {}, **context}
    )
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")


async def unsubscribe_page(request: web.Request) -> web.Response:
    claim = _claim(request)
    if claim is None:
        return _page(400, state="invalid")
    try:
        preferences = await request.app[STORE].preferences(claim.channel, claim.recipient)
    except errors.DatabaseError:
        return _page(503, state="unavailable")
    categories = {claim.category: preferences.get(claim.category, False), **preferences}
    return _page(
        200,
        state="confirm",
        claim=claim,
        masked=mask(claim.recipient),
        categories=dict(sorted(categories.items())),
        token=request.query["token"],
    )


async def unsubscribe_post(request: web.Request) -> web.Response:
    claim = _claim(request)
    if claim is None:
        return web.Response(status=400, text="invalid or expired unsubscribe link\n")
    try:
        form = await request.post()
    except ValueError:
        return web.Response(status=400, text="unreadable form\n")
    store = request.app[STORE]
    one_click = form.get("List-Unsubscribe") == "One-Click"
    # The page's "unsubscribe from all" button overrides the form's hidden default action.
    actions = [str(a) for a in form.getall("action", ["unsubscribe"])]
    action = "all" if "all" in actions else actions[0]
    try:
        if one_click or action == "unsubscribe":
            await store.set_preference(
                claim.channel, claim.recipient, claim.category, opted_out=True
            )
            logger.info(
                "unsubscribed from %s", claim.category,
                extra={"action": "unsubscribe", "category": claim.category,
                       "recipient": mask(claim.recipient)},
            )  # fmt: skip
            if one_click:
                return web.Response(text="unsubscribed\n")
            state = "done"
        elif action == "all":
            await store.suppress(
                claim.channel, claim.recipient, "unsubscribe", "from all categories"
            )
            state = "all"
        elif action == "save":
            keep = set(form.getall("keep", []))
            known = await store.preferences(claim.channel, claim.recipient)
            for category in {claim.category, *known}:
                await store.set_preference(
                    claim.channel, claim.recipient, category, opted_out=category not in keep
                )
            state = "saved"
        elif action == "resubscribe":
            await store.set_preference(
                claim.channel, claim.recipient, claim.category, opted_out=False
            )
            await store.unsuppress_unsubscribed(claim.channel, claim.recipient)
            state = "resubscribed"
        else:
            return web.Response(status=400, text="unknown action\n")
        preferences = await store.preferences(claim.channel, claim.recipient)
    except errors.DatabaseError:
        return _page(503, state="unavailable")
    return _page(
        200,
        state=state,
        claim=claim,
        masked=mask(claim.recipient),
        categories=dict(sorted(preferences.items())),
        token=request.query["token"],
    )


def setup(app: web.Application, *, keys: Sequence[bytes], store: FeedbackStore) -> None:
    app[KEYS] = list(keys)
    app[STORE] = store
    app.router.add_get("/unsubscribe", unsubscribe_page)
    app.router.add_post("/unsubscribe", unsubscribe_post)
