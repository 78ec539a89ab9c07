"""Every SQL block of docs/CAMPAIGNS.md, run in order in one database as written; then
the daemon sends everything they made."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from tests.integration.daemon_helpers import drain, make_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "CAMPAIGNS.md"
_SQL = re.compile(r"^```sql\n(?P<body>.*?)^```$", re.M | re.S)


async def test_the_sql_of_the_campaign_guide(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    blocks = [m["body"] for m in _SQL.finditer(DOC.read_text(encoding="utf-8"))]
    assert len(blocks) >= 6
    async with pool.acquire() as conn:
        for block in blocks:
            await conn.execute(block)
        # What a daemon's loop does for the sequence the guide enrolls u42 in.
        assert await conn.fetchval("SELECT outbox.advance_sequences()") == 1
    await drain(make_settings(database_url, tmp_path), database_url)
    rows = await pool.fetch(
        "SELECT template, status, campaign_id, tags FROM outbox.message ORDER BY id"
    )
    assert [(r["template"], r["status"]) for r in rows] == [
        ("list_confirm", "sent"), ("newsletter", "sent"), ("newsletter", "sent")
    ]  # fmt: skip
    assert await pool.fetchval("SELECT status FROM outbox.subscription") == "active"
    assert await pool.fetchval("SELECT audience FROM outbox.campaign") == 1
