"""The null provider: accepts and discards (load tests, dry runs)."""

from __future__ import annotations

from daemon.providers.base import ProviderBase
from outbox.models import Message, Receipt, Rendered

_RECEIPT = Receipt(provider="null")


class NullProvider(ProviderBase):
    name = "null"

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        return _RECEIPT
