"""Links in a person's messages (rows made by ``outbox.notify``): their preference page.

A person's message links to ``/preferences?token=...`` (see :mod:`outbox.person_tokens`)
as ``preferences_url`` always, and, for non-transactional categories, as
``unsubscribe_url`` and in the RFC 8058 ``List-Unsubscribe`` headers of email: the page
shows the person's channel x category switches, and a one-click POST switches off the
message's own channel and category. Address-level rows keep the plain unsubscribe links
of :mod:`daemon.delivery.links`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from outbox.models import Message
from outbox.person_tokens import make_preference_token

#: The shape of a link builder (as :data:`daemon.delivery.dispatch.LinkBuilder`).
Builder = Callable[[Message], tuple[Mapping[str, Any], Mapping[str, str]]]


class PersonLinks:
    """Preference links for a person's messages; every other message goes to ``base``."""

    def __init__(
        self,
        base: Builder,
        *,
        public_url: str,
        keys: Sequence[bytes],
        mailto: str | None = None,
    ) -> None:
        self.base = base
        self.public_url = public_url.rstrip("/")
        self.keys = list(keys)
        self.mailto = mailto

    def url(self, recipient_key: str, channel: str, category: str) -> str:
        """The preference page of person ``recipient_key``, as reached from a message of
        ``channel`` and ``category``."""
        token = make_preference_token(
            self.keys, recipient_key=recipient_key, channel=channel, category=category
        )
        # The token is URL-safe as it is (base64url, digits, dots): no encoding to pay for.
        return f"{self.public_url}/preferences?token={token}"

    def __call__(self, message: Message) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        """Template context and email headers for ``message``."""
        if message.recipient_key is None:
            return self.base(message)
        url = self.url(message.recipient_key, message.channel, message.category)
        if message.is_transactional:
            return {"preferences_url": url}, {}
        context = {"preferences_url": url, "unsubscribe_url": url}
        if message.channel != "email":
            return context, {}
        targets = [f"<{url}>"]
        if self.mailto:
            targets.append(
                f"<mailto:{self.mailto}?subject={quote('unsubscribe ' + message.category)}>"
            )
        headers = {
            "List-Unsubscribe": ", ".join(targets),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        return context, headers
