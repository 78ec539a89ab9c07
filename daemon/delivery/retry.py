"""What an error means for the message: a pure decision, testable without a database.

The class of the error carries the decision (see :mod:`outbox.errors`): a refused channel
or throttling retries later without using an attempt; a transient error retries with
exponential backoff and full jitter until attempts run out; anything else fails now.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

from daemon.settings import WorkerSettings
from outbox import errors
from outbox.models import Status

_random = random.Random()

#: How long a throttled message waits when the provider gives no hint.
THROTTLE_DELAY_SECONDS = 1.0


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


class Verdict(NamedTuple):
    """What happens to a message whose attempt failed."""

    #: ``pending`` (retried) or ``failed``.
    status: Status
    #: The reason, as stored in ``last_error``.
    error: str
    #: Why, as a metrics label: paused, throttled, transient (retried); exhausted,
    #: template, invalid_recipient, permanent (failed).
    kind: str
    #: For a retry: seconds until it becomes due.
    retry_delay: float = 0.0
    #: True when this attempt must not count.
    refund: bool = False


def decide(
    exc: errors.OutboxError,
    attempts: int,
    worker: WorkerSettings,
    *,
    rand: Callable[[], float] = _random.random,
) -> Verdict:
    """The verdict for attempt number ``attempts`` failing with ``exc``."""
    reason = exc.reason
    if isinstance(exc, errors.ChannelPaused | errors.Throttled):
        # The same for every message of the channel: no attempt is used up.
        paused = isinstance(exc, errors.ChannelPaused)
        default = worker.pause_seconds if paused else THROTTLE_DELAY_SECONDS
        return Verdict(
            Status.PENDING,
            reason,
            "paused" if paused else "throttled",
            retry_delay=exc.retry_after or default,
            refund=True,
        )
    if isinstance(exc, errors.TransientError):
        if attempts >= worker.max_attempts:
            return Verdict(Status.FAILED, f"attempts exhausted ({attempts}): {reason}", "exhausted")
        delay = exc.retry_after or backoff_delay(
            attempts, base=worker.retry_base_seconds, cap=worker.retry_max_seconds, rand=rand
        )
        return Verdict(Status.PENDING, reason, "transient", retry_delay=delay)
    if isinstance(exc, errors.TemplateError):
        return Verdict(Status.FAILED, reason, "template")
    if isinstance(exc, errors.InvalidRecipient):
        return Verdict(Status.FAILED, reason, "invalid_recipient")
    return Verdict(Status.FAILED, reason, "permanent")
