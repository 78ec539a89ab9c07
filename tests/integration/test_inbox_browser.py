"""The bell in a real headless browser (Debian's chromium + chromedriver): an application's
page on one origin embeds the README's snippet, the widget talks to the daemon on another
(CORS), and the badge, live arrivals, mark read, the keyboard, theming and token renewal
behave as documented."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from daemon.main import Daemon
from outbox import inbox_token
from tests.integration.inbox_helpers import SECRET, add_item, add_people, inbox_settings
from tests.integration.test_browser import CHROMEDRIVER, CHROMIUM
from tests.readme_blocks import block

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
    ),
]

SECTION = "In-app inbox: the bell"


@dataclass
class Site:
    """The application's site (its own origin) and the daemon serving the inbox."""

    app_url: str
    daemon_url: str
    dsn: str
    #: Whose token the application's /me/inbox-token hands out.
    current_user: list[str]

    def page(self, key: str, *, expired: bool = False) -> str:
        return f"{self.app_url}/?key={key}" + ("&expired=1" if expired else "")


def _token(key: str, expired: bool = False) -> str:
    if expired:
        return inbox_token(key, secret=SECRET, ttl=60, now=time.time() - 120)
    return inbox_token(key, secret=SECRET)


#: Test instrumentation in the page: how many EventSources are open.
_COUNT_STREAMS = """<script>
const streams = [];
window.EventSource = class extends window.EventSource {
  constructor(...args) { super(...args); streams.push(this); }
};
window.openStreams = () => streams.filter((s) => s.readyState !== EventSource.CLOSED).length;
</script>"""


