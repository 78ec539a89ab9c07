"""Verification of SNS HTTP(S) messages (the envelope SES feedback arrives in).

Order matters: structure, field formats, the topic allowlist, the age and the signature's
shape are checked before any certificate is loaded or downloaded, so unknown senders cost
us nothing. Signatures are checked over AWS's canonical string for the message type,
SignatureVersion 1 (SHA1withRSA) or 2 (SHA256withRSA), with a certificate from
:mod:`daemon.feedback.certificates`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from daemon.feedback import bounded_json, outbound
from daemon.feedback.certificates import (
    CertificateRefused,
    Certificates,
    Download,
    cert_file_name,
    is_sns_host,
)

MAX_BODY_BYTES = 256 * 1024
#: An envelope is a flat object of strings; SES events nest a few levels inside Message.
MAX_ENVELOPE_DEPTH = 8
MAX_AGE = timedelta(hours=1)
MAX_CLOCK_SKEW = timedelta(minutes=5)
_TYPES = {"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"}
#: The fields AWS signs, in the order it signs them ("Key\nvalue\n" each).
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
#: Every signed field but Message is one line of printable ASCII, in the shape SNS gives it
#: (Type and TopicArn must equal known values). This is what makes the canonical string
#: unambiguous: were a line break allowed in MessageId, "MessageId\nX\nSubject\nY\n" could
#: be read with or without a Subject, and a signed message be replayed under another id.
_FIELD_SHAPES = {
    "MessageId": re.compile(r"[A-Za-z0-9-]{1,100}", re.ASCII),
    "Subject": re.compile(r"[\x20-\x7e]{1,256}", re.ASCII),
    "Timestamp": re.compile(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z", re.ASCII
    ),
    "Token": re.compile(r"[\x21-\x7e]{1,1024}", re.ASCII),
    "SubscribeURL": re.compile(r"[\x21-\x7e]{1,2048}", re.ASCII),
    "SignatureVersion": re.compile(r"[12]", re.ASCII),
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
#: SNS signs with 2048-bit keys (256-byte signatures); anything outside this is not SNS.
_SIGNATURE_BYTES = range(128, 1025)


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
    try:
        return cert_file_name(url)
    except CertificateRefused as exc:
        raise SnsRejected(403, str(exc)) from exc


def validate_subscribe_url(url: str) -> str:
    """``url`` if it is safe to GET for a subscription confirmation (SSRF guard)."""
    if not isinstance(url, str) or not _FIELD_SHAPES["SubscribeURL"].fullmatch(url):
        raise SnsRejected(400, "SubscribeURL is malformed")
    try:
        parts = outbound.split_url(url)
    except outbound.UrlRefused as exc:
        if str(exc) == "the URL is malformed":
            raise SnsRejected(400, "SubscribeURL is malformed") from exc
        raise SnsRejected(400, "SubscribeURL is not an SNS ConfirmSubscription URL") from exc
    actions = parse_qs(parts.query).get("Action", [])
    if (
        parts.netloc != parts.hostname
        or parts.port is not None
        or not is_sns_host(parts.netloc)
        or parts.path not in ("", "/")
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
    for key in (*_SIGNED_FIELDS[kind], "SignatureVersion"):
        if key in ("Message", "Type", "TopicArn") or (key == "Subject" and key not in fields):
            # Message may hold anything; Type and TopicArn must equal known values.
            continue
        value = fields[key]
        if not isinstance(value, str) or not _FIELD_SHAPES[key].fullmatch(value):
            raise SnsRejected(400, f"{key} is malformed")
    return fields


def _timestamp(value: str, now: datetime) -> datetime:
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SnsRejected(400, "Timestamp is not ISO 8601") from exc
    if now - stamp > MAX_AGE:
        raise SnsRejected(400, "message is older than one hour")
    if stamp - now > MAX_CLOCK_SKEW:
        raise SnsRejected(400, "message is from the future")
    return stamp


def _signature(value: str) -> bytes:
    try:
        signature = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnsRejected(403, "Signature is not base64") from exc
    if len(signature) not in _SIGNATURE_BYTES:
        raise SnsRejected(403, "Signature has the wrong length")
    return signature


class SnsVerifier:
    """Verifies SNS messages for an allowlist of topics."""

    def __init__(
        self,
        *,
        topic_arns: Collection[str],
        cert_dir: Path | None = None,
        download: Download | None = None,
        certificates: Certificates | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.topic_arns = frozenset(topic_arns)
        self.now = now
        self.certificates = certificates or Certificates(
            cert_dir=cert_dir, download=download, now=now
        )

    async def verify(self, body: bytes, *, message_type_header: str | None = None) -> SnsEnvelope:
        """The verified envelope, or :class:`SnsRejected`."""
        fields = _parse(body)
        if message_type_header is not None and message_type_header != fields["Type"]:
            raise SnsRejected(400, "x-amz-sns-message-type does not match Type")
        if fields["TopicArn"] not in self.topic_arns:
            raise SnsRejected(403, "topic is not allowed")
        hash_factory = _HASHES[fields["SignatureVersion"]]
        stamp = _timestamp(fields["Timestamp"], self.now())
        signature = _signature(fields["Signature"])
        check_cert_url(fields["SigningCertURL"])
        # Only now, with every cheap check passed, may a certificate be fetched.
        try:
            cert = await self.certificates.get(fields["SigningCertURL"])
        except CertificateRefused as exc:
            raise SnsRejected(403, str(exc)) from exc
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
