"""SNS envelope verification: every rejection path, and the happy paths of v1 and v2."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from daemon.feedback.certificates import CertificateRefused, Certificates, http_download
from daemon.feedback.envelope import (
    SnsRejected,
    SnsVerifier,
    check_cert_url,
    validate_subscribe_url,
)
from tests.network_guard import no_outbound
from tests.sns_signing import TOPIC, Signer, body


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.create(tmp_path / "certs")


@pytest.fixture
def verifier(tmp_path: Path) -> SnsVerifier:
    return SnsVerifier(topic_arns=[TOPIC], cert_dir=tmp_path / "certs")


async def _rejected(verifier: SnsVerifier, data: bytes, status: int, **kwargs: str) -> str:
    with pytest.raises(SnsRejected) as caught:
        await verifier.verify(data, **kwargs)
    assert caught.value.status == status
    return caught.value.reason


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_notification_verifies(
    signer: Signer, verifier: SnsVerifier, version: str
) -> None:
    fields = signer.notification({"eventType": "Send"}, version=version, subject="Amazon SES")
    envelope = await verifier.verify(body(fields), message_type_header="Notification")
    assert (envelope.type, envelope.topic_arn) == ("Notification", TOPIC)
    assert json.loads(envelope.message) == {"eventType": "Send"}
    assert envelope.subject == "Amazon SES"


async def test_subscription_confirmation_verifies(signer: Signer, verifier: SnsVerifier) -> None:
    envelope = await verifier.verify(body(signer.subscription()))
    assert envelope.type == "SubscriptionConfirmation"
    assert envelope.subscribe_url is not None and envelope.token is not None


@pytest.mark.parametrize("field", ["Message", "MessageId", "TopicArn", "Timestamp", "Subject"])
async def test_tampering_with_a_signed_field_is_forbidden(
    signer: Signer, verifier: SnsVerifier, field: str
) -> None:
    fields = signer.notification({"eventType": "Send"}, subject="s")
    if field == "TopicArn":
        verifier.topic_arns = frozenset({TOPIC, TOPIC + "-other"})
        fields[field] = TOPIC + "-other"
    elif field == "Timestamp":
        earlier = datetime.now(UTC) - timedelta(minutes=1)
        fields[field] = earlier.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        fields[field] = fields[field] + "x"
    assert "does not verify" in await _rejected(verifier, body(fields), 403)


async def test_adding_a_subject_breaks_the_signature(signer: Signer, verifier: SnsVerifier) -> None:
    fields = signer.notification({"eventType": "Send"})
    fields["Subject"] = "injected"
    await _rejected(verifier, body(fields), 403)


async def test_signature_by_another_key_is_forbidden(tmp_path: Path, verifier: SnsVerifier) -> None:
    genuine = Signer.create(tmp_path / "certs")
    forger = Signer.create(tmp_path / "elsewhere")
    forged = forger.notification({"eventType": "Send"})
    forged["SigningCertURL"] = genuine.cert_url
    forged = {**forged, "Signature": forged["Signature"]}
    await _rejected(verifier, body(forged), 403)


async def test_unknown_signature_version_and_garbage_signature(
    signer: Signer, verifier: SnsVerifier
) -> None:
    fields = signer.notification({"eventType": "Send"})
    assert "SignatureVersion" in await _rejected(
        verifier, body({**fields, "SignatureVersion": "3"}), 400
    )
    await _rejected(verifier, body({**fields, "Signature": "!!!not base64!!!"}), 403)


async def test_topic_not_allowed_is_forbidden_before_any_certificate_work(
    tmp_path: Path, signer: Signer
) -> None:
    verifier = SnsVerifier(topic_arns=["arn:aws:sns:us-east-1:1:other"], cert_dir=None)
    reason = await _rejected(verifier, body(signer.notification({})), 403)
    assert reason == "topic is not allowed"


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com.evil.test/SimpleNotificationService-abc.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/../SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#f",
        "https://sns.us-east-1.amazonaws.com/other-abc.pem",
        "https://evil.test/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem\n",
    ],
)
def test_certificate_urls_outside_sns_are_refused(url: str) -> None:
    with pytest.raises(SnsRejected) as caught:
        check_cert_url(url)
    assert caught.value.status == 403


def test_genuine_certificate_urls_are_accepted() -> None:
    assert (
        check_cert_url("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9f8e.pem")
        == "SimpleNotificationService-9f8e.pem"
    )
    check_cert_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem")


async def test_missing_certificate_without_download_is_forbidden_and_not_cached(
    tmp_path: Path,
) -> None:
    signer = Signer.create(tmp_path / "staging")
    verifier = SnsVerifier(topic_arns=[TOPIC], cert_dir=tmp_path / "certs")
    data = body(signer.notification({"eventType": "Send"}))
    assert "not pinned" in await _rejected(verifier, data, 403)
    # Once the certificate is pinned, the same message verifies: the failure was not cached.
    (tmp_path / "certs").mkdir()
    name = signer.cert_url.rsplit("/", 1)[1]
    (tmp_path / "certs" / name).write_bytes(signer.cert_pem)
    assert (await verifier.verify(data)).type == "Notification"


async def test_expired_certificate_is_forbidden(tmp_path: Path) -> None:
    signer = Signer.create(tmp_path / "certs", not_after=datetime.now(UTC) - timedelta(seconds=5))
    verifier = SnsVerifier(topic_arns=[TOPIC], cert_dir=tmp_path / "certs")
    assert "expired" in await _rejected(verifier, body(signer.notification({})), 403)


async def test_stale_and_future_timestamps_are_refused(
    signer: Signer, verifier: SnsVerifier
) -> None:
    old = signer.notification({}, timestamp=datetime.now(UTC) - timedelta(hours=1, minutes=1))
    assert "older" in await _rejected(verifier, body(old), 400)
    future = signer.notification({}, timestamp=datetime.now(UTC) + timedelta(minutes=10))
    assert "future" in await _rejected(verifier, body(future), 400)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"Type": "Notification"}',
        json.dumps({"notificationType": "Bounce", "bounce": {}, "mail": {}}).encode(),
        json.dumps({"Type": "Weird"}).encode(),
        b"\xff\xfe",
    ],
)
async def test_malformed_bodies_are_bad_requests(verifier: SnsVerifier, data: bytes) -> None:
    await _rejected(verifier, data, 400)


async def test_oversized_body_is_refused(verifier: SnsVerifier) -> None:
    await _rejected(verifier, b"{" + b" " * (256 * 1024) + b"}", 400)


async def test_message_type_header_must_match(signer: Signer, verifier: SnsVerifier) -> None:
    data = body(signer.notification({}))
    await _rejected(verifier, data, 400, message_type_header="SubscriptionConfirmation")


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=t",
        "https://sns.us-east-1.amazonaws.com:444/?Action=ConfirmSubscription",
        "https://a:b@sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://169.254.169.254/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com.evil.test/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com/?Action=Publish",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Action=Publish",
        "https://sns.us-east-1.amazonaws.com:notaport/?Action=ConfirmSubscription",
    ],
)
def test_subscribe_url_guard(url: str) -> None:
    with pytest.raises(SnsRejected):
        validate_subscribe_url(url)


def test_subscribe_url_guard_accepts_the_real_shape() -> None:
    url = (
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
        "&TopicArn=arn:aws:sns:us-east-1:123456789012:t&Token=2336412f37"
    )
    assert validate_subscribe_url(url) == url


@pytest.mark.parametrize("depth", [100, 100_000])
async def test_deeply_nested_bodies_are_bad_requests(verifier: SnsVerifier, depth: int) -> None:
    nested = b'{"Type": "Notification", "x": ' + b"[" * depth + b"]" * depth + b"}"
    await _rejected(verifier, nested, 400)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.s3.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.xn--us-east-1-3ya.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.xn--80ak6aa92e.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://\u0455ns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-\u0661.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com\uff0fSimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com//SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com\\@evil.test/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com%2F@evil.test/SimpleNotificationService-abc.pem",
        "https://sns.east.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem\t",
        " https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    ],
)
def test_certificate_urls_on_look_alike_hosts_are_refused(url: str) -> None:
    with pytest.raises(SnsRejected) as caught:
        check_cert_url(url)
    assert caught.value.status == 403


def test_government_and_china_regions_are_sns_hosts() -> None:
    for host in ("sns.us-gov-west-1.amazonaws.com", "sns.cn-northwest-1.amazonaws.com.cn",
                 "sns.ap-southeast-7.amazonaws.com"):  # fmt: skip
        assert check_cert_url(f"https://{host}/SimpleNotificationService-1f.pem")


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.s3.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.xn--us-east-1-3ya.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com:443/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com/\u2025/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com/elsewhere?Action=ConfirmSubscription",
    ],
)
def test_subscribe_urls_on_look_alike_hosts_are_refused(url: str) -> None:
    with pytest.raises(SnsRejected):
        validate_subscribe_url(url)


class CountingDownload:
    """A stand-in for the HTTPS download: serves one PEM, or fails, and counts calls."""

    def __init__(self, pem: bytes | None) -> None:
        self.pem = pem
        self.calls: list[str] = []
        self.called = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        self.called.set()
        await self.release.wait()
        if self.pem is None:
            raise CertificateRefused("signing certificate download answered 404")
        return self.pem


async def test_with_pinned_certificates_nothing_is_ever_downloaded(tmp_path: Path) -> None:
    stranger = Signer.create(tmp_path / "not-pinned")
    (tmp_path / "certs").mkdir()
    data = body(stranger.notification({"eventType": "Send"}))
    async with aiohttp.ClientSession() as session:
        verifier = SnsVerifier(
            topic_arns=[TOPIC], cert_dir=tmp_path / "certs", download=http_download(session)
        )
        with no_outbound() as attempts:
            reason = await _rejected(verifier, data, 403)
    assert "not pinned" in reason
    assert attempts == []


async def test_downloaded_certificates_and_failures_are_remembered(tmp_path: Path) -> None:
    signer = Signer.create(tmp_path / "staging")
    clock = [1000.0]
    good = CountingDownload(signer.cert_pem)
    verifier = SnsVerifier(
        topic_arns=[TOPIC],
        certificates=Certificates(download=good, monotonic=lambda: clock[0]),
    )
    for _ in range(3):
        await verifier.verify(body(signer.notification({"eventType": "Send"})))
    assert len(good.calls) == 1

    missing = CountingDownload(None)
    verifier = SnsVerifier(
        topic_arns=[TOPIC],
        certificates=Certificates(download=missing, monotonic=lambda: clock[0]),
    )
    for _ in range(3):
        assert "404" in await _rejected(verifier, body(signer.notification({})), 403)
    assert len(missing.calls) == 1  # the failure is remembered...
    clock[0] += 61
    await _rejected(verifier, body(signer.notification({})), 403)
    assert len(missing.calls) == 2  # ...for a minute


async def test_concurrent_messages_share_one_download(tmp_path: Path) -> None:
    signer = Signer.create(tmp_path / "staging")
    download = CountingDownload(signer.cert_pem)
    download.release.clear()
    verifier = SnsVerifier(topic_arns=[TOPIC], download=download)
    waiting = [
        asyncio.create_task(verifier.verify(body(signer.notification({})))) for _ in range(5)
    ]
    await download.called.wait()
    download.release.set()
    envelopes = await asyncio.gather(*waiting)
    assert len(envelopes) == 5 and len(download.calls) == 1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"TopicArn": "arn:aws:sns:us-east-1:123456789012:someone-else"}, 403),
        ({"Timestamp": "2020-01-01T00:00:00.000Z"}, 400),
        ({"Signature": "AAAA"}, 403),
        ({"Signature": "!!!"}, 403),
        ({"MessageId": "a\nb"}, 400),
        ({"SignatureVersion": "3"}, 400),
        ({"SigningCertURL": "https://sns.s3.amazonaws.com/SimpleNotificationService-1.pem"}, 403),
    ],
)
async def test_cheap_checks_come_before_any_download(
    tmp_path: Path, change: dict[str, str], status: int
) -> None:
    signer = Signer.create(tmp_path / "staging")
    download = CountingDownload(signer.cert_pem)
    verifier = SnsVerifier(topic_arns=[TOPIC], download=download)
    await _rejected(verifier, body({**signer.notification({}), **change}), status)
    assert download.calls == []


async def test_a_subject_moved_into_the_message_id_does_not_verify(
    signer: Signer, verifier: SnsVerifier
) -> None:
    genuine = signer.notification({"eventType": "Send"}, subject="Amazon SES")
    # The same canonical bytes ("MessageId\n<id>\nSubject\nAmazon SES\n"), read without a
    # Subject: a replay under a new MessageId if line breaks were allowed there.
    forged = {k: v for k, v in genuine.items() if k != "Subject"}
    forged["MessageId"] = f"{genuine['MessageId']}\nSubject\nAmazon SES"
    assert "MessageId" in await _rejected(verifier, body(forged), 400)
    assert (await verifier.verify(body(genuine))).subject == "Amazon SES"
