"""Open and click tracking for the email the daemon builds itself (SMTP, file provider).

When OUTBOXD_TRACKING__ENABLED is on, the HTML of every non-transactional email gets a 1x1
pixel loading ``/t/o/<token>`` and each ``http(s)`` link of an ``<a>`` tag is replaced by
``/t/c/<token>``, a redirect to exactly the URL signed in its token. Links to the daemon
itself (unsubscribe, confirmation) are left alone, and so is every transactional email:
a password reset link is never routed through a redirect. SES counts opens and clicks
itself (event publishing), so the SES provider's mail is never rewritten.
"""

from __future__ import annotations

import html as html_module
import re
from collections.abc import Callable, Sequence

from daemon.campaigns.tokens import is_web_url, make_click_token, make_open_token
from outbox.models import Message, Rendered

# `href` of an <a> tag, double- or single-quoted.
_ANCHOR_HREF = re.compile(
    r"""(<a\b[^>]*?\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE | re.DOTALL
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def instrument(html: str, *, pixel_url: str, click_url: Callable[[str], str | None]) -> str:
    """``html`` with each ``<a href>`` target replaced by ``click_url(target)`` (unless it
    returns None) and an open pixel loading ``pixel_url`` before ``</body>`` (or at the end).

    Targets are read as the browser reads them (HTML entities decoded) and written back
    escaped, so ``?a=1&amp;b=2`` is signed and redirected to as ``?a=1&b=2``.
    """

    def rewrite(match: re.Match[str]) -> str:
        double = match.group(2) is not None
        target = html_module.unescape(match.group(2) if double else match.group(3)).strip()
        replacement = click_url(target)
        if replacement is None:
            return match.group(0)
        quote = '"' if double else "'"
        return f"{match.group(1)}{quote}{html_module.escape(replacement, quote=True)}{quote}"

    rewritten = _ANCHOR_HREF.sub(rewrite, html)
    pixel = (
        f'<img src="{html_module.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    ends = list(_BODY_END.finditer(rewritten))
    if not ends:
        return rewritten + pixel
    at = ends[-1].start()
    return rewritten[:at] + pixel + rewritten[at:]


class Tracker:
    """Instruments rendered messages for open and click tracking (see the module)."""

    def __init__(self, *, base_url: str, keys: Sequence[bytes]) -> None:
        self.base_url = base_url.rstrip("/")
        self.keys = list(keys)

    def __call__(self, message: Message, rendered: Rendered) -> Rendered:
        if message.channel != "email" or message.is_transactional or not rendered.html:
            return rendered
        own = self.base_url + "/"

        def click(url: str) -> str | None:
            if not is_web_url(url) or url.startswith(own):
                return None
            return f"{self.base_url}/t/c/{make_click_token(self.keys, message.id, url)}"

        pixel = f"{self.base_url}/t/o/{make_open_token(self.keys, message.id)}"
        return rendered._replace(html=instrument(rendered.html, pixel_url=pixel, click_url=click))
