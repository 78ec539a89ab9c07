"""``outboxd campaign`` as operators use it, in real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg

from tests.integration.campaign_helpers import (
    add_campaign,
    add_list,
    add_people,
    service,
    subscribe,
)


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(
        OUTBOXD_DATA_DIR=str(tmp_path / "cli"), OUTBOXD_LOG_FORMAT="text",
        OUTBOXD_DATABASE_URL=database_url,
    )  # fmt: skip
    return env


async def outboxd(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the command line without blocking the event loop (a daemon may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _setup(pool: asyncpg.Pool, people: int = 30) -> int:
    keys = [f"p{i:02}" for i in range(people)]
    await add_people(pool, {k: {} for k in keys})
    await add_list(pool, "news")
    await subscribe(pool, "news", keys)
    return await add_campaign(
        pool, 1, name="Spring sale", variants=[{"subject": "Sale"}, {"subject": "20% off"}]
    )


async def test_list_show_start_stats_cancel(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    campaign = await _setup(pool)
    env = _env(tmp_path, database_url)

    code, out, err = await outboxd(env, "campaign", "list")
    assert code == 0, err
    assert "Spring sale" in out and "draft" in out
    code, out, _ = await outboxd(env, "campaign", "list", "--json")
    [row] = json.loads(out)
    assert (row["id"], row["status"], row["list_name"]) == (campaign, "draft", "news")

    code, out, err = await outboxd(env, "campaign", "start", str(campaign), "--progress")
    assert code == 0, err
    assert out.strip() == f"campaign {campaign} started: 30 messages to send"
    assert "expanding [" in err and "30/30" in err

    code, _, err = await outboxd(env, "campaign", "start", str(campaign))
    assert code == 1
    assert err.strip() == f"outboxd: campaign {campaign} is already sending"

    code, out, err = await outboxd(env, "campaign", "show", str(campaign))
    assert code == 0, err
    assert "variant A    'Sale'" in out and "variant B    '20% off'" in out
    assert "messages     pending 30" in out

    code, out, err = await outboxd(env, "campaign", "stats", str(campaign), "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert [(v["variant"], v["sent"]) for v in stats["variants"]] == [("A", 0), ("B", 0)]
    code, out, _ = await outboxd(env, "campaign", "stats", str(campaign))
    assert "opened" in out and "unsubscribed" in out

    code, out, err = await outboxd(env, "campaign", "cancel", str(campaign))
    assert code == 0, err
    assert out.strip() == f"campaign {campaign} cancelled: 30 pending messages will not be sent"
    assert (
        await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status = 'cancelled'") == 30
    )

    code, _, err = await outboxd(env, "campaign", "show", "999")
    assert (code, err.strip()) == (1, "outboxd: no campaign 999")
    code, _, err = await outboxd(env, "campaign", "start", "0")
    assert code == 2 and "at least 1" in err


async def test_start_schedules_a_campaign_for_later(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await add_list(pool, "news")
    campaign = await add_campaign(pool, 1, send_at="2999-01-01T09:00:00Z")
    code, out, err = await outboxd(_env(tmp_path, database_url), "campaign", "start", str(campaign))
    assert code == 0, err
    assert out.strip() == f"campaign {campaign} scheduled for 2999-01-01 09:00 UTC"
    assert await pool.fetchval("SELECT status FROM outbox.campaign") == "scheduled"


async def test_start_follows_the_sending(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    campaign = await _setup(pool, people=12)
    async with service(database_url, tmp_path / "daemon"):
        code, out, err = await outboxd(
            _env(tmp_path, database_url), "campaign", "start", str(campaign), "--follow",
            "--progress",
        )  # fmt: skip
    assert code == 0, err
    assert out.strip().splitlines() == [
        f"campaign {campaign} started: 12 messages to send",
        f"campaign {campaign} sent: sent 12",
    ]
    assert "sending   [" in err and "12/12" in err
