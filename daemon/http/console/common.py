"""What every console page shares: its state, rendering, the sign-in check and the action
check (session, Origin, CSRF), and reading search filters."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from multidict import MultiDict

from daemon.delivery.render import Renderer
from daemon.http import html
from daemon.http.console import auth
from daemon.http.console.queries import Filters
from daemon.http.console.store import ConsoleStore
from daemon.http.state import ServiceState
from daemon.settings import ConsoleSettings

logger = logging.getLogger(__name__)
PAGES_DIR = Path(__file__).parent / "pages"
_DIGITS = re.compile(r"[0-9]{1,18}")
STATIC_DIR = Path(__file__).parent / "static"
BASE = "/console"


@dataclass(frozen=True, slots=True)
class Console:
    """The console's collaborators, built once when the admin server starts."""

    settings: ConsoleSettings
    store: ConsoleStore
    renderer: Renderer
    state: ServiceState

    @property
    def secret(self) -> str | None:
        token = self.settings.token
        return None if token is None else token.get_secret_value().strip()


CONSOLE = web.AppKey("console", Console)
#: The signed-in request's session (its CSRF token is derived from it).
SESSION = web.RequestKey("console_session", str)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PAGES_DIR),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["when"] = _when
_ENV.filters["query"] = lambda fields: urlencode(fields)


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """A console page: the template with the session's CSRF token and the path."""
    console = request.app[CONSOLE]
    session = request.get(SESSION)
    csrf = auth.csrf_token(console.secret, session) if console.secret and session else ""
    text = _ENV.get_template(template).render(
        csrf=csrf, csrf_field=auth.CSRF_FIELD, path=request.path, base=BASE, **context
    )
    response = web.Response(status=status, text=text, content_type="text/html", charset="utf-8")
    html.secure(response, html.CONSOLE_POLICY)
    return response


def problem(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "problem.html.j2", status=status, message=message)


Page = Callable[[web.Request], Awaitable[web.StreamResponse]]
Action = Callable[[web.Request, MultiDict[str]], Awaitable[web.StreamResponse]]


def _off(request: web.Request) -> web.Response | None:
    if request.app[CONSOLE].secret is None:
        return render(request, "off.html.j2", status=404)
    return None


def signed_in(handler: Page) -> Page:
    """A page for signed-in operators; others are sent to the sign-in page."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        off = _off(request)
        if off is not None:
            return off
        secret = request.app[CONSOLE].secret
        assert secret is not None
        session = auth.session_of(request, secret)
        if session is None:
            raise web.HTTPSeeOther(f"{BASE}/login?{urlencode({'next': request.path_qs})}")
        request[SESSION] = session
        return await handler(request)

    return wrapper


def action(handler: Action) -> Page:
    """A POST that changes something: signed in, from the console's own page, with its
    CSRF token; refused (and nothing changed) otherwise."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        off = _off(request)
        if off is not None:
            return off
        secret = request.app[CONSOLE].secret
        assert secret is not None
        try:
            session, form = await auth.checked_form(request, secret)
        except auth.Refused as exc:
            logger.warning("console action refused: %s", exc.reason, extra={"action": "console"})
            return problem(request, exc.status, exc.reason)
        request[SESSION] = session
        return await handler(request, form)

    return wrapper


def console_path(target: str) -> str:
    """``target`` if it is a path of the console, else the overview's (where to go back to
    after an action: never another site, never a ``javascript:`` link)."""
    if target == BASE or (target.startswith(f"{BASE}/") and "\\" not in target):
        return target
    return BASE


def back_to(target: str, notice: str) -> web.HTTPSeeOther:
    """A redirect after an action to a console page (only), with a notice to show."""
    target = console_path(target)
    joiner = "&" if "?" in target else "?"
    return web.HTTPSeeOther(f"{target}{joiner}{urlencode({'notice': notice})}")


def _text(fields: Mapping[str, str], name: str) -> str | None:
    value = fields.get(name, "").strip()
    if len(value) > 320:
        raise ValueError(f"{name} is too long")
    return value or None


def number(value: str) -> int | None:
    """``value`` as a positive id if it is one (ASCII digits: ``str.isdigit`` also takes
    "²" and other scripts' digits, which ``int`` refuses), else None."""
    return int(value) if _DIGITS.fullmatch(value) else None


def _number(fields: Mapping[str, str], name: str) -> int | None:
    value = _text(fields, name)
    if value is None:
        return None
    found = number(value)
    if found is None:
        raise ValueError(f"{name} must be a number")
    return found


def _time(fields: Mapping[str, str], name: str) -> datetime | None:
    value = _text(fields, name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date and time like 2026-05-04T09:30") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # the form's times are UTC


def filters_from(fields: Mapping[str, str]) -> Filters:
    """The search filters of a query string or form; ValueError says what is wrong."""
    return Filters(
        recipient=_text(fields, "recipient"),
        status=_text(fields, "status"),
        channel=_text(fields, "channel"),
        template=_text(fields, "template"),
        category=_text(fields, "category"),
        campaign=_number(fields, "campaign"),
        notification=_number(fields, "notification"),
        since=_time(fields, "since"),
        until=_time(fields, "until"),
    )
