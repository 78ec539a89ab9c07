"""docs/openapi.yaml describes exactly the routes each server has (and the fuzz test,
which reads its routes from the spec, therefore covers every one of them)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from daemon.http import admin
from daemon.http import app as http_app
from daemon.http.state import ServiceState
from daemon.settings import Settings
from outbox.store import Store
from tests.integration.test_fuzz_http import ROUTES


def _routes(application: Any) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in application.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


async def test_the_spec_and_the_servers_agree(tmp_path: Path) -> None:
    state = ServiceState(
        settings=Settings(data_dir=tmp_path), store=Store(None),
        signing_keys=[b"k"], stopping=asyncio.Event(), heartbeat_age=lambda: 0.0,
        paused=dict,
    )  # fmt: skip
    async with aiohttp.ClientSession() as client:
        public = _routes(http_app.make_app(state, client))
    served = {("public", m, p) for m, p in public} | {
        ("admin", m, p) for m, p in _routes(admin.make_app(state))
    }
    assert served == {(r.server, r.method, r.path) for r in ROUTES}
