"""Verification of SNS HTTP(S) messages (the envelope SES feedback arrives in).

Order matters: cheap structural checks and the topic allowlist come before any
certificate is loaded or downloaded, so unknown senders cost us nothing. Signatures are
checked over AWS's canonical string for the message type, SignatureVersion 1
(SHA1withRSA) or 2 (SHA256withRSA), with a certificate whose URL must be an SNS host.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from daemon.feedback import bounded_json

MAX_BODY_BYTES = 256 * 1024
#: An envelope is a flat object of strings; SES events nest a few levels inside Message.
MAX_ENVELOPE_DEPTH = 8
MAX_AGE = timedelta(hours=1)
MAX_CLOCK_SKEW = timedelta(minutes=5)
_CERT_URL = re.compile(
    r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[A-Za-z0-9]+\.pem$"
)
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_CERT_PATH = re.compile(r"^/SimpleNotificationService-[A-Za-z0-9]+\.pem$")
_TYPES = {"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"}
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_CERT_CACHE_SIZE = 32
_MAX_CERT_BYTES = 64 * 1024


class SnsRejected(Exception):
    """An SNS request we refuse: ``status`` is 400 (malformed) or 403 (not trusted)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SnsEnvelope:
    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    subject: str | None
    subscribe_url: str | None
    token: str | None
    raw: dict[str, Any]


def canonical_string(fields: dict[str, Any]) -> bytes:
    """The bytes AWS signs for this message type ("Key\\nvalue\\n" in a fixed order)."""
    parts = []
    for key in _SIGNED_FIELDS[fields["Type"]]:
        if key == "Subject" and key not in fields:
            continue  # Subject is signed only when present
        parts.append(f"{key}\n{fields[key]}\n")
    return "".join(parts).encode("utf-8")


def check_cert_url(url: str) -> str:
    """The certificate's file name, if ``url`` is an SNS signing-certificate URL."""
    if not isinstance(url, str) or not _CERT_URL.fullmatch(url):
        raise SnsRejected(403, "SigningCertURL is not an SNS certificate URL")
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or parts.port not in (None, 443)
        or not _SNS_HOST.fullmatch(parts.hostname or "")
        or not _CERT_PATH.fullmatch(parts.path)
        or parts.query
        or parts.fragment
    ):
        raise SnsRejected(403, "SigningCertURL is not an SNS certificate URL")
    return parts.path.lstrip("/")


