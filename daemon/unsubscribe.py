"""Unsubscribe: signed links in every non-transactional email, RFC 8058 one-click, and a
small page where the recipient confirms and manages categories.

``GET`` never changes anything (mail scanners prefetch links); ``POST`` does, and answers
with a page or a short text, never a redirect.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from daemon.recipients import mask
from outbox import errors
from outbox.feedback_store import FeedbackStore
from outbox.models import Message
from outbox.tokens import InvalidToken, UnsubscribeClaim, make_token, read_token

logger = logging.getLogger(__name__)

_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


class Links:
    """Builds unsubscribe links and headers for outgoing messages."""

    def __init__(
        self, *, public_url: str, keys: Sequence[bytes], mailto: str | None = None
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.keys = list(keys)
        self.mailto = mailto

    def url(self, channel: str, recipient: str, category: str) -> str:
        token = make_token(self.keys, channel=channel, recipient=recipient, category=category)
        return f"{self.public_url}/unsubscribe?{urlencode({'token': token})}"

    def __call__(self, message: Message) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        """Template context and email headers for ``message`` (none for transactional)."""
        if message.is_transactional:
            return {}, {}
        url = self.url(message.channel, message.recipient, message.category)
        if message.channel != "email":
            return {"unsubscribe_url": url}, {}
        targets = [f"<{url}>"]
        if self.mailto:
            targets.append(
                f"<mailto:{self.mailto}?subject={quote('unsubscribe ' + message.category)}>"
            )
        headers = {
            "List-Unsubscribe": ", ".join(targets),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        return {"unsubscribe_url": url}, headers


def load_or_create_key(data_dir: Path) -> bytes:
    """A development key persisted under the data dir (used when OUTBOXD_SECRET_KEY is unset)."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32).encode()
    path.touch(mode=0o600)
    path.write_bytes(key)
    return key


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
