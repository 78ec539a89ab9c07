"""The null provider: accepts and discards (load tests, dry runs)."""

from __future__ import annotations

from daemon.providers.base import ProviderBase
from outbox.models import Message, Receipt, Rendered


class NullProvider(ProviderBase):
    name = "null"

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        # An id of its own, like every provider's: feedback and statistics join on it.
        return Receipt(self.name, f"null-{message.id}")
