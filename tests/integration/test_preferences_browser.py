"""A person's preference page in a real headless browser, opened from the person's email."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from outbox import notify, upsert_recipient
from tests.integration.test_browser import _wait_for_heading, browser, pytestmark
from tests.integration.test_fuzz_http import Served, served

__all__ = ["browser", "pytestmark", "served"]


async def _notify_ann(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        await upsert_recipient(conn, "ann", email="ann@example.com", phone="+14155550100")
        await conn.execute(
            "INSERT INTO outbox.channel_preference (recipient_key, channel, category, enabled)"
            " VALUES ('ann', 'sms', 'news', false)"
        )
        context = {"what": "Yoga", "when": "Friday 9:00"}
        await notify(conn, recipient_key="ann", template="booking/reminder", category="news",
                     channels=["email"], context=context)  # fmt: skip
        message_id: int = await conn.fetchval("SELECT id FROM outbox.message")
        return message_id
    finally:
        await conn.close()


async def _sent(database_url: str, message_id: int) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        status = await conn.fetchval("SELECT status FROM outbox.message WHERE id = $1", message_id)
        return bool(status == "sent")
    finally:
        await conn.close()


async def _switches(database_url: str) -> dict[tuple[str, str], bool]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT channel, category, enabled FROM outbox.channel_preference")
        return {(r["channel"], r["category"]): r["enabled"] for r in rows}
    finally:
        await conn.close()


def _box(browser: Any, value: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f"input[name=on][value='{value}']")


@pytest.mark.slow
def test_a_person_switches_channels_per_category_in_a_browser(
    served: Served, browser: Any, database_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    message_id = asyncio.run(_notify_ann(database_url))
    deadline = time.monotonic() + 30
    while not asyncio.run(_sent(database_url, message_id)):  # the running daemon sends it
        assert time.monotonic() < deadline, "the email was not sent"
        time.sleep(0.05)
    mail = email.message_from_bytes(
        (tmp_path / "outgoing" / f"{message_id}.eml").read_bytes(), policy=email.policy.default
    )
    link = urlsplit(str(mail["List-Unsubscribe"]).strip("<>"))
    assert link.path == "/preferences"

    browser.get(f"http://127.0.0.1:{served.daemon.http_port}/preferences?{link.query}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Notification settings"
    assert "a***@example.com" in browser.page_source
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "th[scope=col]")]
    assert headers == ["Email", "SMS", "In-app"]
    assert _box(browser, "email:news").is_selected()
    assert not _box(browser, "sms:news").is_selected()  # her own switch, shown as it is
    assert _box(browser, "email:news").get_attribute("aria-label") == "News by Email"
    assert asyncio.run(_switches(database_url)) == {("sms", "news"): False}  # viewing: nothing
    browser.save_screenshot(str(tmp_path / "preferences.png"))

    _box(browser, "email:news").click()  # email off for news
    _box(browser, "sms:news").click()  # sms back on
    browser.find_element(By.XPATH, "//button[normalize-space()='Save settings']").click()
    _wait_for_heading(browser, "Settings saved")
    assert asyncio.run(_switches(database_url)) == {
        ("email", "news"): False,
        ("sms", "news"): True,
        ("inapp", "news"): True,
    }
    assert not _box(browser, "email:news").is_selected()
    assert _box(browser, "sms:news").is_selected()

    browser.find_element(By.XPATH, "//button[normalize-space()='Turn everything off']").click()
    _wait_for_heading(browser, "Everything optional is off")
    saved = asyncio.run(_switches(database_url))
    assert saved[("*", "*")] is False and set(saved.values()) == {False}
    assert not any(_box(browser, f"{c}:news").is_selected() for c in ("email", "sms", "inapp"))
    browser.save_screenshot(str(tmp_path / "off.png"))
