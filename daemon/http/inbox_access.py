"""Who may use the inbox routes: subscriber tokens and CORS.

A request names its person with a token (:mod:`outbox.inbox`) in ``Authorization: Bearer``
or, for an EventSource, which cannot send headers, in ``?token=``. Pages of the origins in
OUTBOXD_INBOX__ALLOWED_ORIGINS may call the routes from the browser; the token is not a
cookie, so a page of any other origin gains nothing by sending requests of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from daemon.http.inbox_store import dumps
from outbox import errors
from outbox.inbox import InboxClaim, InvalidInboxToken, read_inbox_token

KEYS: web.AppKey[list[bytes]] = web.AppKey("inbox_keys")
ORIGINS: web.AppKey[frozenset[str]] = web.AppKey("inbox_origins")

#: Preflights may ask for these; the stream's reconnection sends Last-Event-ID itself.
ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID"
PREFLIGHT_MAX_AGE = "600"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A request answered with a 4xx or 503 and a JSON ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def setup(app: web.Application, *, keys: Sequence[bytes], origins: Sequence[str]) -> None:
    app[KEYS] = list(keys)
    app[ORIGINS] = frozenset(origins)


def cors_headers(request: web.Request) -> dict[str, str]:
    """The CORS headers of an actual (non-preflight) response to ``request``."""
    origin = request.headers.get("Origin")
    if origin is not None and origin in request.app[ORIGINS]:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}


def json_response(request: web.Request, body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=body,
        content_type="application/json",
        headers={**cors_headers(request), "Cache-Control": "no-store"},
    )


def claim(request: web.Request) -> InboxClaim:
    """The person a request speaks for; :class:`Refused` (401) without a genuine token."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise _unauthorized("Authorization must be 'Bearer <token>'")
        token = token.strip()
    else:
        token = request.query.get("token", "")
    if not token:
        raise _unauthorized("missing token (Authorization: Bearer <token>, or ?token=)")
    keys: list[bytes] = request.app[KEYS]
    try:
        found = read_inbox_token(token, keys)
    except InvalidInboxToken as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    if "\x00" in found.key:
        # PostgreSQL text cannot hold NUL: no person has such a key.
        raise _unauthorized("invalid token: not a person's key")
    return found


def _unauthorized(message: str) -> Refused:
    return Refused(401, message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def guarded(handler: Handler) -> Handler:
    """Answers :class:`Refused` and database trouble as JSON errors carrying CORS headers
    (so that the page can read them), never as a 500."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as refused:
            response = json_response(request, dumps({"error": refused.message}), refused.status)
            response.headers.update(refused.headers)
            return response
        except errors.DatabaseError:
            response = json_response(
                request, dumps({"error": "the inbox is unavailable, try again shortly"}), 503
            )
            response.headers["Retry-After"] = "5"
            return response

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


async def preflight(request: web.Request) -> web.Response:
    """``OPTIONS``: allowed origins may send GET and POST with an Authorization header."""
    origin = request.headers.get("Origin")
    method = request.headers.get("Access-Control-Request-Method", "")
    if origin is None or origin not in request.app[ORIGINS] or method not in ("GET", "POST"):
        return web.Response(status=403, text="origin not allowed\n", headers={"Vary": "Origin"})
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            "Vary": "Origin",
        },
    )
