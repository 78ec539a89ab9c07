"""The monthly SMS spend cap (OUTBOXD_SMS__MONTHLY_CAP_USD): the SMS channel pauses before
a send could pass it.

Prices arrive with the delivery receipts (:mod:`daemon.feedback.sms_receipts`), a while
after the send; until then an SMS counts at the higher of OUTBOXD_SMS__PRICE_ESTIMATE_USD
and this month's average price. The provider is wrapped: a send the cap does not allow
raises :class:`~outbox.errors.ChannelPaused`, which pauses the channel without using an
attempt (the usual circuit breaker), and every probe is refused again until the month
ends or the cap is raised.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg

from daemon.providers.base import Provider
from outbox import errors, sql
from outbox.models import Message, Receipt, Rendered
from outbox.store import _translated

logger = logging.getLogger(__name__)

QUERY_NAMES = ("sms_spend",)


def month_start(now: datetime | None = None) -> datetime:
    """The first instant of the current month, UTC."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class SpendGate:
    """This month's SMS spend, as far as it is known, against the cap."""

    def __init__(self, cap_usd: float | None, estimate_usd: float) -> None:
        self.cap_usd = cap_usd
        self.estimate_usd = estimate_usd
        self.spent_usd = 0.0
        self.priced = 0
        self.unpriced = 0
        self.delivered = 0
        self.failed = 0
        #: SMS this process sent since the last refresh (not yet in the database's count).
        self.sent_since = 0
        self.month: datetime | None = None

    @property
    def per_sms_usd(self) -> float:
        average = self.spent_usd / self.priced if self.priced else 0.0
        return max(self.estimate_usd, average)

    @property
    def committed_usd(self) -> float:
        """Spent, plus what the SMS sent but not yet priced will cost (estimated)."""
        return self.spent_usd + (self.unpriced + self.sent_since) * self.per_sms_usd

    def allows_one_more(self) -> bool:
        if self.cap_usd is None:
            return True
        if self.month is not None and month_start() != self.month:
            return True  # a new month: the next refresh counts it
        return self.committed_usd + self.per_sms_usd <= self.cap_usd

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read this month's spend from the database."""
        start = month_start()
        async with _translated("read SMS spend"):
            row = await pool.fetchrow(sql.get("sms_spend"), start)
        assert row is not None
        self.month = start
        self.spent_usd = float(row["spent"])
        self.priced, self.unpriced = row["priced"], row["unpriced"]
        self.delivered, self.failed = row["delivered"], row["failed"]
        self.sent_since = 0


class CappedSms:
    """An SMS provider that refuses to send past the monthly spend cap."""

    def __init__(self, inner: Provider, gate: SpendGate, pool: asyncpg.Pool) -> None:
        self.inner = inner
        self.gate = gate
        self.pool = pool
        self.name = inner.name
        self.channel = inner.channel

    def __getattr__(self, name: str) -> Any:
        # What the daemon asks of some providers (max_in_flight, max_send_rate).
        return getattr(self.inner, name)

    async def open(self) -> None:
        await self.inner.open()
        await self.gate.refresh(self.pool)  # before the first send, not after

    async def close(self) -> None:
        await self.inner.close()

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        gate = self.gate
        if not gate.allows_one_more():
            raise errors.ChannelPaused(
                f"monthly SMS spend cap of {gate.cap_usd:.2f} USD reached "
                f"({gate.committed_usd:.4f} USD spent or on its way this month)"
            )
        gate.sent_since += 1
        return await self.inner.send(message, rendered)
