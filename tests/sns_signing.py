"""Sign SNS messages the way AWS does, with a throwaway key and self-signed certificate."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from daemon.feedback.envelope import canonical_string

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"


@dataclass
class Signer:
    key: rsa.RSAPrivateKey
    cert_pem: bytes
    cert_url: str

    @classmethod
    def create(
        cls, cert_dir: Path, *, valid_days: int = 30, not_after: datetime | None = None
    ) -> Signer:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(not_after or now + timedelta(days=valid_days))
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        file_name = f"SimpleNotificationService-{secrets.token_hex(16)}.pem"
        cert_dir.mkdir(parents=True, exist_ok=True)
        (cert_dir / file_name).write_bytes(pem)
        return cls(key, pem, f"https://sns.us-east-1.amazonaws.com/{file_name}")

    def sign(self, fields: dict[str, Any], version: str = "1") -> dict[str, Any]:
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(canonical_string(fields), padding.PKCS1v15(), algorithm)
        return {
            **fields,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": self.cert_url,
        }

    def notification(
        self,
        message: dict[str, Any] | str,
        *,
        topic: str = TOPIC,
        version: str = "1",
        subject: str | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": _stamp(timestamp),
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
        if subject is not None:
            fields["Subject"] = subject
        return self.sign(fields, version)

    def subscription(
        self,
        *,
        topic: str = TOPIC,
        subscribe_url: str | None = None,
        kind: str = "SubscriptionConfirmation",
    ) -> dict[str, Any]:
        token = secrets.token_hex(32)
        fields = {
            "Type": kind,
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic,
            "Message": f"You have chosen to subscribe to the topic {topic}.",
            "SubscribeURL": subscribe_url
            or "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={topic}&Token={token}",
            "Timestamp": _stamp(None),
        }
        return self.sign(fields)


def _stamp(value: datetime | None) -> str:
    value = value or datetime.now(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def body(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()
