"""The console in a real headless Chromium: sign in, search, preview a template, retry a
failed message that the daemon then really sends, a forged form refused, the public port
refusing the console. It also takes the screenshots in docs/console:

    CONSOLE_SCREENSHOTS=docs/console .venv/bin/pytest -q -p no:cacheprovider \\
        tests/integration/test_console_browser.py
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.main import Daemon
from daemon.settings import Settings
from tests.integration.console_helpers import TOKEN, console_settings
from tests.integration.test_browser import CHROMEDRIVER, CHROMIUM, browser

__all__ = ["browser"]

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
PROMO = "promo"


@pytest.fixture
def daemon(database_url: str, tmp_path: Path) -> Iterator[Daemon]:
    """A daemon with its console on, run in a thread of its own (the browser is sync)."""
    settings = console_settings(database_url, tmp_path)
    loop = asyncio.new_event_loop()
    box: list[Daemon] = []
    started = threading.Event()

    async def main(settings: Settings) -> None:
        box.append(Daemon(settings, dsn=database_url))
        task = asyncio.create_task(box[0].run())
        await box[0].started.wait()
        started.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(main(settings),))
    thread.start()
    assert started.wait(30)
    try:
        yield box[0]
    finally:
        loop.call_soon_threadsafe(box[0].request_stop)
        thread.join(30)
        loop.close()


async def _history(database_url: str) -> int:
    """Messages scheduled for tomorrow, an hour of sending (with a few bounces) to draw, and
    one message that failed because its template was not deployed yet; returns its id."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox.message (channel, recipient, template, context, status,"
            " not_before) SELECT 'email', 'later' || i || '@example.com', 'welcome',"
            ' \'{"name": "B", "login_url": "https://x"}\', \'pending\','
            " now() + interval '1 day'"
            " FROM generate_series(1, 40) AS i"
        )
        await conn.execute(
            "INSERT INTO outbox.message (channel, recipient, template, context, status, attempts,"
            " sent_at, updated_at, created_at, provider)"
            " SELECT CASE WHEN i % 5 = 0 THEN 'sms' ELSE 'email' END,"
            "        CASE WHEN i % 5 = 0 THEN '+1415555' || lpad((i % 10000)::text, 4, '0')"
            "             ELSE 'user' || i || '@example.com' END,"
            "        CASE WHEN i % 5 = 0 THEN 'sms/verification_code' ELSE 'welcome' END,"
            '        \'{"name": "Ann", "login_url": "https://example.com",'
            '          "code": "1"}\','
            "        CASE WHEN i % 61 = 0 THEN 'bounced' ELSE 'delivered' END, 1,"
            "        now() - make_interval(secs => (i * 7) % 3600),"
            "        now() - make_interval(secs => (i * 7) % 3600),"
            "        now() - make_interval(secs => (i * 7) % 3600 + 2), 'file'"
            " FROM generate_series(1, 1500) AS i"
        )
        await conn.execute(
            "INSERT INTO outbox.event (message_id, source, source_id, event_type, subtype,"
            " recipient, occurred_at) SELECT id, 'ses', 'b-' || id, unnest(ARRAY['delivery',"
            " 'bounce']), unnest(ARRAY[NULL, 'Permanent']), recipient,"
            " sent_at + unnest(ARRAY[interval '3 s', interval '9 s'])"
            " FROM outbox.message WHERE recipient = 'user61@example.com'"
        )
        await conn.execute(
            "INSERT INTO outbox.suppression (channel, recipient, reason, detail) VALUES"
            " ('email', 'user61@example.com', 'bounce', 'Permanent: General'),"
            " ('sms', '+14155550000', 'unsubscribe', 'STOP')"
        )
        failed: int = await conn.fetchval(
            "INSERT INTO outbox.message (channel, recipient, template, context, status, attempts,"
            " last_error, category) VALUES ('email', 'Ann@Example.com', $1,"
            " '{\"offer\": \"20% off\"}', 'failed', 1, $2, 'marketing') RETURNING id",
            PROMO,
            f"template {PROMO!r} not found: no subject.j2",
        )
        return failed
    finally:
        await conn.close()


async def _status(database_url: str, message_id: int) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        query = "SELECT status FROM outbox.message WHERE id = $1"
        return str(await conn.fetchval(query, message_id))
    finally:
        await conn.close()


