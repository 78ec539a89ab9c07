"""Unsubscribe links for outgoing messages: the ``unsubscribe_url`` templates see, and the
RFC 8058 ``List-Unsubscribe`` headers of every non-transactional email."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from daemon.tokens import make_token
from outbox.models import Message


class Links:
    """Builds unsubscribe links and headers for outgoing messages."""

    def __init__(
        self,
        *,
        public_url: str,
        keys: Sequence[bytes],
        mailto: str | None = None,
        brand_url: Callable[[str | None], str | None] | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.keys = list(keys)
        self.mailto = mailto
        #: A brand's own base URL for its links (daemon.delivery.brands), if it has one.
        self.brand_url = brand_url

    def url(self, channel: str, recipient: str, category: str, brand: str | None = None) -> str:
        token = make_token(
            self.keys, channel=channel, recipient=recipient, category=category, brand=brand
        )
        base = (self.brand_url(brand) if self.brand_url and brand else None) or self.public_url
        return f"{base}/unsubscribe?{urlencode({'token': token})}"

    def __call__(self, message: Message) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        """Template context and email headers for ``message`` (none for transactional)."""
        if message.is_transactional:
            return {}, {}
        url = self.url(message.channel, message.recipient, message.category, message.brand)
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
