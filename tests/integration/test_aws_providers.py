"""SES and SNS providers over real HTTP: moto's server, and scripted AWS error answers."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from daemon.providers.ses import SesProvider
from daemon.providers.sns import SnsSmsProvider
from daemon.settings import AwsSettings, SesSettings, SmsSettings
from outbox import errors
from outbox.models import Message, Rendered
from tests.integration.aws_fake import ACCOUNT, SENDER, FakeAws, aws_credentials, fake_aws, moto_url

__all__ = ["aws_credentials", "fake_aws", "moto_url"]

LONG_URL = "https://mail.acme.example/unsubscribe?token=" + "t" * 300
RENDERED = Rendered(
    subject="Bienvenue, Zoë",
    text="Bonjour Zoë",
    html="<p>Bonjour Zoë</p>",
    headers={
        "List-Unsubscribe": f"<{LONG_URL}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    },
)


def _message(recipient: str = "zoe@example.com", **kwargs: Any) -> Message:
    values: dict[str, Any] = {
        "id": 42, "channel": "email", "recipient": recipient, "template": "welcome",
        "context": {}, "category": "transactional", "priority": 1, "locale": None,
        "tags": {"campaign": "spring sale!"}, "attempts": 1, "expires_at": None,
        "created_at": datetime.now(UTC),
    }  # fmt: skip
    values.update(kwargs)
    return Message(**values)


def _verify(url: str, address: str = SENDER) -> None:
    client = boto3.client("sesv2", region_name="us-east-1", endpoint_url=url)
    client.create_email_identity(EmailIdentity=address)


async def test_ses_simple_send_through_moto(moto_url: str) -> None:
    _verify(moto_url)
    provider = SesProvider(
        AwsSettings(endpoint_url=moto_url), SesSettings(), sender=f"Acme <{SENDER}>"
    )
    async with provider:
        receipt = await provider.send(_message(), RENDERED)
    assert receipt.provider == "ses" and receipt.provider_message_id
    [sent] = ses_backends[ACCOUNT]["us-east-1"].sent_messages
    assert sent.id == receipt.provider_message_id
    assert sent.subject == "Bienvenue, Zoë"
    assert "zoe@example.com" in sent.destinations["ToAddresses"]


async def test_ses_raw_send_through_moto_keeps_long_headers_whole(moto_url: str) -> None:
    _verify(moto_url)
    provider = SesProvider(
        AwsSettings(endpoint_url=moto_url), SesSettings(), sender=SENDER, raw=True
    )
    async with provider:
        receipt = await provider.send(_message(), RENDERED)
    [sent] = ses_backends[ACCOUNT]["us-east-1"].sent_messages
    assert sent.id == receipt.provider_message_id
    parsed = email.message_from_string(sent.raw_data, policy=email.policy.default)
    assert str(parsed["List-Unsubscribe"]) == f"<{LONG_URL}>"
    assert str(parsed["Subject"]) == "Bienvenue, Zoë"


async def test_ses_unverified_sender_is_permanent(moto_url: str) -> None:
    provider = SesProvider(AwsSettings(endpoint_url=moto_url), SesSettings(), sender=SENDER)
    async with provider:
        with pytest.raises(errors.PermanentError, match="MessageRejected"):
            await provider.send(_message(), RENDERED)


async def test_sns_publish_through_moto(moto_url: str) -> None:
    provider = SnsSmsProvider(AwsSettings(endpoint_url=moto_url), SmsSettings())
    message = _message("+14155552671", channel="sms", template="sms/verification_code")
    async with provider:
        receipt = await provider.send(message, Rendered(sms="123456 is your code"))
    stored = sns_backends[ACCOUNT]["us-east-1"].sms_messages[receipt.provider_message_id or ""]
    assert stored == ("+14155552671", "123456 is your code")


async def test_sns_invalid_phone_fails_before_any_call(fake_aws: FakeAws) -> None:
    provider = SnsSmsProvider(AwsSettings(endpoint_url=fake_aws.url), SmsSettings())
    async with provider:
        with pytest.raises(errors.InvalidRecipient):
            await provider.send(_message("+1234", channel="sms"), Rendered(sms="x"))
    assert fake_aws.requests == []


async def test_sns_refuses_premium_numbers_and_overlong_texts_before_any_call(
    fake_aws: FakeAws,
) -> None:
    provider = SnsSmsProvider(AwsSettings(endpoint_url=fake_aws.url), SmsSettings(max_segments=2))
    async with provider:
        with pytest.raises(errors.InvalidRecipient, match="premium-rate"):
            await provider.send(_message("+19002345678", channel="sms"), Rendered(sms="x"))
        with pytest.raises(errors.PermanentError, match="3 segments"):
            await provider.send(_message("+14155552671", channel="sms"), Rendered(sms="a" * 307))
        assert provider.request(_message("+14155552671", channel="sms"), Rendered(sms="a" * 306))
    assert fake_aws.requests == []


async def test_ses_request_carries_headers_tags_and_configuration_set(fake_aws: FakeAws) -> None:
    provider = SesProvider(
        AwsSettings(endpoint_url=fake_aws.url), SesSettings(configuration_set="outboxd"),
        sender="Acme <noreply@acme.example>", reply_to="help@acme.example",
    )  # fmt: skip
    async with provider:
        receipt = await provider.send(_message(category="news"), RENDERED)
    assert receipt.provider_message_id == "fake-1"
    [request] = fake_aws.requests
    simple = request["Content"]["Simple"]
    assert {h["Name"]: h["Value"] for h in simple["Headers"]} == dict(RENDERED.headers)
    assert simple["Subject"] == {"Data": "Bienvenue, Zoë", "Charset": "UTF-8"}
    assert simple["Body"]["Html"]["Data"] == "<p>Bonjour Zoë</p>"
    assert request["ConfigurationSetName"] == "outboxd"
    assert request["ReplyToAddresses"] == ["help@acme.example"]
    tags = {t["Name"]: t["Value"] for t in request["EmailTags"]}
    assert tags == {"campaign": "spring_sale_", "outbox_id": "42", "category": "news"}


async def test_sns_sms_type_follows_the_category(fake_aws: FakeAws) -> None:
    provider = SnsSmsProvider(
        AwsSettings(endpoint_url=fake_aws.url), SmsSettings(sender_id="Acme", max_price=0.05)
    )
    async with provider:
        await provider.send(_message("+14155552671", channel="sms"), Rendered(sms="a"))
        await provider.send(
            _message("+14155552671", channel="sms", category="promo"), Rendered(sms="b")
        )
    types = [r["MessageAttributes.entry.1.Value.StringValue"] for r in fake_aws.requests]
    assert types == ["Transactional", "Promotional"]
    flat = " ".join(str(v) for v in fake_aws.requests[0].values())
    assert "AWS.SNS.SMS.SenderID" in flat and "Acme" in flat and "0.05000" in flat


@pytest.mark.parametrize(
    ("failure", "decision"),
    [
        ((429, "TooManyRequestsException"), errors.Throttled),
        ((400, "SendingPausedException"), errors.ChannelPaused),
        ((400, "AccountSuspendedException"), errors.ChannelPaused),
        ((400, "MessageRejected"), errors.PermanentError),
        ((400, "MailFromDomainNotVerifiedException"), errors.PermanentError),
        ((503, "ServiceUnavailable"), errors.TransientError),
        ((400, "SomethingNew"), errors.PermanentError),
    ],
)
async def test_ses_errors_are_classified(
    fake_aws: FakeAws, failure: tuple[int, str], decision: type[errors.OutboxError]
) -> None:
    fake_aws.failure = failure
    provider = SesProvider(AwsSettings(endpoint_url=fake_aws.url), SesSettings(), sender=SENDER)
    async with provider:
        with pytest.raises(decision) as caught:
            await provider.send(_message(), RENDERED)
    assert failure[1].removesuffix("Exception") in caught.value.reason


@pytest.mark.parametrize(
    ("failure", "decision"),
    [
        ((400, "Throttling"), errors.Throttled),
        ((400, "InvalidParameter"), errors.PermanentError),
        ((403, "AuthorizationError"), errors.ChannelPaused),
        ((500, "InternalError"), errors.TransientError),
    ],
)
async def test_sns_errors_are_classified(
    fake_aws: FakeAws, failure: tuple[int, str], decision: type[errors.OutboxError]
) -> None:
    fake_aws.failure = failure
    provider = SnsSmsProvider(AwsSettings(endpoint_url=fake_aws.url), SmsSettings())
    async with provider:
        with pytest.raises(decision):
            await provider.send(_message("+14155552671", channel="sms"), Rendered(sms="x"))


async def test_unreachable_endpoint_is_transient(aws_credentials: None) -> None:
    from tests.integration.aws_fake import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    provider = SesProvider(AwsSettings(endpoint_url=dead, timeout=2), SesSettings(), sender=SENDER)
    async with provider:
        with pytest.raises(errors.TransientError):
            await provider.send(_message(), RENDERED)


async def test_max_send_rate_comes_from_the_account(fake_aws: FakeAws) -> None:
    provider = SesProvider(AwsSettings(endpoint_url=fake_aws.url), SesSettings(), sender=SENDER)
    async with provider:
        assert await provider.max_send_rate() == 14.0
