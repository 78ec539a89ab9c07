"""The people layer's loops, as the daemon's TaskGroup runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from daemon.people.digests import DigestFlusher, DigestTemplates
from daemon.people.schedules import Scheduler
from daemon.people.store import PeopleStore
from daemon.settings import Settings
from outbox import resources

#: A loop that runs until the event is set.
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def build(pool: asyncpg.Pool, settings: Settings) -> dict[str, Loop]:
    """The digest flush and the schedules, by task name."""
    store = PeopleStore(pool)
    people = settings.people
    templates = DigestTemplates([settings.templates_path, resources.bundled_templates_dir()])
    flusher = DigestFlusher(
        store, templates, interval=people.digest_interval, batch=people.digest_batch
    )
    scheduler = Scheduler(
        store,
        interval=settings.worker.poll_interval,
        catch_up=people.schedule_catch_up,
        batch=people.schedule_batch,
    )
    return {"digests": flusher.run, "schedules": scheduler.run}
