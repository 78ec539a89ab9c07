"""A real SMTP server (aiosmtpd) for tests, with scriptable replies, STARTTLS and AUTH."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.aws_fake import free_port


@dataclass
class Sink:
    """Records accepted messages; ``replies`` scripts the DATA answers (then 250)."""

    port: int = 0
    messages: list[Any] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.add(id(session))
        if self.replies:
            return self.replies.pop(0)
        self.messages.append(envelope)
        return "250 OK"


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
    ok = isinstance(auth, LoginPassword) and (auth.login, auth.password) == (b"app", b"s3cret")
    # handled=False: aiosmtpd answers a failure with 535 itself (True would mean we had).
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_sink() -> Iterator[Sink]:
    sink = Sink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_tls_sink(tmp_path: Path) -> Iterator[Sink]:
    """STARTTLS required before AUTH; AUTH required before mail (user app / s3cret)."""
    sink = Sink(port=free_port())
    controller = Controller(
        sink, hostname="127.0.0.1", port=sink.port, tls_context=_self_signed(tmp_path),
        require_starttls=True, auth_required=True, authenticator=_authenticator,
    )  # fmt: skip
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
