"""The in-app provider: turns a rendered message into an item of the person's inbox.

It never touches the database (no provider does): the item rides on the receipt, and the
completer writes it into ``outbox.inbox`` together with the message's ``sent``, in the
same batched statement as other results (``complete_inbox`` in sql/queries.sql). So an
item exists exactly when its message says ``sent``, a redelivery lands once (the item is
unique per message), and the inbox costs no round trip of its own per message.

The item: ``title`` from ``subject.j2``, ``body`` from ``inapp.j2`` (plain text: whoever
shows it escapes it), ``url`` from the context key ``url`` (an ``http(s)`` URL or a path
starting with ``/``), ``data`` from the context key ``data`` (a JSON object, else ``{}``).
Only ``data`` reaches the person's browser, not the whole context: a context often holds
values meant for rendering only.
"""

from __future__ import annotations

import json
from typing import Any

from daemon.providers.base import ProviderBase
from outbox import errors
from outbox.models import InboxItem, Message, Receipt, Rendered

#: Longest ``url`` accepted, in characters (browsers and proxies start failing near 8 KiB).
MAX_URL = 4096


def item_url(context: dict[str, Any]) -> str | None:
    """The context's ``url``, if it is one an inbox may link to; raises PermanentError."""
    url = context.get("url")
    if url is None:
        return None
    if not isinstance(url, str):
        raise errors.PermanentError(f"context url must be a string, got {type(url).__name__}")
    url = url.strip()
    lowered = url[:8].lower()
    # A javascript: or data: link in a bell widget would run in the app's page; "//host"
    # and "/\host" are other hosts to a browser, not paths.
    if not (
        lowered.startswith(("https://", "http://"))
        or (url.startswith("/") and url[1:2] not in ("/", "\\"))
    ):
        raise errors.PermanentError(
            f"context url must be an http(s) URL or a path starting with /, got {url[:80]!r}"
        )
    if len(url) > MAX_URL or any(ch < " " or ch == "\x7f" for ch in url):
        raise errors.PermanentError(
            "context url is longer than 4096 characters or contains control characters"
        )
    return url


def _clean(text: str) -> str:
    """Text PostgreSQL can store: no NUL, no lone surrogates (either would fail the whole
    batch of results it is written with)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class InappProvider(ProviderBase):
    """Delivers ``inapp`` messages into ``outbox.inbox`` (through the result write)."""

    name = "inapp"
    channel = "inapp"

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        context = message.context
        data = context.get("data")
        item = InboxItem(
            recipient_key=message.recipient_key or message.recipient,
            notification_id=message.notification_id,
            category=message.category,
            priority=message.priority,
            title=_clean(rendered.subject or ""),
            body=_clean(rendered.inapp or ""),
            url=item_url(context),
            # From jsonb, so already free of NUL and lone surrogates.
            data=json.dumps(data, ensure_ascii=False) if isinstance(data, dict) else "{}",
        )
        return Receipt(self.name, None, item)
