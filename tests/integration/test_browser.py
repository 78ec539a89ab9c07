"""The unsubscribe page in a real headless browser (Debian's chromium + chromedriver)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration.test_fuzz_http import Served, served

__all__ = ["served"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=420,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_heading(browser: Any, text: str) -> None:
    """Clicking submit returns before the next page has loaded: wait for it.

    The heading is read in one script call: finding it and then asking for its text
    are two calls, and the page can be replaced between them (Chromium then answers
    "Node with given id does not belong to the document", not a stale element).
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    read = "const h = document.querySelector('h1'); return h ? h.innerText.trim() : null;"
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(read) == text
    )


async def _preferences(database_url: str) -> dict[str, bool]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT category, opted_out FROM outbox.preference")
        return {r["category"]: r["opted_out"] for r in rows}
    finally:
        await conn.close()


@pytest.mark.slow
def test_confirm_then_manage_categories_in_a_browser(
    served: Served, browser: Any, database_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base = f"http://127.0.0.1:{served.daemon.http_port}/unsubscribe?token={served.token}"
    browser.get(base)
    assert "Unsubscribe from" in browser.find_element(By.TAG_NAME, "h1").text
    assert "v***@example.com" in browser.page_source
    assert asyncio.run(_preferences(database_url)) == {}  # viewing changes nothing
    # The page's own <style> applies under its Content-Security-Policy (light or dark).
    background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background in ("rgb(245, 247, 250)", "rgb(18, 22, 28)")
    browser.save_screenshot(str(tmp_path / "confirm.png"))

    browser.find_element(By.XPATH, "//button[normalize-space()='Unsubscribe']").click()
    _wait_for_heading(browser, "You are unsubscribed")
    assert asyncio.run(_preferences(database_url)) == {"news": True}
    status = browser.find_element(By.CSS_SELECTOR, "[role=status]")
    assert "news" in status.text

    # The checkbox is labelled and reachable; ticking it and saving resubscribes.
    box = browser.find_element(By.CSS_SELECTOR, "input[name=keep][value=news]")
    assert not box.is_selected()
    box.find_element(By.XPATH, "..").click()  # clicking the label toggles the box
    browser.find_element(By.XPATH, "//button[normalize-space()='Save preferences']").click()
    _wait_for_heading(browser, "Preferences saved")
    assert asyncio.run(_preferences(database_url)) == {"news": False}
    browser.save_screenshot(str(tmp_path / "saved.png"))


@pytest.mark.slow
def test_tampered_link_shows_a_clear_page(served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{served.daemon.http_port}/unsubscribe?token=bogus")
    assert browser.find_element(By.TAG_NAME, "h1").text == "This link is not valid"
