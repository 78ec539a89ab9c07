"""Unsubscribe: RFC 8058 one-click, and a small page where the recipient confirms and
manages categories (the links themselves are made by :mod:`daemon.delivery.links`).

``GET`` never changes anything (mail scanners prefetch links); ``POST`` does, and answers
with a page or a short text, never a redirect. The token names who the page is about
(:mod:`daemon.tokens`); the page shows that address masked, and its forms post the same
token back. Each form ``action`` is one entry of :data:`ACTIONS`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiDict

from daemon.addresses import mask
from daemon.feedback.brand_store import BrandOptOuts
from daemon.feedback.store import FeedbackStore
from daemon.http import html
from daemon.http.forms import FormRejected, read_form
from daemon.tokens import InvalidToken, UnsubscribeClaim, read_token
from outbox import errors

logger = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 2048
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class TokenRules:
    """Which unsubscribe tokens are accepted: the keys, and how old a token may be."""

    keys: Sequence[bytes]
    #: OUTBOXD_HTTP__UNSUBSCRIBE_TOKEN_DAYS, in seconds.
    max_age_seconds: float = 365 * DAY
    #: OUTBOXD_HTTP__LEGACY_TOKEN_DAYS, in seconds: the earlier, address-bearing format.
    legacy_max_age_seconds: float = 90 * DAY


TOKENS = web.AppKey("unsubscribe_tokens", TokenRules)
STORE = web.AppKey("unsubscribe_store", FeedbackStore)


def _claim(request: web.Request) -> UnsubscribeClaim | None:
    token = request.query.get("token", "")
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    rules = request.app[TOKENS]
    try:
        return read_token(
            rules.keys,
            token,
            max_age_seconds=rules.max_age_seconds,
            legacy_max_age_seconds=rules.legacy_max_age_seconds,
        )
    except InvalidToken:
        return None


def _page(
    status: int,
    state: str,
    claim: UnsubscribeClaim | None = None,
    categories: Mapping[str, bool] | None = None,
    token: str = "",
) -> web.Response:
    return html.page(
        "unsubscribe.html.j2",
        status=status,
        state=state,
        claim=claim,
        masked=mask(claim.recipient) if claim else "",
        categories=dict(sorted((categories or {}).items())),
        token=token,
    )


async def unsubscribe_page(request: web.Request) -> web.Response:
    claim = _claim(request)
    if claim is None:
        return _page(400, "invalid")
    try:
        preferences = await _store(request, claim).preferences(claim.channel, claim.recipient)
    except errors.DatabaseError:
        return _page(503, "unavailable")
    categories = {claim.category: preferences.get(claim.category, False), **preferences}
    return _page(200, "confirm", claim, categories, request.query["token"])


# Form actions: each changes the recipient's choices and names the page state to show.
Action = Callable[[FeedbackStore, UnsubscribeClaim, MultiDict[str]], Awaitable[str]]


async def _unsubscribe(store: FeedbackStore, claim: UnsubscribeClaim, _: MultiDict[str]) -> str:
    await store.set_preference(claim.channel, claim.recipient, claim.category, opted_out=True)
    logger.info(
        "unsubscribed from %s", claim.category,
        extra={"action": "unsubscribe", "category": claim.category,
               "recipient": mask(claim.recipient)},
    )  # fmt: skip
    return "done"


async def _unsubscribe_all(store: FeedbackStore, claim: UnsubscribeClaim, _: MultiDict[str]) -> str:
    await store.suppress(claim.channel, claim.recipient, "unsubscribe", "from all categories")
    return "all"


async def _save(store: FeedbackStore, claim: UnsubscribeClaim, form: MultiDict[str]) -> str:
    keep = set(form.getall("keep", []))
    known = await store.preferences(claim.channel, claim.recipient)
    for category in {claim.category, *known}:
        await store.set_preference(
            claim.channel, claim.recipient, category, opted_out=category not in keep
        )
    return "saved"


async def _resubscribe(store: FeedbackStore, claim: UnsubscribeClaim, _: MultiDict[str]) -> str:
    await store.set_preference(claim.channel, claim.recipient, claim.category, opted_out=False)
    await store.unsuppress_unsubscribed(claim.channel, claim.recipient)
    return "resubscribed"


ACTIONS: dict[str, Action] = {
    "unsubscribe": _unsubscribe,
    "all": _unsubscribe_all,
    "save": _save,
    "resubscribe": _resubscribe,
}


async def unsubscribe_post(request: web.Request) -> web.Response:
    claim = _claim(request)
    if claim is None:
        return web.Response(status=400, text="invalid or expired unsubscribe link\n")
    try:
        form = await read_form(request)
    except FormRejected as exc:
        return web.Response(status=exc.status, text=f"{exc.reason}\n")
    store = _store(request, claim)
    one_click = form.get("List-Unsubscribe") == "One-Click"
    # The page's "unsubscribe from all" button overrides the form's hidden default action.
    names = form.getall("action", ["unsubscribe"])
    action = ACTIONS.get("all" if "all" in names else names[0])
    if action is None and not one_click:
        return web.Response(status=400, text="unknown action\n")
    try:
        if one_click:
            await _unsubscribe(store, claim, form)
            return web.Response(text="unsubscribed\n")
        assert action is not None
        state = await action(store, claim, form)
        preferences = await store.preferences(claim.channel, claim.recipient)
    except errors.DatabaseError:
        return _page(503, "unavailable")
    return _page(200, state, claim, preferences, request.query["token"])


def _store(request: web.Request, claim: UnsubscribeClaim) -> FeedbackStore:
    """Where the claim's choices go: a branded message's link changes that brand's only."""
    store = request.app[STORE]
    return store if claim.brand is None else BrandOptOuts(store.pool, claim.brand)


def setup(app: web.Application, *, tokens: TokenRules, store: FeedbackStore) -> None:
    app[TOKENS] = tokens
    app[STORE] = store
    app.router.add_get("/unsubscribe", unsubscribe_page)
    app.router.add_post("/unsubscribe", unsubscribe_post)
