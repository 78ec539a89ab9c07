"""The links a list's confirmation email needs: ``confirm_url``, a signed ``/confirm`` link.

``outbox.subscribe`` marks the confirmation message with the tag ``outbox: list_confirm``
and puts the list and the person in its context (``confirm``); the daemon signs the link
when it renders the message, so the secret never leaves the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from daemon.campaigns.tokens import make_confirm_token
from daemon.delivery.dispatch import LinkBuilder
from outbox.models import Message

CONFIRM_TAG = "list_confirm"


class ConfirmLinks:
    """A link builder adding ``confirm_url`` to confirmation emails, around ``inner``."""

    def __init__(
        self, inner: LinkBuilder, *, public_url: str, keys: Sequence[bytes], ttl_seconds: float
    ) -> None:
        self.inner = inner
        self.public_url = public_url.rstrip("/")
        self.keys = list(keys)
        self.ttl_seconds = ttl_seconds

    def __call__(self, message: Message) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        context, headers = self.inner(message)
        if message.tags.get("outbox") != CONFIRM_TAG:
            return context, headers
        claim = message.context.get("confirm")
        if not isinstance(claim, Mapping):
            return context, headers
        list_id, key = claim.get("list_id"), claim.get("recipient_key")
        if not isinstance(list_id, int) or isinstance(list_id, bool) or not isinstance(key, str):
            return context, headers
        token = make_confirm_token(self.keys, list_id, key, ttl_seconds=self.ttl_seconds)
        url = f"{self.public_url}/confirm?{urlencode({'token': token})}"
        return {**context, "confirm_url": url}, headers
