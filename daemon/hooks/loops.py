"""The webhook lane and its LISTEN connection, as the daemon's supervised loops."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from daemon.campaigns.loops import Loop
from daemon.delivery.wakeup import WakeupListener
from daemon.hooks.lane import HookLane
from daemon.hooks.store import HookStore
from daemon.settings import Settings

#: NOTIFY channel of the triggers that write deliveries (migration 0012).
CHANNEL = "outbox_webhook"


def build(
    pool: asyncpg.Pool, settings: Settings, *, dsn: str | None, worker_id: str
) -> dict[str, Loop]:
    """The loops by task name: none when OUTBOXD_HOOKS__ENABLED is false.

    ``dsn`` is the direct connection to LISTEN on; None (behind a transaction pooler) polls.
    """
    if not settings.hooks.enabled:
        return {}
    lane = HookLane(
        HookStore(pool),
        settings.hooks,
        worker_id=worker_id,
        grace_seconds=settings.worker.grace_seconds,
        retention_seconds=(
            settings.worker.retention_days * 86400 if settings.worker.retention_days else None
        ),
    )
    listener = WakeupListener(dsn, lane.wake, channel=CHANNEL)

    async def listen(stopping: asyncio.Event) -> None:
        task = asyncio.create_task(listener.run(), name="hooks-listen")
        try:
            await stopping.wait()
        finally:
            listener.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return {"hooks": lane.run, "hooks-listener": listen}
