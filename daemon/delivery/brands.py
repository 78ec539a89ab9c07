"""Brands (``outbox.brand``): every lookup of a message's brand happens here.

The daemon keeps the brands in memory (a handful of rows, read again every
``REFRESH_SECONDS`` and whenever a message names one it does not know) and gives the
dispatcher, for a branded message, what templates see as ``brand`` and who the message is
sent as (:class:`outbox.models.Sender`); the unsubscribe links get the brand's base URL.
A message without a brand is sent exactly as before. A message whose brand does not exist
(deleted after the enqueue) is retried, then fails with a clear ``last_error``: never sent
as another brand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from outbox import errors, sql
from outbox.models import Message, Sender
from outbox.store import _translated

logger = logging.getLogger(__name__)

QUERY_NAMES = ("brands_all",)
REFRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Branding:
    """What a branded message is rendered and sent with."""

    template: Mapping[str, Any]
    sender: Sender
    unsubscribe_base_url: str | None


class BrandBook:
    """The brands, as the daemon's dispatcher and links need them."""

    def __init__(self, defaults: Mapping[str, Any]) -> None:
        #: OUTBOXD_BRAND_*: what a brand's unset fields fall back to in templates.
        self.defaults = dict(defaults)
        self.pool: asyncpg.Pool | None = None
        self._brands: dict[str, Branding] = {}
        self._stale = asyncio.Event()

    async def load(self, pool: asyncpg.Pool) -> None:
        """Read the brands from ``pool`` now (and from then on in :meth:`run`)."""
        self.pool = pool
        await self.refresh()

    async def refresh(self) -> None:
        if self.pool is None:
            return
        async with _translated("read brands"):
            rows = await self.pool.fetch(sql.get("brands_all"))
        self._brands = {row["key"]: self._branding(row) for row in rows}

    async def run(self, stopping: asyncio.Event) -> None:
        """Reads the brands again every REFRESH_SECONDS, or at once when one is missing."""
        while not stopping.is_set():
            waits = {
                asyncio.ensure_future(stopping.wait()),
                asyncio.ensure_future(self._stale.wait()),
            }
            await asyncio.wait(waits, timeout=REFRESH_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            self._stale.clear()
            with contextlib.suppress(errors.DatabaseError):
                await self.refresh()

    def of(self, message: Message) -> Branding | None:
        """The branding of ``message``; None without a brand; TransientError for a brand
        that is not (yet) known, which makes the book read the brands again."""
        if message.brand is None:
            return None
        found = self._brands.get(message.brand)
        if found is None:
            self._stale.set()
            raise errors.TransientError(f"unknown brand {message.brand!r} (not in outbox.brand)")
        return found

    def unsubscribe_base_url(self, brand: str | None) -> str | None:
        """The brand's own base URL for unsubscribe links, if it has one."""
        found = self._brands.get(brand) if brand is not None else None
        return found.unsubscribe_base_url if found is not None else None

    def _branding(self, row: Mapping[str, Any]) -> Branding:
        colors = row["colors"]
        template = {
            **self.defaults,
            "key": row["key"],
            "name": row["name"],
            "url": row["url"] or self.defaults.get("url", ""),
            "address": row["postal_address"] or "",
            "logo_url": row["logo_url"],
            "colors": json.loads(colors) if isinstance(colors, str) else dict(colors or {}),
        }
        sender = Sender(
            address=row["from_address"],
            reply_to=row["reply_to"],
            configuration_set=row["ses_configuration_set"],
            tenant=row["ses_tenant"],
        )
        base = row["unsubscribe_base_url"]
        return Branding(template, sender, base.rstrip("/") if base else None)
