"""A person's preference page: their channel x category switches (``outbox.channel_preference``).

Reached from a person's message (a row made by ``outbox.notify``): its ``unsubscribe_url``,
``preferences_url`` and email ``List-Unsubscribe`` point to ``/preferences?token=...``, a
token signed with OUTBOXD_SECRET_KEY naming the person and the message's channel and
category (:mod:`outbox.person_tokens`). The token is the only credential: whoever holds
the link manages that person's switches, as with any unsubscribe link.

``GET`` shows the switches and changes nothing (mail scanners prefetch links). ``POST``
with ``List-Unsubscribe=One-Click`` (RFC 8058) switches off the message's own channel and
category and answers in plain text; the page's form saves every switch it showed, or
switches everything off. Never a redirect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from daemon.addresses import mask
from daemon.http import forms
from daemon.people.profiles import PeopleStore, Person, Switches, switch_is_on
from outbox import errors
from outbox.person_tokens import InvalidPreferenceToken, PreferenceClaim, read_preference_token

logger = logging.getLogger(__name__)

_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
#: The page has no script, no image and no link out; the token in its URL must not leak.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CHANNEL_LABELS = {"email": "Email", "sms": "SMS", "inapp": "In-app"}
TRANSACTIONAL = "transactional"

KEYS: web.AppKey[Sequence[bytes]] = web.AppKey("preferences_keys")
STORE = web.AppKey("preferences_store", PeopleStore)
CATEGORIES: web.AppKey[Sequence[str]] = web.AppKey("preferences_categories")


def _claim(request: web.Request) -> PreferenceClaim | None:
    token = request.query.get("token", "")
    if not token or len(token) > 4096:
        return None
    try:
        return read_preference_token(request.app[KEYS], token)
    except InvalidPreferenceToken:
        return None


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers=_HEADERS)


def _page(status: int, state: str, **context: Any) -> web.Response:
    html = _PAGES.get_template("preferences.html.j2").render(
        state=state, **{"who": "", "channels": [], "rows": [], "claim": None, **context}
    )
    return web.Response(
        status=status, text=html, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


def grid(
    person: Person, switches: Switches, claim: PreferenceClaim, always: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The channels and categories the page shows: the channels the person has an address
    for (and the one the link came from), the configured categories, those the person has
    switches for, and the link's own; transactional is never switched."""
    channels = [
        c
        for c, has in (("email", person.email), ("sms", person.phone), ("inapp", True))
        if has or c == claim.channel
    ]
    categories = {*always, *(cat for _, cat in switches if cat != "*"), claim.category}
    categories.discard(TRANSACTIONAL)
    return channels, sorted(categories)


async def _show(
    request: web.Request, claim: PreferenceClaim, state: str, status: int = 200
) -> web.Response:
    store = request.app[STORE]
    person = await store.person(claim.recipient_key)
    if person is None:
        return _page(404, "gone")
    switches = await store.switches(claim.recipient_key)
    channels, categories = grid(person, switches, claim, request.app[CATEGORIES])
    rows = [
        (category, [(c, switch_is_on(switches, c, category)) for c in channels])
        for category in categories
    ]
    who = mask(person.email) if person.email else mask(person.phone) if person.phone else ""
    return _page(
        status,
        state,
        claim=claim,
        who=who,
        channels=[(c, CHANNEL_LABELS[c]) for c in channels],
        rows=rows,
        token=request.query["token"],
    )


async def preferences_page(request: web.Request) -> web.Response:
    claim = _claim(request)
    if claim is None:
        return _page(403, "invalid")
    try:
        return await _show(request, claim, "manage")
    except errors.DatabaseError:
        return _page(503, "unavailable")


async def preferences_post(request: web.Request) -> web.Response:
    claim = _claim(request)
    if claim is None:
        return _text(403, "invalid or expired link\n")
    try:
        form = await forms.read_form(request)
    except forms.FormRejected as exc:
        return _text(exc.status, f"{exc.reason}\n")
    store = request.app[STORE]
    # The form's hidden default is "save"; its "turn everything off" button adds "off".
    actions = set(form.getall("action", []))
    action = "off" if "off" in actions else "save" if "save" in actions else None
    try:
        if form.get("List-Unsubscribe") == "One-Click":
            if claim.category == TRANSACTIONAL:
                return _text(200, "nothing to unsubscribe from: transactional messages\n")
            await store.save_switches(claim.recipient_key, [(claim.channel, claim.category, False)])
            logger.info(
                "switched off %s for %s", claim.channel, claim.category,
                extra={"action": "unsubscribe", "category": claim.category,
                       "channel": claim.channel},
            )  # fmt: skip
            return _text(200, "unsubscribed\n")
        if action is None:
            return _text(400, "unknown action\n")
        person = await store.person(claim.recipient_key)
        if person is None:
            return _page(404, "gone")
        switches = await store.switches(claim.recipient_key)
        channels, categories = grid(person, switches, claim, request.app[CATEGORIES])
        cells = [(c, category) for category in categories for c in channels]
        if action == "off":
            await store.save_switches(
                claim.recipient_key, [*((c, cat, False) for c, cat in cells), ("*", "*", False)]
            )
            state = "off"
        else:
            on = set(form.getall("on", []))
            await store.save_switches(
                claim.recipient_key, [(c, cat, f"{c}:{cat}" in on) for c, cat in cells]
            )
            state = "saved"
        return await _show(request, claim, state)
    except errors.DatabaseError:
        return _page(503, "unavailable")


def setup(
    app: web.Application, *, keys: Sequence[bytes], store: PeopleStore, categories: Sequence[str]
) -> None:
    app[KEYS] = list(keys)
    app[STORE] = store
    app[CATEGORIES] = tuple(categories)
    app.router.add_get("/preferences", preferences_page)
    app.router.add_post("/preferences", preferences_post)
