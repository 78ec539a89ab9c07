"""The null provider: accepts and discards (load tests, dry runs)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from outbox.models import Message, Receipt, Rendered

_RECEIPT = Receipt(provider="null")


class NullProvider:
    name = "null"

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        return _RECEIPT
