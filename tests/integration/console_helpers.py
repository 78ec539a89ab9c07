"""A daemon with its console on, and a signed-in HTTP client for it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp

from daemon.settings import Settings
from outbox import resources
from tests.integration.daemon_helpers import make_settings

TOKEN = "console-test-token-0123456789"


def console_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Both servers on free ports, the console on, a copy of the bundled templates (so a
    test can deploy a template while the daemon runs)."""
    templates = tmp_path / "templates"
    if not templates.exists():
        shutil.copytree(resources.bundled_templates_dir(), templates)
    values: dict[str, Any] = {
        "http": {"host": "127.0.0.1", "port": 0, "admin_port": 0},
        "console": {"token": TOKEN, "holds_interval": 0.2, **overrides.pop("console", {})},
        "templates_dir": templates,
        **overrides,
    }
    return make_settings(database_url, tmp_path, **values)


def browser_session() -> aiohttp.ClientSession:
    """A client session that keeps cookies of 127.0.0.1 (aiohttp's default jar refuses
    cookies of IP addresses)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


class ConsoleClient:
    """Signs in like a browser and sends forms with the page's CSRF token and Origin."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.origin = f"http://127.0.0.1:{port}"
        self.csrf = ""

    async def sign_in(self, token: str = TOKEN) -> int:
        async with self.session.post(
            f"{self.origin}/console/login",
            data={"token": token, "next": "/console"},
            headers={"Origin": self.origin},
            allow_redirects=False,
        ) as response:
            status = response.status
        if status == 303:
            page = await self.get("/console")
            found = re.search(r'name="csrf" value="([0-9a-f]+)"', page[1])
            assert found is not None
            self.csrf = found[1]
        return status

    async def get(self, path: str) -> tuple[int, str, Any]:
        async with self.session.get(f"{self.origin}{path}", allow_redirects=False) as response:
            return response.status, await response.text(), response.headers

    async def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]], **headers: str
    ) -> tuple[int, str, Any]:
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if "csrf" not in dict(fields) and self.csrf:
            fields.append(("csrf", self.csrf))
        fields = [(k, v) for k, v in fields if v is not None]
        sent = {"Origin": self.origin, **headers}
        sent = {k: v for k, v in sent.items() if v}
        async with self.session.post(
            f"{self.origin}{path}", data=fields, headers=sent, allow_redirects=False
        ) as response:
            return response.status, await response.text(), response.headers
