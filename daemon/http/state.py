"""What the HTTP service knows of the daemon that runs it, handed over by :mod:`daemon.main`.

A small object instead of the daemon itself keeps the HTTP rooms from importing the
lifecycle (and the lifecycle from being shaped by what a route happens to read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from daemon.settings import Settings
from outbox.store import Store


@dataclass(frozen=True, slots=True)
class ServiceState:
    """The daemon's state as health checks and routes need it."""

    settings: Settings
    store: Store
    #: Keys that sign and verify unsubscribe tokens (the first signs).
    signing_keys: Sequence[bytes]
    #: Set once the daemon begins to stop: readiness fails from then on.
    stopping: asyncio.Event
    #: Seconds since the slowest claim loop last completed a cycle.
    heartbeat_age: Callable[[], float]
    #: Channels whose circuit is open, with the provider's reason.
    paused: Callable[[], Mapping[str, str]]
    #: The database DSN, for connections of their own (the inbox's LISTEN); None: use the pool.
    dsn: str | None = None
    #: False behind a transaction pooler without a direct LISTEN DSN: no live streams.
    listen: bool = True
    #: Channels whose sends have been in flight for long with no message reaching an end
    #: (a tarpit), with those seconds: readiness fails.
    stalled_channels: Callable[[], Mapping[str, float]] = field(default=lambda: {})
    #: Why the process is not alive (a loop that died or stopped making progress):
    #: liveness fails.
    liveness: Callable[[], Sequence[str]] = field(default=lambda: ())
