"""A recipient's choices about one brand's messages (``outbox.brand_opt_out``): what the
unsubscribe links of a branded message change, instead of the global preferences.

It answers the unsubscribe page's calls (:class:`FeedbackStore`'s preference and
unsubscribe methods) for one brand: opting out of a category, or of everything (``*``),
holds for that brand only. Hard bounces and complaints stay global
(``outbox.suppression``), as the law and the providers want.
"""

from __future__ import annotations

import asyncpg

from daemon.feedback.store import FeedbackStore
from outbox import sql
from outbox.store import _translated

QUERY_NAMES = ("brand_opt_out", "brand_opt_in", "brand_opt_outs")
#: The category of an opt-out from everything the brand sends (but transactional).
EVERYTHING = "*"


class BrandOptOuts(FeedbackStore):
    """:class:`FeedbackStore`'s unsubscribe calls, for the messages of ``brand``."""

    def __init__(self, pool: asyncpg.Pool, brand: str) -> None:
        super().__init__(pool)
        self.brand = brand

    async def set_preference(
        self, channel: str, recipient: str, category: str, *, opted_out: bool
    ) -> None:
        query = "brand_opt_out" if opted_out else "brand_opt_in"
        async with _translated("brand preference"):
            await self.pool.execute(sql.get(query), self.brand, channel, recipient, category)

    async def preferences(self, channel: str, recipient: str) -> dict[str, bool]:
        async with _translated("brand preferences"):
            rows = await self.pool.fetch(sql.get("brand_opt_outs"), self.brand, channel, recipient)
        return {row["category"]: True for row in rows if row["category"] != EVERYTHING}

    async def suppress(self, channel: str, recipient: str, reason: str, detail: str = "") -> None:
        """Opts out of everything this brand sends (``reason`` is always an unsubscribe)."""
        await self.set_preference(channel, recipient, EVERYTHING, opted_out=True)

    async def unsuppress_unsubscribed(self, channel: str, recipient: str) -> None:
        await self.set_preference(channel, recipient, EVERYTHING, opted_out=False)
