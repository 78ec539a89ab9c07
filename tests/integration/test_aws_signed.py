"""The lean SendEmail request carries a valid SigV4 signature: an endpoint recomputes it
from what arrived, with botocore, and refuses a mismatch (as AWS does). The same check
accepts the SDK's own GetAccount request, so the check itself is sound."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from daemon.bench.support import free_port
from daemon.providers.ses import SesProvider
from daemon.settings import AwsSettings, SesSettings
from outbox import errors
from outbox.models import Message, Rendered
from tests.integration.aws_fake import aws_credentials

__all__ = ["aws_credentials"]

#: What the aws_credentials fixture sets.
CREDENTIALS = ReadOnlyCredentials("testing", "testing", "testing")


def _signature_is_valid(
    request: web.Request, body: bytes, credentials: ReadOnlyCredentials
) -> bool:
    authorization = request.headers.get("Authorization", "")
    fields = dict(part.strip().split("=", 1) for part in authorization.split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    _, _, region, service, _ = fields["Credential"].split("/")
    again = AWSRequest(
        request.method, str(request.url), data=body,
        headers={name: request.headers[name] for name in signed},
    )  # fmt: skip
    again.context["timestamp"] = request.headers["X-Amz-Date"]
    auth = SigV4Auth(credentials, service, region)
    canonical = auth.canonical_request(again)
    expected = auth.signature(auth.string_to_sign(again, canonical), again)
    return (
        expected == fields["Signature"]
        and request.headers.get("X-Amz-Security-Token") == credentials.token
        and (service, region) == ("ses", "us-east-1")
    )


class _Checking:
    def __init__(self, credentials: ReadOnlyCredentials) -> None:
        self.credentials = credentials
        self.checked: list[str] = []

    async def check(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not _signature_is_valid(request, body, self.credentials):
            return web.json_response(
                {"__type": "SignatureDoesNotMatch", "message": "The request signature we "
                 "calculated does not match the signature you provided."},
                status=403, headers={"x-amzn-ErrorType": "SignatureDoesNotMatch:"},
            )  # fmt: skip
        self.checked.append(request.path)
        if request.method == "GET":
            return web.json_response({"SendQuota": {"MaxSendRate": 7.0}, "SendingEnabled": True})
        assert json.loads(body)["Destination"] == {"ToAddresses": ["zoe@example.com"]}
        return web.json_response({"MessageId": "checked-1"})


@pytest.fixture
async def endpoint(aws_credentials: None) -> AsyncIterator[tuple[str, _Checking]]:
    checking = _Checking(CREDENTIALS)
    app = web.Application()
    app.router.add_post("/v2/email/outbound-emails", checking.check)
    app.router.add_get("/v2/email/account", checking.check)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", checking
    finally:
        await runner.cleanup()


def _message() -> Message:
    return Message(1, "email", "zoe@example.com", "welcome", {}, "news", 1, None, {}, 1, None,
                   datetime.now(UTC))  # fmt: skip


async def test_send_email_is_signed_like_the_sdk_signs(endpoint: tuple[str, _Checking]) -> None:
    url, checking = endpoint
    provider = SesProvider(AwsSettings(endpoint_url=url), SesSettings(), sender="n@acme.example")
    async with provider:
        assert await provider.max_send_rate() == 7.0  # the SDK's request passes the check
        receipt = await provider.send(_message(), Rendered(subject="Zoë", text="t", html="<p>h"))
    assert receipt.provider_message_id == "checked-1"
    assert checking.checked == ["/v2/email/account", "/v2/email/outbound-emails"]


async def test_a_wrong_signature_pauses_the_channel(endpoint: tuple[str, _Checking]) -> None:
    url, checking = endpoint
    checking.credentials = ReadOnlyCredentials("testing", "another secret", "testing")
    provider = SesProvider(AwsSettings(endpoint_url=url), SesSettings(), sender="n@acme.example")
    async with provider:
        with pytest.raises(errors.ChannelPaused, match="SignatureDoesNotMatch"):
            await provider.send(_message(), Rendered(subject="s", text="t"))
