"""The operator console: ``/console`` on the admin server only (never the public port).

Pages: overview, message search and a message's page, template gallery, suppressions;
actions: retry / requeue / cancel, suppress / unsuppress, pause / resume a channel.
Server-rendered, no script; see docs/CONSOLE.md. Off unless OUTBOXD_CONSOLE__TOKEN is set.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDict

from daemon.delivery.render import Renderer
from daemon.http import forms, html
from daemon.http.console import auth, messages, overview, pages_misc
from daemon.http.console.common import (
    BASE,
    CONSOLE,
    STATIC_DIR,
    Console,
    action,
    problem,
    render,
)
from daemon.http.console.store import ConsoleStore
from daemon.http.state import ServiceState

logger = logging.getLogger(__name__)


def _next(target: str) -> str:
    """Where to go after signing in: a console path of this server, nothing else."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(BASE) or "\\" in target:
        return BASE
    return target


async def login_page(request: web.Request) -> web.StreamResponse:
    if request.app[CONSOLE].secret is None:
        return render(request, "off.html.j2", status=404)
    return render(request, "login.html.j2", next=_next(request.query.get("next", BASE)), error="")


async def login(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    secret = console.secret
    if secret is None:
        return render(request, "off.html.j2", status=404)
    if not auth.same_origin(request):
        return problem(request, 403, "Refused: sign in from the console's own page.")
    try:
        form = await forms.read_form(request)
    except forms.FormRejected as exc:
        return problem(request, exc.status, exc.reason)
    target = _next(form.get("next", BASE))
    if not auth.token_matches(secret, form.get("token", "")):
        logger.warning("console sign-in refused: wrong token", extra={"action": "console"})
        return render(request, "login.html.j2", status=401, next=target, error="Wrong token.")
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        auth.COOKIE,
        auth.new_session(secret, console.settings.session_hours),
        max_age=int(console.settings.session_hours * 3600),
        path=BASE,
        httponly=True,
        samesite="Strict",
    )
    raise response


@action
async def logout(request: web.Request, form: MultiDict[str]) -> web.StreamResponse:
    response = web.HTTPSeeOther(f"{BASE}/login")
    response.del_cookie(auth.COOKIE, path=BASE)
    raise response


async def stylesheet(request: web.Request) -> web.StreamResponse:
    response = web.FileResponse(STATIC_DIR / "console.css")
    response.headers["Cache-Control"] = "max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def _secured(request: web.Request, response: web.StreamResponse) -> None:
    """Errors raised as exceptions (404, redirects) get the console's headers too."""
    if request.path.startswith(BASE) and "Content-Security-Policy" not in response.headers:
        html.secure(response, html.CONSOLE_POLICY)


def setup(app: web.Application, state: ServiceState) -> None:
    """Add the console's routes to the admin application."""
    console = Console(
        settings=state.settings.console,
        store=ConsoleStore(state.store.pool),
        renderer=Renderer.from_settings(state.settings),
        state=state,
    )
    app[CONSOLE] = console
    if console.secret is None:
        logger.info(
            "console off: set OUTBOXD_CONSOLE__TOKEN to serve it on the admin server",
            extra={"action": "start"},
        )
    routes = app.router
    routes.add_get(BASE, overview.overview)
    routes.add_get(f"{BASE}/login", login_page)
    routes.add_post(f"{BASE}/login", login)
    routes.add_post(f"{BASE}/logout", logout)
    routes.add_get(f"{BASE}/static/console.css", stylesheet)
    routes.add_post(BASE + "/channels/{channel}/pause", overview.pause)
    routes.add_post(BASE + "/channels/{channel}/resume", overview.resume)
    routes.add_get(f"{BASE}/messages", messages.search)
    routes.add_post(f"{BASE}/messages/action", messages.act)
    routes.add_get(BASE + "/messages/{id}", messages.message)
    routes.add_get(BASE + "/messages/{id}/preview.html", messages.message_html)
    routes.add_get(f"{BASE}/templates", pages_misc.templates)
    routes.add_get(f"{BASE}/template", pages_misc.template)
    routes.add_get(f"{BASE}/template/preview.html", pages_misc.template_html)
    routes.add_get(f"{BASE}/suppressions", pages_misc.suppressions)
    routes.add_post(f"{BASE}/suppressions", pages_misc.suppress)
    routes.add_post(f"{BASE}/suppressions/remove", pages_misc.unsuppress)
    app.on_response_prepare.append(_secured)
