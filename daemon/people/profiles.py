"""A person's profile and switches as the preference page needs them, and the people
layer's settings in the database. Like :mod:`outbox.store`, the only place that knows
these query names; driver errors become :class:`outbox.errors.DatabaseError`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import asyncpg

from outbox import sql
from outbox.store import _translated

#: A person's switches: (channel, category) -> enabled; either may be ``*`` (all).
Switches = Mapping[tuple[str, str], bool]


class Person(NamedTuple):
    key: str
    email: str | None
    phone: str | None


def switch_is_on(switches: Switches, channel: str, category: str) -> bool:
    """Whether ``channel`` is on for ``category``: the most specific switch wins, as in
    ``outbox.notify()``; no switch at all means on."""
    for where in ((channel, category), (channel, "*"), ("*", category), ("*", "*")):
        enabled = switches.get(where)
        if enabled is not None:
            return enabled
    return True


class PeopleStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def write_settings(self, *, hourly_cap: int | None) -> bool:
        """Store the per-person hourly cap (None: no cap); true if it changed."""
        async with _translated("people settings"):
            result: str = await self.pool.execute(sql.get("people_settings_write"), hourly_cap)
        return result != "UPDATE 0"

    async def person(self, key: str) -> Person | None:
        async with _translated("person"):
            row = await self.pool.fetchrow(sql.get("person_profile"), key)
        return None if row is None else Person(row["key"], row["email"], row["phone"])

    async def switches(self, key: str) -> dict[tuple[str, str], bool]:
        async with _translated("switches"):
            rows = await self.pool.fetch(sql.get("person_switches"), key)
        return {(row["channel"], row["category"]): row["enabled"] for row in rows}

    async def save_switches(self, key: str, switches: Iterable[tuple[str, str, bool]]) -> None:
        """Set each (channel, category, enabled) of person ``key``, in one statement."""
        channels, categories, enabled = [], [], []
        for channel, category, on in switches:
            channels.append(channel)
            categories.append(category)
            enabled.append(on)
        async with _translated("save switches"):
            await self.pool.execute(
                sql.get("person_switches_save"), key, channels, categories, enabled
            )


QUERY_NAMES = (
    "people_settings_write",
    "person_profile",
    "person_switches",
    "person_switches_save",
)
