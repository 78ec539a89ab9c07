"""Signing in to the console, and the checks every console request passes.

- Sign-in: the operator types OUTBOXD_CONSOLE__TOKEN once; the console answers with a
  session cookie (``<expires>.<HMAC(token, expires)>``: HttpOnly, SameSite=Strict, path
  /console). Nothing is stored server-side; changing the token signs everyone out.
- Every action (a POST) carries a synchronizer token: ``csrf`` = HMAC(token, session), in a
  hidden form field, and its Origin (else its Referer) must be this server. A page of
  another site can neither read the field nor send the cookie (SameSite) nor forge the
  Origin header, so any one of the three stops it; all three are checked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDict

from daemon.http import forms

COOKIE = "outboxd_console"
_EXPIRES = re.compile(r"[0-9]{1,12}")
CSRF_FIELD = "csrf"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _mac(secret: str, purpose: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{purpose}.{value}".encode(), hashlib.sha256).hexdigest()


def new_session(secret: str, hours: float, *, now: float | None = None) -> str:
    """A session cookie value valid for ``hours``."""
    expires = int((time.time() if now is None else now) + hours * 3600)
    return f"{expires}.{_mac(secret, 'session', str(expires))}"


def valid_session(secret: str, value: str | None, *, now: float | None = None) -> bool:
    """Whether ``value`` is a session this secret made and it has not expired."""
    if not value or value.count(".") != 1:
        return False
    expires, mac = value.split(".")
    if not _EXPIRES.fullmatch(expires):
        return False
    if not hmac.compare_digest(mac.encode(), _mac(secret, "session", expires).encode()):
        return False
    return int(expires) > (time.time() if now is None else now)


def csrf_token(secret: str, session: str) -> str:
    """The synchronizer token of ``session`` (the same for every form of the session)."""
    return _mac(secret, "csrf", session)


def same_origin(request: web.Request) -> bool:
    """Whether the request's Origin (or, without one, its Referer) is this very server."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        referer = request.headers.get("Referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin == f"{request.scheme}://{request.host}"


def token_matches(secret: str, offered: str) -> bool:
    """Whether the token typed at sign-in is the configured one (constant time)."""
    return hmac.compare_digest(offered.strip().encode(), secret.encode())


def session_of(request: web.Request, secret: str) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if valid_session(secret, value) else None


class Refused(Exception):
    """An action refused before anything changed: ``status`` and the reason shown."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def checked_form(request: web.Request, secret: str) -> tuple[str, MultiDict[str]]:
    """The session and form of an action, after the session, Origin and CSRF checks."""
    session = session_of(request, secret)
    if session is None:
        raise Refused(401, "Your console session has ended: sign in again.")
    if not same_origin(request):
        raise Refused(403, "Refused: this form was not sent from the console's own pages.")
    try:
        form = await forms.read_form(request)
    except forms.FormRejected as exc:
        raise Refused(exc.status, exc.reason) from exc
    offered = form.get(CSRF_FIELD, "")
    if not hmac.compare_digest(offered.encode(), csrf_token(secret, session).encode()):
        raise Refused(
            403, "Refused: the form's security token is missing or stale. Reload the page."
        )
    return session, form