def _application(site: Site) -> web.Application:
    """A page made of the README's snippets, exactly as written but for the placeholders."""
    snippet = block(SECTION, "html").replace("https://notify.example.com", site.daemon_url)
    css = block(SECTION, "css")
    listener = block(SECTION, "js", "outboxd-unauthorized")

    async def page(request: web.Request) -> web.Response:
        token = _token(request.query["key"], expired="expired" in request.query)
        html = (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>App</title>"
            f"<link rel=icon href='data:,'><style>{css}</style>{_COUNT_STREAMS}</head><body>"
            f"<header>Acme {snippet.replace('{{ inbox_token }}', token)}</header>"
            f"<main><button id=elsewhere>Elsewhere</button></main><script>{listener}</script>"
            "</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def me_token(_request: web.Request) -> web.Response:
        return web.Response(text=_token(site.current_user[0]))

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/me/inbox-token", me_token)
    return app


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Site]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    box: list[Site] = []
    failure: list[BaseException] = []

    async def main() -> None:
        runner: web.AppRunner | None = None
        daemon: Daemon | None = None
        task: asyncio.Task[None] | None = None
        try:
            await add_people(database_url, "u1", "u2")
            holder: list[Site] = []
            app = web.Application()
            runner = web.AppRunner(app)
            await runner.setup()
            app_site = web.TCPSite(runner, "127.0.0.1", 0)
            await app_site.start()
            app_port = runner.addresses[0][1]
            app_url = f"http://127.0.0.1:{app_port}"
            settings = inbox_settings(database_url, tmp_path, allowed_origins=app_url)
            daemon = Daemon(settings, dsn=database_url)
            task = asyncio.create_task(daemon.run())
            await asyncio.wait_for(daemon.started.wait(), 30)
            holder.append(
                Site(app_url, f"http://127.0.0.1:{daemon.http_port}", database_url, ["u1"])
            )
            # The page's routes need the site: swap in the real application.
            await runner.cleanup()
            runner = web.AppRunner(_application(holder[0]))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", app_port).start()
            box.append(holder[0])
            ready.set()
            await stop.wait()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
        finally:
            if daemon is not None and task is not None:
                daemon.request_stop()
                await task
            if runner is not None:
                await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(60)
    if failure:
        raise failure[0]
    try:
        yield box[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=900,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(browser: Any, condition: Any, within: float = 30) -> Any:
    """Wait for ``condition``; on a timeout, say what the page looked like and logged."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(browser, within, ignored_exceptions=ignored).until(
            lambda d: condition()
        )
    except TimeoutException:
        shadow = browser.execute_script(
            "return document.querySelector('outboxd-bell').shadowRoot.innerHTML"
        )
        pytest.fail(f"timed out; console: {browser.get_log('browser')}; bell: {shadow[-3000:]}")


def _shadow(browser: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    host = browser.find_element(By.CSS_SELECTOR, "outboxd-bell")
    return host.shadow_root.find_element(By.CSS_SELECTOR, selector)


def _shadow_all(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    host = browser.find_element(By.CSS_SELECTOR, "outboxd-bell")
    return list(host.shadow_root.find_elements(By.CSS_SELECTOR, selector))


def _titles(browser: Any) -> list[str]:
    return [
        str(i.find_element("css selector", ".title").text)
        for i in _shadow_all(browser, "[part=item]")
    ]


def _badge(browser: Any) -> str:
    badge = _shadow(browser, "[part=badge]")
    return str(badge.text) if badge.is_displayed() else ""


def _focused(browser: Any) -> str:
    """What has focus inside the bell: its class names, or the text of a button."""
    return str(
        browser.execute_script(
            "const el = document.querySelector('outboxd-bell').shadowRoot.activeElement;"
            "return el ? (el.className + '|' + el.textContent.trim()) : '';"
        )
    )


async def _unread_ids(dsn: str, key: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM outbox.inbox WHERE recipient_key = $1 AND read_at IS NULL ORDER BY id",
            key,
        )
        return [r["id"] for r in rows]
    finally:
        await conn.close()


def _no_console_errors(browser: Any) -> None:
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_badge_live_arrival_mark_read_and_keyboard(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    first = asyncio.run(add_item(site.dsn, title="Booking confirmed", body="Friday 9:00"))
    second = asyncio.run(add_item(site.dsn, title="Invoice ready", url="https://app.test/i/1"))
    browser.get(site.page("u1"))
    _wait(browser, lambda: _badge(browser) == "2")
    bell = _shadow(browser, "[part=button]")
    assert bell.get_attribute("aria-label") == "Notifications, 2 unread"
    assert browser.execute_script("return openStreams()") == 1

    # A notification committed now arrives while the page is open.
    live = asyncio.run(add_item(site.dsn, title="New comment", body="Looks good"))
    _wait(browser, lambda: _badge(browser) == "3")

    bell.click()
    assert bell.get_attribute("aria-expanded") == "true"
    _wait(browser, lambda: len(_shadow_all(browser, "[part=item]")) == 3)
    assert _titles(browser) == ["New comment", "Invoice ready", "Booking confirmed"]  # newest first
    links = _shadow_all(browser, "a.main")
    assert [a.get_attribute("href") for a in links] == ["https://app.test/i/1"]

    # Mark the newest read: the badge and the database follow.
    _shadow(browser, f"[data-id='{live}'] [part=mark-read]").click()
    _wait(browser, lambda: _badge(browser) == "2")
    assert asyncio.run(_unread_ids(site.dsn, "u1")) == [first, second]
    assert "unread" not in _shadow(browser, f"[data-id='{live}']").get_attribute("class")

    # Keyboard: arrows move between the list's controls, Escape closes and returns focus.
    browser.switch_to.active_element.send_keys(Keys.HOME)
    assert _focused(browser).startswith("main")  # the invoice's link comes first
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    assert _focused(browser).endswith("|Mark read")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    _wait(browser, lambda: not _shadow(browser, "[part=panel]").is_displayed())
    assert _focused(browser).startswith("bell")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    _wait(browser, lambda: _shadow(browser, "[part=panel]").is_displayed())

    # Mark all read: the badge hides.
    _shadow(browser, "[part=mark-all-read]").click()
    _wait(browser, lambda: _badge(browser) == "")
    assert asyncio.run(_unread_ids(site.dsn, "u1")) == []
    assert bell.get_attribute("aria-label") == "Notifications"
    _no_console_errors(browser)


def test_theme_new_token_and_renewal_of_a_refused_one(site: Site, browser: Any) -> None:
    asyncio.run(add_item(site.dsn, key="u2", title="For u2"))
    asyncio.run(add_item(site.dsn, key="u2", title="Also for u2"))
    asyncio.run(add_item(site.dsn, key="u1", title="For u1"))
    # An expired token is refused; the README's listener fetches a fresh one (u1's) and the
    # bell reconnects with it.
    browser.get(site.page("u1", expired=True))
    _wait(browser, lambda: _badge(browser) == "1")

    # The README's theme: custom properties and ::part reach inside the shadow DOM.
    badge = _shadow(browser, "[part=badge]")
    assert badge.value_of_css_property("background-color") == "rgba(124, 58, 237, 1)"
    assert badge.value_of_css_property("font-weight") == "700"

    # Setting another token shows another person's inbox, live.
    browser.execute_script(
        "document.querySelector('outboxd-bell').token = arguments[0];", _token("u2")
    )
    _wait(browser, lambda: _badge(browser) == "2")
    assert browser.execute_script("return openStreams()") == 1  # the old one is closed
    asyncio.run(add_item(site.dsn, key="u1", title="Not for u2"))
    asyncio.run(add_item(site.dsn, key="u2", title="Live for u2"))
    _wait(browser, lambda: _badge(browser) == "3")
    _shadow(browser, "[part=button]").click()
    _wait(browser, lambda: len(_shadow_all(browser, "[part=item]")) == 3)
    assert set(_titles(browser)) == {"For u2", "Also for u2", "Live for u2"}


def test_a_late_answer_to_mark_read_does_not_count_the_change_twice(
    site: Site, browser: Any
) -> None:
    first = asyncio.run(add_item(site.dsn, title="one"))
    asyncio.run(add_item(site.dsn, title="two"))
    asyncio.run(add_item(site.dsn, title="three"))
    browser.get(site.page("u1"))
    _wait(browser, lambda: _badge(browser) == "3")
    # The stream's new count arrives before the answer to the POST (held back a second).
    browser.execute_script(
        """
        const original = window.fetch;
        window.answered = 0;
        const late = (response) => new Promise((resolve) => setTimeout(() => {
          window.answered++;
          resolve(response);
        }, 1000));
        window.fetch = (url, init) => original(url, init).then((response) =>
          init && init.method === "POST" ? late(response) : response);
        """
    )
    _shadow(browser, "[part=button]").click()
    _wait(browser, lambda: len(_shadow_all(browser, "[part=mark-read]")) == 3)
    answered = browser.execute_script("return window.answered")  # the POST of /inbox/seen
    _wait(browser, lambda: browser.execute_script("return window.answered") > answered)
    answered = browser.execute_script("return window.answered")
    _shadow(browser, f"[data-id='{first}'] [part=mark-read]").click()
    _wait(browser, lambda: _badge(browser) == "2")
    _wait(browser, lambda: browser.execute_script("return window.answered") > answered)
    assert _badge(browser) == "2"
