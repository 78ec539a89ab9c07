"""A real HTTP receiver of outboxd's webhooks on loopback: it records every POST, checks
its signature, and answers as a test tells it to (fail some attempts, hang, be down)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from daemon.bench.support import free_port
from daemon.hooks import signing

SECRET = "whsec_test_0123456789abcdef"


@dataclass
class Received:
    event: dict[str, Any]
    signature: str
    valid: bool
    body: bytes


@dataclass
class Receiver:
    """Answers 200, except: ``fail_first`` answers 500 to the first n attempts of each
    event; ``status`` (when set) answers that to everything; ``hold`` keeps requests
    waiting until it is set."""

    port: int
    secret: str = SECRET
    received: list[Received] = field(default_factory=list)
    fail_first: int = 0
    status: int | None = None
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(signing.HEADER, "")
        event = json.loads(body)
        attempt = sum(1 for r in self.received if r.event["id"] == event["id"]) + 1
        valid = signing.verify(self.secret, body, header)
        self.received.append(Received(event, header, valid, body))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.status is not None:
            return web.Response(status=self.status, text="scripted")
        if attempt <= self.fail_first:
            return web.Response(status=500, text="try again")
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ids(self) -> Counter[str]:
        """How many times each event id arrived."""
        return Counter(r.event["id"] for r in self.received)

    async def wait_for(self, predicate: Any, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            assert time.monotonic() < deadline, f"receiver got {len(self.received)} requests"
            self.arrived.clear()
            try:
                async with asyncio.timeout(0.2):
                    await self.arrived.wait()
            except TimeoutError:
                pass


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    await r.start()
    try:
        yield r
    finally:
        if r.hold is not None:
            r.hold.set()
        await r.stop()