def validate_subscribe_url(url: str) -> str:
    """``url`` if it is safe to GET for a subscription confirmation (SSRF guard)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SnsRejected(400, "SubscribeURL is malformed") from exc
    actions = parse_qs(parts.query).get("Action", [])
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or not _SNS_HOST.fullmatch(parts.hostname or "")
        or parts.fragment
        or actions != ["ConfirmSubscription"]
    ):
        raise SnsRejected(400, "SubscribeURL is not an SNS ConfirmSubscription URL")
    return url


def _parse(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise SnsRejected(400, "body larger than 256 KiB")
    try:
        fields = bounded_json.loads(body, max_depth=MAX_ENVELOPE_DEPTH)
    except bounded_json.JsonRejected as exc:
        raise SnsRejected(400, f"body is {exc}") from exc
    if not isinstance(fields, dict):
        raise SnsRejected(400, "body is not an SNS message")
    kind = fields.get("Type")
    if not isinstance(kind, str) or kind not in _TYPES:
        # Raw message delivery sends the SES JSON itself: it cannot be verified.
        raise SnsRejected(400, "not an SNS envelope (raw delivery is not accepted)")
    required = {k for k in _SIGNED_FIELDS[kind] if k != "Subject"}
    required |= {"Signature", "SignatureVersion", "SigningCertURL"}
    missing = sorted(k for k in required if not isinstance(fields.get(k), str))
    if missing:
        raise SnsRejected(400, f"missing fields: {', '.join(missing)}")
    if "Subject" in fields and not isinstance(fields["Subject"], str):
        raise SnsRejected(400, "Subject is not a string")
    return fields


def _timestamp(value: str, now: datetime) -> datetime:
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SnsRejected(400, "Timestamp is not ISO 8601") from exc
    if stamp.tzinfo is None:
        raise SnsRejected(400, "Timestamp has no time zone")
    if now - stamp > MAX_AGE:
        raise SnsRejected(400, "message is older than one hour")
    if stamp - now > MAX_CLOCK_SKEW:
        raise SnsRejected(400, "message is from the future")
    return stamp


class SnsVerifier:
    """Verifies SNS messages for an allowlist of topics."""

    def __init__(
        self,
        *,
        topic_arns: Collection[str],
        cert_dir: Path | None = None,
        http: aiohttp.ClientSession | None = None,
        fetch_timeout: float = 5.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.topic_arns = frozenset(topic_arns)
        self.cert_dir = cert_dir
        self.http = http
        self.fetch_timeout = fetch_timeout
        self.now = now
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()

    async def verify(self, body: bytes, *, message_type_header: str | None = None) -> SnsEnvelope:
        """The verified envelope, or :class:`SnsRejected`."""
        fields = _parse(body)
        if message_type_header is not None and message_type_header != fields["Type"]:
            raise SnsRejected(400, "x-amz-sns-message-type does not match Type")
        if fields["TopicArn"] not in self.topic_arns:
            raise SnsRejected(403, "topic is not allowed")
        hash_factory = _HASHES.get(fields["SignatureVersion"])
        if hash_factory is None:
            raise SnsRejected(400, "unsupported SignatureVersion")
        stamp = _timestamp(fields["Timestamp"], self.now())
        file_name = check_cert_url(fields["SigningCertURL"])
        cert = await self._certificate(fields["SigningCertURL"], file_name)
        try:
            signature = base64.b64decode(fields["Signature"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsRejected(403, "Signature is not base64") from exc
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRejected(403, "signing certificate does not hold an RSA key")
        try:
            key.verify(signature, canonical_string(fields), padding.PKCS1v15(), hash_factory())
        except InvalidSignature as exc:
            raise SnsRejected(403, "signature does not verify") from exc
        return SnsEnvelope(
            type=fields["Type"],
            message_id=fields["MessageId"],
            topic_arn=fields["TopicArn"],
            message=fields["Message"],
            timestamp=stamp,
            subject=fields.get("Subject"),
            subscribe_url=fields.get("SubscribeURL"),
            token=fields.get("Token"),
            raw=fields,
        )

    async def _certificate(self, url: str, file_name: str) -> x509.Certificate:
        cert = self._certs.get(url)
        if cert is None:
            pem = self._pinned(file_name) or await self._download(url)
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise SnsRejected(403, "signing certificate is not a PEM certificate") from exc
            self._certs[url] = cert  # only certificates that loaded are cached
            while len(self._certs) > _CERT_CACHE_SIZE:
                self._certs.popitem(last=False)
        now = self.now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsRejected(403, "signing certificate is expired or not yet valid")
        return cert

    def _pinned(self, file_name: str) -> bytes | None:
        if self.cert_dir is None:
            return None
        path = self.cert_dir / file_name
        return path.read_bytes() if path.is_file() else None

    async def _download(self, url: str) -> bytes:
        if self.http is None:
            raise SnsRejected(403, "signing certificate is not pinned and downloads are off")
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        try:
            async with self.http.get(url, allow_redirects=False, timeout=timeout) as response:
                if response.status != 200:
                    raise SnsRejected(
                        403, f"signing certificate download answered {response.status}"
                    )
                data = await response.content.read(_MAX_CERT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SnsRejected(403, "signing certificate could not be downloaded") from exc
        if len(data) > _MAX_CERT_BYTES:
            raise SnsRejected(403, "signing certificate is too large")
        return data
