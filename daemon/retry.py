"""Retry delays: exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Callable

_random = random.Random()


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = _random.random,
) -> float:
    """Delay before retry number ``attempt`` (1-based): uniform in [0, min(cap, base*2^(n-1))].

    Full jitter spreads retries of a burst of failures (e.g. an SMTP outage) evenly instead
    of having every daemon hammer the provider again at the same instant.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 62))
    return rand() * ceiling