def _wait(browser: Any, condition: Any, timeout: float = 15) -> Any:
    """Wait for a condition; any driver error while a page is being replaced is retried
    (a node found on the old page can be gone before its text is read)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (WebDriverException,)
    return WebDriverWait(browser, timeout, ignored_exceptions=ignored).until(condition)


def _heading(browser: Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text.startswith(text))


@pytest.mark.slow
def test_an_operator_signs_in_searches_previews_and_retries_in_a_browser(
    daemon: Daemon, browser: Any, database_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)

    def shot(name: str, height: int = 1100) -> None:
        browser.set_window_size(1280, height)
        browser.save_screenshot(str(shots / f"{name}.png"))

    failed = asyncio.run(_history(database_url))
    admin = f"http://127.0.0.1:{daemon.admin_port}"

    # The public port has no console at all.
    browser.get(f"http://127.0.0.1:{daemon.http_port}/console/login")
    assert "404" in browser.find_element(By.TAG_NAME, "body").text
    assert not browser.find_elements(By.NAME, "token")

    browser.set_window_size(1280, 1100)
    browser.get(f"{admin}/console/messages?status=failed")
    _heading(browser, "Sign in")  # sent to sign in first, and back afterwards
    shot("login", 700)
    browser.find_element(By.NAME, "token").send_keys("wrong-token-of-some-length")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[role=alert]").text == "Wrong token.")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    _heading(browser, "Messages")
    assert browser.find_element(By.CSS_SELECTOR, "select[name=status]").get_attribute("value") == (
        "failed"
    )

    # The stylesheet applies under the page's Content-Security-Policy.
    radius = browser.execute_script(
        "return getComputedStyle(document.querySelector('.card')).borderRadius"
    )
    assert radius == "10px"

    browser.get(f"{admin}/console")
    _heading(browser, "Overview")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")) == 3 * 60
    shot("overview", 1250)

    # Search: a recipient, whatever its case.
    browser.get(f"{admin}/console/messages")
    box = browser.find_element(By.NAME, "recipient")
    box.send_keys("ann@example.com")
    box.submit()
    _wait(browser, lambda d: "recipient=ann" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.results tbody tr")
    assert len(rows) == 1 and str(failed) in rows[0].text
    browser.get(f"{admin}/console/messages?channel=email")
    shot("messages")

    # A forged form (its CSRF token changed) is refused and changes nothing.
    browser.get(f"{admin}/console/messages/{failed}")
    _heading(browser, f"Message {failed}")
    browser.execute_script(
        "document.querySelectorAll('input[name=csrf]').forEach(e => e.value = 'forged')"
    )
    browser.find_element(By.XPATH, "//button[normalize-space()='Retry']").click()
    _heading(browser, "Not done")
    assert "Refused" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert asyncio.run(_status(database_url, failed)) == "failed"

    # The template is deployed; a retry from the message's page sends it for real.
    promo = daemon.settings.templates_path / PROMO
    promo.mkdir()
    (promo / "subject.j2").write_text("{{ offer }} this week")
    (promo / "text.j2").write_text("Take {{ offer }}.")
    (promo / "html.j2").write_text("<p>Take <b>{{ offer }}</b>.</p>")
    (promo / "example.json").write_text('{"offer": "20% off"}')
    browser.get(f"{admin}/console/messages/{failed}")
    assert "not found" in browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    browser.find_element(By.XPATH, "//button[normalize-space()='Retry']").click()
    _wait(browser, lambda d: "retried" in d.find_element(By.CSS_SELECTOR, "[role=status]").text)
    sent = daemon.settings.file_dir / f"{failed}.eml"
    _wait(browser, lambda d: sent.exists())
    assert "20% off this week" in sent.read_text()
    _wait(browser, lambda d: asyncio.run(_status(database_url, failed)) == "sent")
    browser.refresh()
    assert "sent" in browser.find_element(By.CSS_SELECTOR, "h1 .status").text

    # A bounced message's timeline: sent, delivered, bounced.
    browser.get(f"{admin}/console/messages?recipient=user61@example.com")
    browser.find_element(By.CSS_SELECTOR, "table.results tbody a").click()
    _heading(browser, "Message")
    timeline = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert timeline.index("sent") < timeline.index("delivery") < timeline.index("bounce")
    shot("message", 1250)

    # The gallery, and a template previewed per channel and locale from its example.
    browser.get(f"{admin}/console/templates")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "article h2 a")]
    assert {"welcome", "digest", PROMO} <= set(names)
    shot("templates", 1400)
    browser.get(f"{admin}/console/template?name=welcome")
    headings = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".preview-card h2")]
    assert headings == ["email · default", "email · fr", "inapp · default", "inapp · fr"]
    frames = browser.find_elements(By.CSS_SELECTOR, "iframe.preview")
    browser.switch_to.frame(frames[1])
    assert "Ann" in browser.find_element(By.TAG_NAME, "body").text  # the French HTML part
    browser.switch_to.default_content()
    shot("template", 1400)

    # A retry of a whole search asks first.
    browser.get(f"{admin}/console/messages?status=pending")
    browser.find_element(By.XPATH, "//button[normalize-space()='Requeue now all…']").click()
    _heading(browser, "Requeue now 40 messages?")
    shot("confirm", 700)
    browser.find_element(By.LINK_TEXT, "No, go back").click()
    _heading(browser, "Messages")

    browser.get(f"{admin}/console/suppressions")
    assert "user61@example.com" in browser.find_element(By.CSS_SELECTOR, "table").text
    shot("suppressions", 900)

    # On a phone: the same overview, one column.
    browser.set_window_size(420, 900)
    browser.get(f"{admin}/console")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 420
    browser.save_screenshot(str(shots / "overview-phone.png"))
