"""The README's inbox examples, run exactly as written: tokens minted in Python, Node and
the shell verify, and the SQL runs against a migrated database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import asyncpg
import pytest

from outbox import upsert_recipient
from outbox.inbox import read_inbox_token
from tests.readme_blocks import block

SECTION = "In-app inbox: the bell"
SECRET_KEY = "ünïcode-first-key,older-key"


def _run(argv: list[str], stdin: str | None = None) -> str:
    env = {**os.environ, "OUTBOXD_SECRET_KEY": SECRET_KEY}
    done = subprocess.run(
        argv, input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _assert_token_for_u42(output: str) -> None:
    token = output.strip()
    claim = read_inbox_token(token, [SECRET_KEY.split(",")[0]])
    assert claim.key == "u42"
    assert abs(claim.expires - (time.time() + 3600)) < 60
    # Signed with the first key only.
    with pytest.raises(ValueError, match="bad signature"):
        read_inbox_token(token, ["older-key"])


def test_python_token_example() -> None:
    _assert_token_for_u42(_run([sys.executable, "-c", block(SECTION, "python", "inbox_token")]))


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_token_example() -> None:
    _assert_token_for_u42(_run(["node", "-e", block(SECTION, "js", "require(")]))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_shell_openssl_token_example() -> None:
    _assert_token_for_u42(_run(["bash", "-c", block(SECTION, "sh", "openssl")]))


async def test_sql_examples(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_recipient(conn, "u42", email="ann@example.com", phone="+14155550100")
        await conn.execute(
            "INSERT INTO outbox.inbox (id, recipient_key, title) OVERRIDING SYSTEM VALUE"
            " VALUES (17, 'u42', 'a'), (18, 'u42', 'b'), (19, 'u42', 'c')"
        )
        await conn.execute(block(SECTION, "sql", "inbox_unread_count"))
        assert await conn.fetchval("SELECT outbox.inbox_unread_count('u42')") == 0
        read = await conn.fetch("SELECT id FROM outbox.inbox WHERE read_at IS NOT NULL")
        assert sorted(r["id"] for r in read) == [17, 18, 19]

        await conn.execute(block(SECTION, "sql", "escalate_after"))
        rows = await conn.fetch("SELECT channel, status, not_before - created_at AS wait"
                                " FROM outbox.message ORDER BY channel")  # fmt: skip
        by_channel = {r["channel"]: r for r in rows}
        assert set(by_channel) == {"email", "inapp", "sms"}
        assert by_channel["inapp"]["wait"].total_seconds() < 5
        assert by_channel["email"]["wait"].total_seconds() >= 15 * 60
