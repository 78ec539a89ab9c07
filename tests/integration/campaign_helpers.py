"""People, lists and campaigns for the campaign tests, written with plain SQL as an
application would."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from daemon.main import Daemon
from tests.integration.daemon_helpers import Recorder, make_settings, read_eml


async def add_people(
    pool: asyncpg.Pool, people: Mapping[str, Mapping[str, Any]], *, email: bool = True
) -> None:
    """Upsert people by key, each with attrs; email ``<key>@example.com`` unless told not to."""
    await pool.executemany(
        "INSERT INTO outbox.recipient (key, email, attrs) VALUES ($1, $2, $3::jsonb)",
        [(key, f"{key}@example.com" if email else None, json.dumps(dict(attrs)))
         for key, attrs in people.items()],
    )  # fmt: skip


async def add_list(pool: asyncpg.Pool, name: str = "news", *, double_opt_in: bool = False) -> int:
    list_id: int = await pool.fetchval(
        "INSERT INTO outbox.list (name, double_opt_in) VALUES ($1, $2) RETURNING id",
        name,
        double_opt_in,
    )
    return list_id


async def subscribe(pool: asyncpg.Pool, list_name: str, keys: Iterable[str]) -> None:
    """``outbox.subscribe`` for each key (active at once on a single-opt-in list)."""
    for key in keys:
        await pool.fetchval(
            "SELECT outbox.subscribe(list_name => $1, recipient_key => $2, source => 'test')",
            list_name,
            key,
        )


async def add_campaign(pool: asyncpg.Pool, list_id: int, **fields: Any) -> int:
    """An ``outbox.campaign`` row (template ``newsletter`` unless told otherwise)."""
    values: dict[str, Any] = {
        "name": "Spring",
        "template": "newsletter",
        "context": {"subject": "Spring news", "body": "Our spring news."},
        **fields,
    }
    names = ["list_id", *values]
    args = [
        list_id,
        *(json.dumps(v) if isinstance(v, (dict, list)) else v for v in values.values()),
    ]
    casts = {"segment": "::jsonb", "variants": "::jsonb", "context": "::jsonb",
             "winner_after": "::text::interval", "test_percent": "::numeric",
             "send_at": "::text::timestamptz"}  # fmt: skip
    placeholders = [f"${i}{casts.get(n, '')}" for i, n in enumerate(names, 1)]
    campaign_id: int = await pool.fetchval(
        f"INSERT INTO outbox.campaign ({', '.join(names)}) VALUES ({', '.join(placeholders)}) "
        "RETURNING id",
        *args,
    )
    return campaign_id


async def campaign_messages(pool: asyncpg.Pool, campaign_id: int) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT * FROM outbox.message WHERE campaign_id = $1 ORDER BY recipient_key",
            campaign_id,
        )
    )


async def stats(pool: asyncpg.Pool, campaign_id: int) -> dict[str | None, dict[str, int]]:
    rows = await pool.fetch(
        "SELECT * FROM outbox.campaign_stats WHERE campaign_id = $1", campaign_id
    )
    return {
        row["variant"]: {k: v for k, v in dict(row).items() if k not in ("campaign_id", "variant")}
        for row in rows
    }


async def mark_sent(pool: asyncpg.Pool, campaign_id: int) -> None:
    """What a daemon would do to the campaign's messages, without one."""
    await pool.execute(
        "UPDATE outbox.message SET status = 'sent', sent_at = now(), "
        "provider_message_id = 'pm-' || id WHERE campaign_id = $1 AND status = 'pending'",
        campaign_id,
    )


async def add_event(
    pool: asyncpg.Pool, message_id: int, event_type: str, source_id: str, subtype: str | None = None
) -> None:
    """A feedback event as the feedback store records it."""
    await pool.execute(
        "INSERT INTO outbox.event (message_id, source, source_id, event_type, subtype) "
        "VALUES ($1, 'ses', $2, $3, $4) ON CONFLICT DO NOTHING",
        message_id,
        source_id,
        event_type,
        subtype,
    )


class Service:
    """A running daemon with its HTTP service, and the recorder of its completions."""

    def __init__(self, daemon: Daemon, recorder: Recorder, outgoing: Path) -> None:
        self.daemon = daemon
        self.recorder = recorder
        self.outgoing = outgoing

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    def local(self, link: str) -> str:
        """A link from a message (on the public URL), pointed at this daemon."""
        parts = urlsplit(link)
        return f"{self.url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def eml(self, message_id: int) -> email.message.EmailMessage:
        return read_eml(self.outgoing, message_id)


PUBLIC_URL = "https://mail.acme.example"
SECRET = "test-key-1"


@contextlib.asynccontextmanager
async def service(database_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Service]:
    """A daemon with HTTP on a free port, a fast campaign loop, links on PUBLIC_URL."""
    settings = make_settings(
        database_url,
        tmp_path,
        http={"host": "127.0.0.1", "port": 0},
        public_url=PUBLIC_URL,
        secret_key=SECRET,
        campaigns={"interval": 0.1, **overrides.pop("campaigns", {})},
        **overrides,
    )
    daemon = Daemon(settings, dsn=database_url)
    recorder = Recorder()
    daemon.completion_listeners.append(recorder)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.started.wait(), 30)
        yield Service(daemon, recorder, tmp_path / "outgoing")
    finally:
        daemon.request_stop()
        await task


async def wait_until(
    check: Callable[[], Awaitable[bool]], signal: asyncio.Event | None = None, within: float = 30
) -> None:
    """Until ``check`` (a database read) holds, looking again whenever ``signal`` fires (a
    daemon's recorder: a result was written) and at least every 0.2 s (the campaign loop
    has no signal of its own); fails after ``within`` seconds."""
    signal = signal or asyncio.Event()
    async with asyncio.timeout(within):
        while not await check():
            signal.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await signal.wait()


async def fetch(
    url: str, *, method: str = "GET", data: Any = None, redirects: bool = True
) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, allow_redirects=redirects) as response,
    ):
        body = (await response.read()).decode("utf-8", errors="replace")
        return response.status, body, dict(response.headers)
