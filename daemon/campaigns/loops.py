"""The campaign loop the daemon runs beside its claim loops.

Each pass starts the scheduled campaigns whose ``send_at`` has come, picks the winners of
A/B tests whose ``winner_after`` has passed (and sends the rest with them), marks sent the
campaigns whose messages are all finished, and runs the due steps of drip sequences. All
of it is SQL (``sql/migrations/0010_campaigns.sql``) taken under row locks with SKIP
LOCKED, so any number of daemons may run the loop at once. The messages it makes are
ordinary rows at priority 0, claimed after transactional mail by the same lanes, within
the same cluster-wide rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

from daemon.campaigns.store import CampaignStore
from daemon.settings import Settings
from outbox import errors

logger = logging.getLogger(__name__)

#: A loop that runs until the event is set.
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class PassResult:
    """What one pass did (tests and logs read it)."""

    started: int = 0
    winners: int = 0
    finished: int = 0
    sequence_steps: int = 0


class CampaignLoop:
    """Runs :meth:`run_once` every ``interval`` seconds until stopped."""

    def __init__(self, store: CampaignStore, *, interval: float, sequence_batch: int) -> None:
        self.store = store
        self.interval = interval
        self.sequence_batch = sequence_batch

    async def run_once(self) -> PassResult:
        """One pass; raises DatabaseError when the database cannot be reached."""
        result = PassResult()
        while (started := await self.store.start_due()) is not None:
            result.started += 1
            if started.error:
                logger.warning(
                    "campaign %d went back to draft: %s", started.campaign_id, started.error,
                    extra={"action": "campaign", "campaign_id": started.campaign_id},
                )  # fmt: skip
            else:
                logger.info(
                    "campaign %d started: %d messages", started.campaign_id, started.messages,
                    extra={"action": "campaign", "campaign_id": started.campaign_id},
                )  # fmt: skip
        while (picked := await self.store.pick_due_winner()) is not None:
            result.winners += 1
            logger.info(
                "campaign %d: variant %s won the A/B test", *picked,
                extra={"action": "campaign", "campaign_id": picked[0]},
            )  # fmt: skip
        result.finished = await self.store.finish()
        while True:
            handled = await self.store.advance_sequences(self.sequence_batch)
            result.sequence_steps += handled
            if handled < self.sequence_batch:
                break
        return result

    async def run(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            delay = self.interval
            try:
                await self.run_once()
                failures = 0
            except errors.DatabaseError as exc:
                failures += 1
                delay = min(self.interval, 0.5 * 2**failures)
                logger.warning("campaign loop: %s", exc, extra={"action": "campaign"})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()


def build(pool: asyncpg.Pool, settings: Settings) -> dict[str, Loop]:
    """The campaign loop, by task name."""
    loop = CampaignLoop(
        CampaignStore(pool),
        interval=settings.campaigns.interval,
        sequence_batch=settings.campaigns.sequence_batch,
    )
    return {"campaigns": loop.run}
