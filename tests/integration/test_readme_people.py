"""The README's "Notify people" examples, run exactly as written against a test database
and drained by the daemon with the file provider: every row they make ends ``sent``.

The SQL block runs as a script; the asyncpg block with ``conn`` bound (top-level await);
the Django and SQLAlchemy blocks in a process of their own (Django is configured once per
process) with Django's settings, or ``engine``, pointed at the test database.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from tests.integration.daemon_helpers import drain, make_settings

README = Path(__file__).parents[2] / "README.md"

_DJANGO = """
import sys
import django
from django.conf import settings
from psycopg.conninfo import conninfo_to_dict

info = conninfo_to_dict(sys.argv[1])
settings.configure(DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": info.get("dbname", ""),
    "USER": info.get("user", ""), "PASSWORD": info.get("password", ""),
    "HOST": info.get("host", ""), "PORT": info.get("port", ""),
}})
django.setup()
exec(sys.stdin.read())
"""

_SQLALCHEMY = """
import sys
import psycopg
from sqlalchemy import create_engine

engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(sys.argv[1]))
exec(sys.stdin.read())
engine.dispose()
"""


def blocks() -> dict[str, str]:
    """The section's code blocks, by what runs them."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Notify people\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for language, code in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        if language == "sql":
            kind = "sql"
        elif "django" in code:
            kind = "django"
        elif "sqlalchemy" in code:
            kind = "sqlalchemy"
        else:
            kind = "asyncpg"
        assert kind not in found, f"two {kind} blocks"
        found[kind] = code
    return found


def test_the_section_has_every_example() -> None:
    assert sorted(blocks()) == ["asyncpg", "django", "sql", "sqlalchemy"]


def _run_in_process(bootstrap: str, code: str, dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", bootstrap, dsn],
        input=code, text=True, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def _run_asyncpg(code: str, conn: asyncpg.Connection) -> None:
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result: Any = eval(compiled, {"conn": conn})
    if asyncio.iscoroutine(result):
        await result


async def test_the_notify_examples_run_and_their_messages_are_sent(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    examples = blocks()
    async with pool.acquire() as conn:
        await conn.execute(examples["sql"])
        await _run_asyncpg(examples["asyncpg"], conn)
    await asyncio.to_thread(_run_in_process, _DJANGO, examples["django"], database_url)
    await asyncio.to_thread(_run_in_process, _SQLALCHEMY, examples["sqlalchemy"], database_url)

    made = {
        r["recipient_key"]: sorted(r["channels"])
        for r in await pool.fetch(
            "SELECT recipient_key, array_agg(channel) AS channels FROM outbox.message"
            " GROUP BY recipient_key"
        )
    }
    assert made == {
        "u42": ["email", "inapp", "sms"],  # urgent: every channel
        "u7": ["email", "inapp"],  # normal; no phone anyway
        "u8": ["inapp", "sms"],  # high
        "u9": ["email", "inapp"],
    }
    await drain(make_settings(database_url, tmp_path), database_url)
    rows = await pool.fetch("SELECT id, channel, status, last_error FROM outbox.message")
    assert {(r["status"], r["last_error"]) for r in rows} == {("sent", None)}
    outgoing = tmp_path / "outgoing"
    for row in rows:
        if row["channel"] == "email":
            assert (outgoing / f"{row['id']}.eml").exists()
        elif row["channel"] == "sms":
            sms = json.loads((outgoing / f"{row['id']}.sms.json").read_text())
            assert sms["body"]
    items = {
        r["recipient_key"]: r["title"]
        for r in await pool.fetch("SELECT recipient_key, title FROM outbox.inbox")
    }
    assert items == {
        "u42": "Reminder: Dentist, Tuesday 14:30",
        "u7": "Welcome to outboxd, Bob!",
        "u8": "Reminder: Yoga, Friday 9:00",
        "u9": "Welcome to outboxd, Cy!",
    }
