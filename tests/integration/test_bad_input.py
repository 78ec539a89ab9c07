"""A corpus of bad rows mixed into a good backlog: each ends in the right terminal status
with a clear reason, every good row is delivered, and the daemon stays up."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from outbox import NewMessage, enqueue_many, resources
from tests.integration.daemon_helpers import drain, make_settings, statuses

GOOD = {"name": "Ann", "login_url": "https://x.example"}
PAST = datetime.now(UTC) - timedelta(minutes=1)

#: label -> (message, expected status, text the reason must contain)
CORPUS: dict[str, tuple[NewMessage, str, str]] = {
    "unknown template": (NewMessage("email", "a@example.com", "no/such", GOOD), "failed", "not found"),
    "missing variable": (NewMessage("email", "a@example.com", "welcome", {}), "failed", "'name' is undefined"),
    "syntax error": (NewMessage("email", "a@example.com", "broken_syntax", GOOD), "failed", "syntax error"),
    "sandbox escape": (NewMessage("email", "a@example.com", "escape", GOOD), "failed", "unsafe"),
    "wrong value type": (NewMessage("email", "a@example.com", "typed", {"balance": "lots"}), "failed", "TypeError"),
    "path traversal name": (NewMessage("email", "a@example.com", "../../etc/passwd", GOOD), "failed", "invalid template name"),
    "invalid email": (NewMessage("email", "not-an-address", "welcome", GOOD), "failed", "invalid email address"),
    "header injection": (NewMessage("email", "a@example.com\r\nBcc: x@example.com", "welcome", GOOD), "failed", "invalid email address"),
    "invalid phone": (NewMessage("sms", "+1234", "sms_only", {"code": "1"}), "failed", "invalid phone number"),
    "premium-rate phone": (NewMessage("sms", "+19002345678", "sms_only", {"code": "1"}), "failed", "premium-rate number"),
    "phone not E.164": (NewMessage("sms", "4155552671", "sms_only", {"code": "1"}), "failed", "E.164"),
    "sms without sms part": (NewMessage("sms", "+14155552671", "welcome", GOOD), "failed", "no sms.j2"),
    "email without email parts": (NewMessage("email", "a@example.com", "sms_only", {"code": "1"}), "failed", "no subject.j2"),
    "malformed locale": (NewMessage("email", "a@example.com", "welcome", GOOD, locale="../x"), "failed", "invalid locale"),
    "oversized context": (NewMessage("email", "a@example.com", "welcome", {**GOOD, "blob": __import__("secrets").token_hex(200_000)}), "failed", "KiB limit"),
    "expired": (NewMessage("email", "a@example.com", "welcome", GOOD, expires_at=PAST), "expired", "expired at"),
    "suppressed recipient": (NewMessage("email", "bounced@example.com", "welcome", GOOD), "suppressed", "suppressed (bounce)"),
    "opted-out category": (NewMessage("email", "picky@example.com", "welcome", GOOD, category="news"), "suppressed", "opted out"),
    "unknown locale falls back": (NewMessage("email", "a@example.com", "welcome", GOOD, locale="xx"), "sent", ""),
}  # fmt: skip


@pytest.mark.slow
async def test_bad_rows_end_right_and_good_rows_are_delivered(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(resources.bundled_templates_dir(), templates)
    shutil.copytree(Path(__file__).parent.parent / "fixtures" / "bad_templates", templates,
                    dirs_exist_ok=True)  # fmt: skip
    await pool.execute(
        "INSERT INTO outbox.suppression (channel, recipient, reason) "
        "VALUES ('email', 'bounced@example.com', 'bounce')"
    )
    await pool.execute(
        "INSERT INTO outbox.preference (channel, recipient, category) "
        "VALUES ('email', 'picky@example.com', 'news')"
    )
    good = [NewMessage("email", f"good{i}@example.com", "welcome", GOOD) for i in range(300)]
    bad = list(CORPUS.values())
    # Interleave: every bad row sits between good ones.
    mixed = []
    for i, message in enumerate(good):
        mixed.append(("good", message))
        if i % 15 == 0 and bad:
            label = list(CORPUS)[len(CORPUS) - len(bad)]
            mixed.append((label, bad.pop(0)[0]))
    async with pool.acquire() as conn:
        await enqueue_many(conn, [m for _, m in mixed])
    cancelled = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'email', recipient => 'c@example.com', template => 'welcome')"
    )
    await pool.execute("SELECT outbox.cancel($1)", cancelled)

    settings = make_settings(database_url, tmp_path, templates_dir=templates)
    await drain(settings, database_url)

    rows = list((await statuses(pool)).values())
    by_label = dict(zip([label for label, _ in mixed], rows, strict=False))
    assert len(CORPUS) >= 15
    for label, (_, status, reason) in CORPUS.items():
        row = by_label[label]
        assert row["status"] == status, (label, row["status"], row["last_error"])
        assert reason in (row["last_error"] or ""), (label, row["last_error"])
    good_rows = [r for (label, _), r in zip(mixed, rows, strict=False) if label == "good"]
    assert {r["status"] for r in good_rows} == {"sent"}
    assert (await statuses(pool))[cancelled]["status"] == "cancelled"
    assert len(list((tmp_path / "outgoing").glob("*.eml"))) == 301  # good + the locale fallback
