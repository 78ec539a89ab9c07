"""The digest flush: batched notifications folded into one message per group.

``notify(..., digest_key, digest_window)``, or a person's hourly / daily / weekly
frequency for a category, leaves message rows ``batched``. Once a group's window (counted
from its first item) has closed, this loop folds the group - the items of one person on
one channel under one digest key - into one pending message, rendered with
``<template>/digest`` when there is one, else ``digest``. The folding itself is one SQL
statement per chunk of groups (``digest_flush`` in sql/queries.sql), so it happens exactly
once however many daemons run and wherever one of them dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from daemon.people.store import DigestGroup, FlushCounts, PeopleStore, unavailable
from outbox import errors

logger = logging.getLogger(__name__)
_jitter = random.Random()

#: The parts a template needs per channel (the plain, locale-less ones).
_REQUIRED_PARTS = {
    "email": ("subject.j2", "text.j2"),
    "sms": ("sms.j2",),
    "inapp": ("subject.j2", "inapp.j2"),
}
#: How many chunks' worth of due groups one listing fetches.
_CHUNKS_PER_LISTING = 20
#: How soon to look again at a group that is due but was not flushed (held elsewhere).
_OVERDUE_RETRY_SECONDS = 0.5


class DigestTemplates:
    """Which templates have their own ``<template>/digest`` variant, per channel.

    Looked up in each directory in turn (the configured one, then the bundled templates),
    afresh on every flush so that a variant deployed later is used.
    """

    def __init__(self, directories: Sequence[Path]) -> None:
        self.directories = list(dict.fromkeys(Path(d) for d in directories))

    def pairs(self) -> list[tuple[str, str]]:
        """(channel, template) for every template whose digest variant suits the channel."""
        found: set[tuple[str, str]] = set()
        for directory in self.directories:
            try:
                variants = [p for p in directory.rglob("digest") if p.is_dir()]
            except OSError as exc:
                logger.warning("cannot read templates in %s: %s", directory, exc)
                continue
            for variant in variants:
                template = variant.parent.relative_to(directory).as_posix()
                if template == "." or any(part.startswith("_") for part in template.split("/")):
                    continue
                for channel, parts in _REQUIRED_PARTS.items():
                    if all((variant / part).is_file() for part in parts):
                        found.add((channel, template))
        return sorted(found)


class DigestFlusher:
    """Folds every group whose window has closed; as a loop, until the daemon stops."""

    def __init__(
        self,
        store: PeopleStore,
        templates: DigestTemplates,
        *,
        interval: float,
        batch: int,
    ) -> None:
        self.store = store
        self.templates = templates
        self.interval = interval
        #: Groups folded per transaction.
        self.batch = batch
        #: Groups that could not be flushed in the last pass.
        self.failed = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush now and then: when the next window closes, at most every ``interval``."""
        while not stopping.is_set():
            wait = self.interval
            try:
                await self.flush_due()
                wait = self.wait_after_pass(await self.store.seconds_to_next_digest())
            except errors.DatabaseError as exc:
                logger.warning("digest flush failed: %s", exc, extra={"action": "digest"})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stopping.wait()

    def wait_after_pass(self, next_due: float | None) -> float:
        """Seconds to wait after a pass, given when the next window closes (None: none)."""
        # Jittered, so that several daemons do not poll in step.
        wait = self.interval * _jitter.uniform(0.9, 1.0)
        if next_due is not None and next_due > 0:
            return min(wait, next_due + 0.05)
        if next_due is not None and not self.failed:
            # Overdue: it closed while this pass ran, or another daemon holds it.
            return min(wait, _OVERDUE_RETRY_SECONDS)
        # Nothing waits, or a group fails: the full interval, not a retry storm.
        return wait

    async def flush_due(self, as_of: datetime | None = None) -> FlushCounts:
        """Fold every group due at ``as_of`` (default: the database's now)."""
        total = FlushCounts()
        self.failed = 0
        pairs = self.templates.pairs()
        listing = self.batch * _CHUNKS_PER_LISTING
        while True:
            groups = await self.store.due_digest_groups(listing, as_of)
            done = FlushCounts()
            for start in range(0, len(groups), self.batch):
                done += await self._flush(groups[start : start + self.batch], pairs, as_of)
            total += done
            # A short listing was the last; one with nothing folded is held elsewhere.
            if len(groups) < listing or not (done.digests or done.expired):
                break
        if total.digests or total.expired:
            logger.info(
                "digests: %d sent for %d items (%d expired)",
                total.digests,
                total.items,
                total.expired,
                extra={"action": "digest", "count": total.digests},
            )
        return total

    async def _flush(
        self,
        groups: Sequence[DigestGroup],
        pairs: Sequence[tuple[str, str]],
        as_of: datetime | None,
    ) -> FlushCounts:
        """One chunk in one transaction; a chunk that fails is split to find the bad group."""
        try:
            return await self.store.flush_digests(groups, pairs, as_of)
        except errors.DatabaseError as exc:
            if unavailable(exc.__cause__ or exc):
                raise
            if len(groups) == 1:
                group = groups[0]
                logger.error(
                    "digest %s of %s on %s cannot be flushed: %s",
                    group.digest_key,
                    group.recipient_key,
                    group.channel,
                    exc,
                    extra={"action": "digest"},
                )
                self.failed += 1
                return FlushCounts()
        middle = len(groups) // 2
        first = await self._flush(groups[:middle], pairs, as_of)
        return first + await self._flush(groups[middle:], pairs, as_of)
