"""Cluster-wide rate limits: a token bucket per channel kept in PostgreSQL.

Every daemon sharing the database takes tokens from the same row before it claims, so the
configured rate holds for the whole cluster. The bucket holds at most one second's worth
of tokens (``burst = rate``), and one take grants at most a tenth of a second's worth, so
sends are spread out instead of arriving in one burst. Throttling errors halve the rate
for everyone (AIMD); it recovers linearly, to full speed in ``1 / RECOVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from daemon import metrics
from outbox import errors
from outbox.store import Store

logger = logging.getLogger(__name__)

#: Factor regained per second after a backoff (0.02: from half speed to full in 25 s).
RECOVERY_PER_SECOND = 0.02
#: The rate never drops below this fraction of the configured rate.
FLOOR = 0.05
#: With the database unreachable: the first wait before asking again, and the longest.
_DB_RETRY_FIRST = 0.1
_DB_RETRY_MAX = 5.0


class RateLimiter:
    """Grants send permits for one channel at ``rate`` per second across the cluster."""

    def __init__(self, store: Store, channel: str, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.store = store
        self.channel = channel
        self.rate = rate
        self.burst = max(1.0, rate)
        self.max_take = max(1, math.ceil(rate / 10))
        self.effective_rate = rate
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.store.rate_init(self.channel, self.burst)

    def stop(self) -> None:
        self._stopping.set()

    async def acquire(self, want: int) -> int:
        """Wait until at least one permit is granted; returns how many (<= ``want``).

        Returns 0 only when stopping.
        """
        want = min(want, self.max_take)
        failures = 0
        while not self._stopping.is_set():
            try:
                granted, left, self.effective_rate = await self.store.rate_take(
                    self.channel, want, self.rate, self.burst, RECOVERY_PER_SECOND
                )
            except errors.DatabaseError as exc:
                # Backing off: at a high rate the wait for one token is a millisecond, and
                # a database that is down would be asked a thousand times a second.
                failures += 1
                wait = min(_DB_RETRY_FIRST * 2 ** (failures - 1), _DB_RETRY_MAX)
                if failures == 1 or wait == _DB_RETRY_MAX:
                    logger.warning(
                        "rate limiter: %s; asking again in %.1fs", exc, wait,
                        extra={"channel": self.channel},
                    )  # fmt: skip
                await self._pause(wait)
                continue
            failures = 0
            if granted:
                return granted
            # Sleep until one whole token will have accumulated.
            await self._pause(max((1.0 - left) / max(self.effective_rate, 1e-6), 0.001))
        return 0

    async def _pause(self, wait: float) -> None:
        """Sleep ``wait`` seconds, or until stopped."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(wait):
                await self._stopping.wait()
        except TimeoutError:
            pass
        metrics.RATE_LIMIT_WAIT.labels(self.channel).inc(time.monotonic() - started)

    async def release(self, unused: int) -> None:
        """Return permits that were granted but not used (the claim found fewer rows)."""
        if unused > 0:
            await self.store.rate_give_back(self.channel, unused, self.burst)

    async def throttled(self) -> None:
        """The provider throttled us: halve the cluster's rate for this channel."""
        factor = await self.store.rate_backoff(self.channel, RECOVERY_PER_SECOND, FLOOR)
        if factor is not None:
            logger.warning(
                "throttled: %s rate backs off to %.1f/s",
                self.channel,
                self.rate * factor,
                extra={"action": "ratelimit", "channel": self.channel},
            )
