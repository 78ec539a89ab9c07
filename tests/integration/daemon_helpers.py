"""Building settings and running the real daemon in-process for tests."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg

from daemon.main import Daemon
from daemon.settings import Settings
from outbox import NewMessage, enqueue_many
from outbox.models import Channel
from outbox.store import Completion

#: HTTP settings of a test daemon: loopback, each server on a port the kernel picks.
FREE_PORTS = {"host": "127.0.0.1", "port": 0, "admin_port": 0}


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Fast settings for tests: short polls and retries, no HTTP unless asked, and when
    asked, both servers on free loopback ports (another run may hold the defaults)."""
    worker = {
        "poll_interval": 0.2,
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "reap_interval": 0.2,
        "grace_seconds": 5.0,
        **overrides.pop("worker", {}),
    }
    http = overrides.pop("http", None)
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "file": {"dir": tmp_path / "outgoing"},
        "http": {"enabled": False} if http is None else {**FREE_PORTS, **http},
        "worker": worker,
        "email": {"from": "Acme <noreply@acme.example>", **overrides.pop("email", {})},
    }
    values.update(overrides)
    return Settings(**values)


async def drain(settings: Settings, database_url: str, **kwargs: Any) -> Daemon:
    """Run the daemon until nothing is due, and return it."""
    daemon = Daemon(settings, dsn=database_url, **kwargs)
    await asyncio.wait_for(daemon.run(until_empty=True), timeout=60)
    return daemon


@contextlib.asynccontextmanager
async def running(settings: Settings, database_url: str) -> AsyncIterator[tuple[Daemon, Recorder]]:
    """A started daemon and the recorder of its completions; stopped gracefully on exit."""
    daemon = Daemon(settings, dsn=database_url)
    recorder = Recorder()
    daemon.completion_listeners.append(recorder)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.started.wait(), 30)
        yield daemon, recorder
    finally:
        daemon.request_stop()
        await task


class Recorder:
    """Collects completions written by a daemon (its test signal)."""

    def __init__(self) -> None:
        self.completions: list[Completion] = []
        self.changed = asyncio.Event()

    def __call__(self, batch: Any) -> None:
        self.completions.extend(batch)
        self.changed.set()

    async def wait_for(self, count: int, within: float = 30) -> None:
        async with asyncio.timeout(within):
            while len(self.completions) < count:
                self.changed.clear()
                await self.changed.wait()


async def statuses(pool: asyncpg.Pool) -> dict[int, Mapping[str, Any]]:
    rows = await pool.fetch("SELECT * FROM outbox.message ORDER BY id")
    return {row["id"]: dict(row) for row in rows}


async def welcome_backlog(pool: asyncpg.Pool, count: int) -> None:
    """``count`` welcome emails to user0@example.com, user1@example.com, ..."""
    context = {"name": "U", "login_url": "https://x.example"}
    async with pool.acquire() as conn:
        await enqueue_many(
            conn,
            [NewMessage("email", f"user{i}@example.com", "welcome", context) for i in range(count)],
        )


def read_eml(directory: Path, message_id: int) -> email.message.EmailMessage:
    data = (directory / f"{message_id}.eml").read_bytes()
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


__all__ = [
    "Channel",
    "Recorder",
    "drain",
    "make_settings",
    "read_eml",
    "running",
    "statuses",
    "welcome_backlog",
]  # fmt: skip
