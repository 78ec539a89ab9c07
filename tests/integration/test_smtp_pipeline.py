"""Pipelined SMTP transactions (RFC 2920) against real servers: the bench's minimal sink,
which records what arrives, and aiosmtpd advertising PIPELINING, which checks the
protocol and refuses what it is told to."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from daemon.bench import smtpsink
from daemon.providers.smtp import SmtpProvider
from daemon.providers.smtp_pipeline import stuff
from daemon.settings import SmtpSettings
from outbox import errors
from outbox.models import Message, Rendered
from tests.integration.aws_fake import free_port
from tests.integration.smtp_sink import Sink, _authenticator, _self_signed

TEXT = "Hi,\n.starts with a dot\n.\n..two dots\nend"


def _message(i: int, recipient: str = "ann@example.com") -> Message:
    return Message(i, "email", recipient, "welcome", {}, "transactional", 1, None, {}, 1,
                   None, datetime.now(UTC))  # fmt: skip


class _Recording(smtpsink.SinkProtocol):
    chunks: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        super().data_received(data)


@pytest.fixture
async def recording_sink() -> AsyncIterator[tuple[int, list[bytes]]]:
    chunks: list[bytes] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: type("R", (_Recording,), {"chunks": chunks})(), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1], chunks
    finally:
        server.close()
        await server.wait_closed()


class _Pipelining(Sink):
    """aiosmtpd with PIPELINING advertised; ``refuse`` scripts MAIL/RCPT refusals."""

    def __init__(self, port: int) -> None:
        super().__init__(port=port)
        self.refuse: dict[str, list[str]] = {"MAIL": [], "RCPT": []}
        self.commands: list[str] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append("MAIL")
        if self.refuse["MAIL"]:
            return self.refuse["MAIL"].pop(0)
        envelope.mail_from, envelope.mail_options = address, options
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append("RCPT")
        if self.refuse["RCPT"]:
            return self.refuse["RCPT"].pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 OK"


@pytest.fixture
def pipelining_sink() -> Iterator[_Pipelining]:
    sink = _Pipelining(free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def _provider(port: int) -> SmtpProvider:
    return SmtpProvider(
        SmtpSettings(host="127.0.0.1", port=port, pool_size=1, timeout=5), sender="a@acme.example"
    )


async def test_envelope_and_data_go_in_two_writes_and_arrive_intact(
    recording_sink: tuple[int, list[bytes]],
) -> None:
    port, chunks = recording_sink
    async with _provider(port) as provider:
        for i in range(3):
            await provider.send(_message(i), Rendered(subject="s", text=TEXT, html="<p>x</p>"))
    received = b"".join(chunks)
    # The first transaction goes through aiosmtplib (it sends EHLO); the others are
    # pipelined: MAIL, RCPT and DATA in one write, then the message in one write.
    pipelined = [c for c in chunks if c.endswith(b"RCPT TO:<ann@example.com>\r\nDATA\r\n")]
    assert len(pipelined) == 2 and all(c.startswith(b"MAIL FROM:") for c in pipelined)
    assert b"MAIL FROM:<a@acme.example> SIZE=" in pipelined[-1]
    messages = received.split(b"DATA\r\n")[1:]
    assert len(messages) == 3
    for raw in messages:
        body = raw.split(b"\r\n.\r\n")[0]
        unstuffed = body.replace(b"\r\n..", b"\r\n.")
        parsed = email.message_from_bytes(unstuffed, policy=email.policy.default)
        text = next(parsed.iter_parts()).get_content()
        assert text.replace("\r\n", "\n") == TEXT


async def test_every_message_is_delivered_with_its_dots(pipelining_sink: _Pipelining) -> None:
    async with _provider(pipelining_sink.port) as provider:
        await asyncio.gather(
            *(provider.send(_message(i), Rendered(subject="s", text=TEXT)) for i in range(5))
        )
    assert len(pipelining_sink.messages) == 5
    for envelope in pipelining_sink.messages:
        assert envelope.mail_from == "a@acme.example" and envelope.rcpt_tos == ["ann@example.com"]
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert parsed.get_content().replace("\r\n", "\n") == TEXT + "\n"  # single part
        assert any(option.startswith("SIZE=") for option in envelope.mail_options)


@pytest.mark.parametrize(
    ("where", "reply", "expected"),
    [
        ("MAIL", "550 5.7.1 sender not allowed", errors.PermanentError),
        ("MAIL", "451 4.3.0 try later", errors.TransientError),
        ("RCPT", "550 5.1.1 no such user", errors.PermanentError),
        ("RCPT", "452 4.2.2 mailbox full", errors.TransientError),
        ("DATA", "554 5.6.0 rejected", errors.PermanentError),
    ],
)
async def test_refusals_are_classified_and_the_envelope_reset(
    pipelining_sink: _Pipelining, where: str, reply: str, expected: type[Exception]
) -> None:
    async with _provider(pipelining_sink.port) as provider:
        await provider.send(_message(1), Rendered(subject="s", text="first"))  # EHLO done
        if where == "DATA":
            pipelining_sink.replies = [reply]
        else:
            pipelining_sink.refuse[where] = [reply]
        with pytest.raises(expected) as refused:
            await provider.send(_message(2), Rendered(subject="s", text="refused"))
        assert reply.split(" ", 1)[1] in str(refused.value)
        await provider.send(_message(3), Rendered(subject="s", text="after"))
    assert [m.content.decode().rsplit("\r\n\r\n", 1)[-1].strip() for m in
            pipelining_sink.messages] == ["first", "after"]  # fmt: skip
    if where != "DATA":
        assert "RSET" in pipelining_sink.commands


async def test_pipelining_over_starttls_and_auth(tmp_path: Path) -> None:
    sink = _Pipelining(free_port())
    controller = Controller(
        sink, hostname="127.0.0.1", port=sink.port, tls_context=_self_signed(tmp_path),
        require_starttls=True, auth_required=True, authenticator=_authenticator,
    )  # fmt: skip
    controller.start()
    try:
        settings = SmtpSettings(
            host="127.0.0.1", port=sink.port, tls="starttls", username="app",
            password="s3cret", validate_certs=False, pool_size=1, timeout=5,
        )  # fmt: skip
        async with SmtpProvider(settings, sender="a@acme.example") as provider:
            for i in range(4):
                await provider.send(_message(i), Rendered(subject="s", text=TEXT))
            assert provider.connections_opened == 1
    finally:
        controller.stop()
    assert len(sink.messages) == 4
    assert sink.commands.count("MAIL") == 4 and "RSET" not in sink.commands


def test_stuffing() -> None:
    assert stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert stuff(b"no newline") == b"no newline\r\n.\r\n"
    assert stuff(b"lone\nlf and\rcr") == b"lone\r\nlf and\r\ncr\r\n.\r\n"


class _Babbling(smtpsink.SinkProtocol):
    """Answers DATA's group with a reply that never ends."""

    def data_received(self, data: bytes) -> None:
        if b"RCPT TO:" in data and b"DATA" in data and self.transport is not None:
            self.transport.write(b"250-" + b"x" * 70_000)
            return
        super().data_received(data)


async def test_a_reply_that_never_ends_fails_the_send_not_the_memory() -> None:
    server = await asyncio.get_running_loop().create_server(_Babbling, "127.0.0.1", 0)
    try:
        async with _provider(server.sockets[0].getsockname()[1]) as provider:
            await provider.send(_message(1), Rendered(subject="s", text="first"))  # EHLO
            with pytest.raises(errors.TransientError, match="reply too long"):
                await provider.send(_message(2), Rendered(subject="s", text="second"))
    finally:
        server.close()
        await server.wait_closed()


async def test_the_provider_bench_measures_sends() -> None:
    from daemon.bench import smtp_send

    result = await smtp_send.measure(50, 4)
    assert result["cpu_us"] > 0 and result["rate"] > 0
