"""Recurring notifications: ``outbox.schedule`` rows fired as ``notify()`` calls.

A schedule's cron expression is evaluated in its person's time zone with cronsim (which
follows Debian cron across DST: a time that a spring-forward gap skips runs at the jump,
a time that a fall-back repeats runs once). Each due occurrence becomes one notify() with
idempotency key ``schedule:<id>:<occurrence as UTC ISO 8601>``, in the same transaction
that moves the schedule's ``next_at`` on, so two daemons never double an occurrence.

A daemon that was down finds occurrences it missed: it sends the newest
``OUTBOXD_PEOPLE__SCHEDULE_CATCH_UP`` of them and skips the older ones, saying how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from daemon.people.store import DueSchedule, PeopleStore, SchedulePlan
from outbox import errors

logger = logging.getLogger(__name__)
_jitter = random.Random()

#: How many skipped occurrences are counted exactly (an every-minute schedule down for a
#: year misses half a million); beyond it the log says "more than".
SKIP_COUNT_LIMIT = 10_000


def plan(schedule: DueSchedule, now: datetime, catch_up: int) -> tuple[SchedulePlan, int]:
    """What to do with a due (or unplanned) schedule at ``now``: a pure function.

    Returns the plan and how many missed occurrences it skips (``SKIP_COUNT_LIMIT + 1``
    standing for "more than the limit"). ``next_at`` is itself an occurrence (an app may
    set it by hand); an unplanned schedule (``next_at`` NULL) starts at the first cron
    time after its definition last changed.
    """
    try:
        zone = ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        error = f"time zone {schedule.timezone!r} is unknown to the daemon's time zone database"
        return SchedulePlan(schedule.id, error=error), 0
    try:
        first = schedule.next_at or _next(schedule.cron, schedule.updated_at, zone)
        if first > now:
            return SchedulePlan(schedule.id, next_at=first), 0
        # The newest `catch_up` cron times in (first, now], newest first.
        newest: list[datetime] = []
        # Reverse iteration excludes its start: one second on includes `now` itself.
        for local in CronSim(schedule.cron, _whole_second(now, zone), reverse=True):
            occurrence = local.astimezone(UTC)
            if occurrence <= first or len(newest) == catch_up:
                break
            newest.append(occurrence)
        skipped = 0
        if len(newest) < catch_up:
            newest.append(first)
        else:
            skipped = min(1 + _count_between(schedule.cron, first, newest[-1], zone),
                          SKIP_COUNT_LIMIT + 1)  # fmt: skip
        following = _next(schedule.cron, now, zone)
    except CronSimError as exc:
        return SchedulePlan(schedule.id, error=f"cron {schedule.cron!r}: {exc}"), 0
    except StopIteration:
        return SchedulePlan(schedule.id, error=f"cron {schedule.cron!r} never occurs"), 0
    return SchedulePlan(schedule.id, tuple(reversed(newest)), following), skipped


def _next(cron: str, after: datetime, zone: ZoneInfo) -> datetime:
    """The first cron time (local in ``zone``) after ``after``, in UTC.

    In UTC because an aware datetime in a fall-back hour never compares equal to one in
    another zone (PEP 495), while UTC ones compare as instants.
    """
    return next(CronSim(cron, after.astimezone(zone))).astimezone(UTC)


def _whole_second(now: datetime, zone: ZoneInfo) -> datetime:
    return (now.replace(microsecond=0) + timedelta(seconds=1)).astimezone(zone)


def _count_between(cron: str, after: datetime, before: datetime, zone: ZoneInfo) -> int:
    """Cron times strictly between two instants, counted up to SKIP_COUNT_LIMIT + 1."""
    count = 0
    for local in CronSim(cron, after.astimezone(zone)):
        if local.astimezone(UTC) >= before or count > SKIP_COUNT_LIMIT:
            break
        count += 1
    return count


class Scheduler:
    """Fires due schedules; as a loop, every ``interval`` until the daemon stops."""

    def __init__(
        self, store: PeopleStore, *, interval: float, catch_up: int, batch: int = 200
    ) -> None:
        self.store = store
        self.interval = interval
        self.catch_up = catch_up
        self.batch = batch

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.fire_due()
            except errors.DatabaseError as exc:
                logger.warning("schedules failed: %s", exc, extra={"action": "schedule"})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval * _jitter.uniform(0.8, 1.0)):
                    await stopping.wait()

    async def fire_due(self, as_of: datetime | None = None) -> int:
        """Fire everything due at ``as_of`` (default: now); returns how many notify() calls."""
        fired = 0
        while True:
            plans = await self.store.fire_schedules(self.batch, self._plan, as_of)
            fired += sum(len(p.occurrences) for p in plans)
            if len(plans) < self.batch:
                return fired

    def _plan(self, schedules: Sequence[DueSchedule]) -> list[SchedulePlan]:
        plans = []
        for schedule in schedules:
            planned, skipped = plan(schedule, schedule.as_of, self.catch_up)
            if planned.error:
                logger.warning(
                    "schedule %d cannot be planned: %s",
                    schedule.id,
                    planned.error,
                    extra={"action": "schedule"},
                )
            if skipped:
                logger.warning(
                    "schedule %d: skipped %s missed occurrences older than the newest %d "
                    "(the daemon was not running)",
                    schedule.id,
                    f"more than {SKIP_COUNT_LIMIT}" if skipped > SKIP_COUNT_LIMIT else skipped,
                    self.catch_up,
                    extra={"action": "schedule", "count": skipped},
                )
            plans.append(planned)
        return plans
