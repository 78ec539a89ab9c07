"""What every provider is: ``open``, ``send`` and ``close`` coroutines.

A provider turns one rendered message into one accepted send and returns a
:class:`~outbox.models.Receipt`, or raises an :mod:`outbox.errors` class that carries the
decision (permanent, transient, throttled, channel paused). It never touches the database.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from outbox.models import Message, Receipt, Rendered


@runtime_checkable
class Provider(Protocol):
    #: Short name stored in ``outbox.message.provider`` ("smtp", "ses", ...).
    name: str
    #: "email", "sms" or "inapp".
    channel: str

    async def open(self) -> None:
        """Open long-lived resources (connection pools, API clients)."""
        ...

    async def close(self) -> None:
        """Close them."""
        ...

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        """Send one message; raise an :mod:`outbox.errors` class on failure."""
        ...


class ProviderBase:
    """The lifecycle every provider shares: entering opens long-lived resources, leaving
    closes them. Subclasses override :meth:`open` and :meth:`close` as they need."""

    async def open(self) -> None:
        """Nothing to open by default."""

    async def close(self) -> None:
        """Nothing to close by default."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
