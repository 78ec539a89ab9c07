"""The HTML pages recipients see, with the headers that keep them from being framed,
sniffed, cached or leaking their URL (which carries a token) to another site."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

PAGES_DIR = Path(__file__).parent / "pages"
_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PAGES_DIR),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _style_hashes() -> str:
    """CSP hashes of the pages' inline <style> blocks (plain CSS, no template syntax)."""
    blocks = {
        block
        for page in PAGES_DIR.glob("*.j2")
        for block in re.findall(r"<style>(.*?)</style>", page.read_text("utf-8"), re.DOTALL)
    }
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
        for b in sorted(blocks)
    )


#: No scripts, no fetches, no frames; styles only the pages' own; forms post back here.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_style_hashes()}; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: Sent with every response of the public port.
SAFETY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


#: The operator console (admin server): its own stylesheet, no scripts, frames only of its
#: own previews.
CONSOLE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: A message's HTML previewed in the console: its inline styles and data: images, nothing
#: else; sandboxed (no scripts, no forms, its own origin) and framed only by the console.
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)


def secure(response: web.StreamResponse, policy: str) -> web.StreamResponse:
    """``response`` with ``policy`` as its Content-Security-Policy, the safety headers, and
    no caching (console pages show addresses).

    The referrer policy is ``same-origin``, not ``no-referrer``: under ``no-referrer``
    browsers send ``Origin: null`` with a form's POST, and the console's actions are
    checked against their Origin. Other sites still get no referrer.
    """
    response.headers["Content-Security-Policy"] = policy
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    for name, value in SAFETY_HEADERS.items():
        response.headers.setdefault(name, value)
    if "frame-ancestors 'self'" in policy:
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def page(template: str, *, status: int = 200, **context: Any) -> web.Response:
    """``template`` rendered as an HTML response that nobody caches or frames."""
    html = _PAGES.get_template(template).render(**context)
    response = web.Response(status=status, text=html, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


async def add_safety_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: the safety headers on every response, errors included."""
    for name, value in SAFETY_HEADERS.items():
        response.headers.setdefault(name, value)
