"""The circuit breaker of one channel: while the provider refuses every send (sending
paused, credentials refused, server unreachable), claim nothing but one probe per cool-down.

A successful send closes the circuit; until then no attempt is used up, however long the
outage lasts. Most outages are short (a restart, a full disk cleaned up): the first probe
comes after an eighth of the cool-down, and each probe that fails doubles the wait, up to
the whole cool-down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from daemon import metrics

logger = logging.getLogger(__name__)

#: The first probe comes after this fraction of the cool-down.
_FIRST_PROBE_DIVISOR = 8


class CircuitBreaker:
    """Open (paused) or closed for one channel; opened by a provider's refusal."""

    def __init__(
        self, channel: str, cool_down: float, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.channel = channel
        self.cool_down = cool_down
        # The running event loop's clock by default: the one the lane's sleeps keep.
        self._clock = clock or _loop_time
        #: Why the circuit is open; None while closed.
        self.reason: str | None = None
        self._probe_at: float | None = None
        self._gap = cool_down
        self._gauge = metrics.CHANNEL_PAUSED.labels(channel)

    def open(self, reason: str) -> None:
        """The provider refused a send for every message alike: pause the channel."""
        if self.reason is None:
            self._gap = self.cool_down / _FIRST_PROBE_DIVISOR
            logger.error(
                "%s channel paused: %s; probing again in %.0fs",
                self.channel, reason, self._gap,
                extra={"action": "pause", "channel": self.channel},
            )  # fmt: skip
        self.reason = reason
        self._probe_at = self._clock() + self._gap
        self._gauge.set(1)

    def close(self) -> None:
        """A send went through: resume normal claiming."""
        if self.reason is None:
            return
        logger.warning("%s channel resumed", self.channel, extra={"action": "resume"})
        self.reason = None
        self._probe_at = None
        self._gauge.set(0)

    def until_probe(self) -> float | None:
        """None while closed; else seconds until the next probe may be claimed (0: now)."""
        if self._probe_at is None:
            return None
        return max(self._probe_at - self._clock(), 0.0)

    def probe_claimed(self) -> None:
        """One probe is on its way; should it fail, the next waits twice as long (at most
        the cool-down)."""
        self._gap = min(self._gap * 2, self.cool_down)
        self._probe_at = self._clock() + self._gap


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
