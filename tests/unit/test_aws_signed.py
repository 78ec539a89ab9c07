"""The lean SendEmail body is, byte for byte, what botocore's serializer makes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.serialize import create_serializer

from daemon.providers import aws_signed
from daemon.providers.ses import SesProvider
from daemon.settings import AwsSettings, SesSettings
from outbox.models import Message, Rendered

RENDERED = Rendered(
    subject='Bienvenue, Zoë "quoted" \\ back',
    text="Bonjour Zoë\n\ttab\x01",
    html="<p>Bonjour Zoë</p>",
    headers={"List-Unsubscribe": "<https://x.example/u?t=1>", "List-Unsubscribe-Post": "x"},
)
MESSAGE = Message(
    42, "email", "zoe@example.com", "welcome", {}, "news", 1, None,
    {"campaign": "spring sale!"}, 1, None, datetime(2026, 1, 1, tzinfo=UTC),
)  # fmt: skip


def _botocore_body(params: dict[str, Any]) -> bytes:
    model = botocore.session.get_session().get_service_model("sesv2")
    serializer = create_serializer("rest-json", include_validation=True)
    request = serializer.serialize_to_request(params, model.operation_model("SendEmail"))
    assert request["headers"]["Content-Type"] == "application/json"
    body: bytes = request["body"]
    return body


@pytest.mark.parametrize(
    "provider",
    [
        SesProvider(AwsSettings(), SesSettings(), sender="Acme <noreply@acme.example>"),
        SesProvider(AwsSettings(), SesSettings(configuration_set="cs"), sender="n@acme.example",
                    reply_to="help@acme.example"),
        SesProvider(AwsSettings(), SesSettings(), sender="Équipe <n@acme.example>", raw=True,
                    reply_to="help@acme.example"),
    ],
    ids=["simple", "reply-to and configuration set", "raw MIME"],
)  # fmt: skip
def test_the_body_is_what_botocore_would_send(provider: SesProvider) -> None:
    params = provider.request(MESSAGE, RENDERED)
    assert aws_signed.body(params) == _botocore_body(params)


def test_text_only_without_headers() -> None:
    provider = SesProvider(AwsSettings(), SesSettings(), sender="n@acme.example")
    params = provider.request(MESSAGE, Rendered(subject="s", text="t"))
    assert aws_signed.body(params) == _botocore_body(params)


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails", "session-token"),
        ("https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails", None),
        ("http://127.0.0.1:4566/v2/email/outbound-emails", None),
        ("http://[::1]:4566/v2/email/outbound-emails", None),
        ("https://example.com:443/a%20b/c~d", "t"),
    ],
)
def test_the_signature_is_botocores(url: str, token: str | None) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    credentials = ReadOnlyCredentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
    )
    payload = aws_signed.body({"FromEmailAddress": "a@b.example", "Data": "é"})
    signer = aws_signed.Signer(url, "ses", "eu-west-1")
    for now in (1767225600.0, 1767225600.0 + 86400 * 3 + 7):  # the day's key, then another
        ours = signer.headers(payload, credentials, now)
        theirs = AWSRequest("POST", url, data=payload, headers={"Content-Type": "application/json"})
        theirs.context["timestamp"] = ours["x-amz-date"]
        theirs.headers["X-Amz-Date"] = ours["x-amz-date"]
        if token:
            theirs.headers["X-Amz-Security-Token"] = token
        auth = SigV4Auth(credentials, "ses", "eu-west-1")
        signature = auth.signature(
            auth.string_to_sign(theirs, auth.canonical_request(theirs)), theirs
        )
        assert ours["Authorization"].endswith(f"Signature={signature}")
        assert (
            f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(theirs))},"
            in ours["Authorization"]
        )
