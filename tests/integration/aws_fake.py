"""AWS endpoints for tests: moto's real server, and a tiny scripted endpoint that answers
with AWS's own error shapes for what moto cannot produce (throttling, paused accounts)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from daemon.bench.support import free_port

ACCOUNT = "123456789012"
SENDER = "noreply@acme.example"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def moto_url(aws_credentials: None) -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps its state in process-wide backends: start every test from nothing.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    try:
        yield url
    finally:
        server.stop()


@dataclass
class FakeAws:
    """Answers SES v2 SendEmail/GetAccount and SNS Publish; records every request."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: (status, error code) to answer with, or None for success.
    failure: tuple[int, str] | None = None
    max_send_rate: float = 14.0

    async def ses_send(self, request: web.Request) -> web.Response:
        self.requests.append(json.loads(await request.read()))
        if self.failure:
            status, code = self.failure
            return web.json_response(
                {"__type": code, "message": f"scripted {code}"},
                status=status,
                headers={"x-amzn-ErrorType": f"{code}:"},
            )
        return web.json_response({"MessageId": f"fake-{len(self.requests)}"})

    async def ses_account(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": self.max_send_rate,
                           "SentLast24Hours": 0.0}, "SendingEnabled": True}
        )  # fmt: skip

    async def sns(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        self.requests.append({k: v[0] for k, v in form.items()})
        if self.failure:
            status, code = self.failure
            xml = (
                '<ErrorResponse xmlns="https://sns.amazonaws.com/doc/2010-03-31/">'
                f"<Error><Type>Sender</Type><Code>{code}</Code><Message>scripted</Message>"
                "</Error><RequestId>r</RequestId></ErrorResponse>"
            )
            return web.Response(status=status, text=xml, content_type="text/xml")
        xml = (
            '<PublishResponse xmlns="https://sns.amazonaws.com/doc/2010-03-31/">'
            f"<PublishResult><MessageId>sns-{len(self.requests)}</MessageId></PublishResult>"
            "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></PublishResponse>"
        )
        return web.Response(text=xml, content_type="text/xml")


@pytest.fixture
async def fake_aws(aws_credentials: None) -> AsyncIterator[FakeAws]:
    fake = FakeAws()
    app = web.Application()
    app.router.add_post("/v2/email/outbound-emails", fake.ses_send)
    app.router.add_get("/v2/email/account", fake.ses_account)
    app.router.add_post("/", fake.sns)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
