"""The template gallery and the suppression list."""

from __future__ import annotations

import logging

from aiohttp import web
from multidict import MultiDict

from daemon.http import html
from daemon.http.console import gallery
from daemon.http.console.common import BASE, CONSOLE, action, back_to, problem, render, signed_in
from daemon.http.console.queries import CHANNELS

logger = logging.getLogger(__name__)


@signed_in
async def templates(request: web.Request) -> web.StreamResponse:
    return render(
        request, "templates.html.j2", templates=gallery.gallery(request.app[CONSOLE].renderer)
    )


def _template_info(request: web.Request) -> gallery.TemplateInfo:
    renderer = request.app[CONSOLE].renderer
    name = request.query.get("name", "")
    if name not in renderer.template_names():
        raise web.HTTPNotFound()
    return gallery.describe(renderer, name)


@signed_in
async def template(request: web.Request) -> web.StreamResponse:
    info = _template_info(request)
    return render(
        request,
        "template.html.j2",
        info=info,
        previews=gallery.previews(request.app[CONSOLE].renderer, info),
    )


@signed_in
async def template_html(request: web.Request) -> web.StreamResponse:
    """One template's HTML part with its example, for the sandboxed frame."""
    info = _template_info(request)
    locale = request.query.get("locale") or None
    if locale is not None and locale not in info.locales:
        raise web.HTTPNotFound()
    shown = gallery.preview(
        request.app[CONSOLE].renderer,
        template=info.name,
        channel="email",
        context=info.example or {},
        locale=locale,
    )
    if shown.rendered is None or not shown.rendered.html:
        raise web.HTTPNotFound()
    response = web.Response(text=shown.rendered.html, content_type="text/html")
    html.secure(response, html.PREVIEW_POLICY)
    return response


@signed_in
async def suppressions(request: web.Request) -> web.StreamResponse:
    recipient = request.query.get("recipient", "").strip()[:320] or None
    rows = await request.app[CONSOLE].store.suppressions(recipient, 200)
    return render(
        request,
        "suppressions.html.j2",
        rows=rows,
        recipient=recipient or "",
        channels=CHANNELS,
        notice=request.query.get("notice", ""),
    )


def _channel_and_recipient(form: MultiDict[str]) -> tuple[str, str]:
    channel = form.get("channel", "")
    recipient = form.get("recipient", "").strip()
    if channel not in CHANNELS:
        raise ValueError("Choose a channel.")
    if not recipient or len(recipient) > 320:
        raise ValueError("Give the recipient (an address, a phone number or a person's key).")
    return channel, recipient


@action
async def suppress(request: web.Request, form: MultiDict[str]) -> web.StreamResponse:
    try:
        channel, recipient = _channel_and_recipient(form)
    except ValueError as exc:
        return problem(request, 400, str(exc))
    detail = form.get("detail", "").strip()[:500] or "added from the console"
    kept = await request.app[CONSOLE].store.suppress(channel, recipient, detail)
    logger.info("console: suppression added", extra={"action": "console", "channel": channel})
    notice = "Suppressed." if kept else "Already suppressed (bounce, complaint or unsubscribe)."
    raise back_to(f"{BASE}/suppressions", notice)


@action
async def unsuppress(request: web.Request, form: MultiDict[str]) -> web.StreamResponse:
    try:
        channel, recipient = _channel_and_recipient(form)
    except ValueError as exc:
        return problem(request, 400, str(exc))
    reason = await request.app[CONSOLE].store.unsuppress(channel, recipient)
    logger.info("console: suppression removed", extra={"action": "console", "channel": channel})
    notice = f"Suppression ({reason}) removed." if reason else "There was no such suppression."
    raise back_to(f"{BASE}/suppressions", notice)
