"""One mail transaction on an open aiosmtplib connection, pipelined (RFC 2920).

aiosmtplib's ``sendmail`` costs more CPU than everything else outboxd does for an SMTP
message: four round trips (MAIL, RCPT, DATA, the message), each awaited under a lock with
its own ``wait_for`` timer; five to seven parses of the two addresses with the standard
library's address parser; and three regular-expression passes over the whole message. Its
protocol cannot pipeline: a reply that arrives beside the one awaited is dropped.

Here, on a server that advertises PIPELINING, MAIL, RCPT and DATA go out in one write and
their three replies come back together; the message follows the 354 in a second write,
made by the protocol as the replies arrive, so that the sending task wakes once per
transaction (for the final reply), not twice.
For the transaction only, the connection's transport hands its bytes to a small protocol
of ours, then goes back to aiosmtplib's, which keeps owning the connection (EHLO,
STARTTLS, AUTH, QUIT, close). The addresses are ones the daemon has validated already (a
control character still refuses them), and the message is the CRLF MIME of
:mod:`daemon.providers.mime`, dot-stuffed with ``bytes.replace``. No timer either: the
lane's send deadline bounds the whole send.

Failures raise aiosmtplib's own exceptions, exactly as ``sendmail`` does, so that the
provider classifies them alike (and discards the connection); after a refusal the
envelope is reset (RSET).
"""

from __future__ import annotations

import asyncio
import collections
import re

import aiosmtplib

_CONTROL = re.compile(r"[\x00-\x1f\x7f<>]")
#: Replies are a few lines; a server sending more without an end is broken (or hostile).
_MAX_REPLY_BYTES = 64 * 1024


def can_pipeline(client: aiosmtplib.SMTP, *addresses: str) -> bool:
    """Whether :func:`send` may carry this transaction (else use ``client.sendmail``)."""
    return (
        client.transport is not None
        and client.protocol is not None
        and not client.is_ehlo_or_helo_needed
        and client.supports_extension("pipelining")
        and all(address.isascii() for address in addresses)
    )


def stuff(data: bytes) -> bytes:
    """``data`` (CRLF line endings) as sent after DATA: dot-stuffed, ending CRLF.CRLF."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:  # a lone CR or LF
        data = aiosmtplib.protocol.normalize_message_line_endings(data)
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class _Replies(asyncio.Protocol):
    """Collects SMTP replies while it is the transport's protocol."""

    def __init__(self, inner: asyncio.BaseProtocol, transport: asyncio.WriteTransport) -> None:
        self.inner = inner
        self.transport = transport
        #: The message to write once MAIL and RCPT are accepted and DATA answered 354.
        self.content: bytes | None = None
        self.buffer = b""
        self.replies: collections.deque[aiosmtplib.SMTPResponse] = collections.deque()
        self.wanted = 0
        self.waiter: asyncio.Future[None] | None = None
        #: Why no more replies will come (connection lost, broken reply).
        self.lost: BaseException | None = None

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        start = reply_start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if buffer[start + 3 : start + 4] != b"-":  # the last line of a reply
                self._reply(buffer[reply_start : end + 1])
                reply_start = end + 1
            start = end + 1
        self.buffer = buffer[reply_start:]  # an unfinished reply waits for its next lines
        if len(self.buffer) > _MAX_REPLY_BYTES and self.lost is None:
            self.lost = aiosmtplib.SMTPResponseException(-1, "reply too long")
            self.buffer = b""
        self._check()

    def _reply(self, reply: bytes) -> None:
        if reply.find(b"\n") == len(reply) - 1 and reply[3:4] in (b" ", b"\r"):
            # One line (most replies): nothing to split and join.
            try:
                code = int(reply[:3])
            except ValueError:
                code = -1
            text = reply[4:].strip().decode("utf-8", "surrogateescape")
            self.replies.append(aiosmtplib.SMTPResponse(code, text))
            return
        lines = reply.splitlines()
        try:
            code = int(lines[-1][:3])
        except ValueError:
            code = -1  # a malformed reply: refused like any other unexpected code
        text = "\n".join(line[4:].strip().decode("utf-8", "surrogateescape") for line in lines)
        self.replies.append(aiosmtplib.SMTPResponse(code, text))

    def _check(self) -> None:
        content = self.content
        if content is not None and len(self.replies) >= 3 and self.lost is None:
            self.content = None
            mail, rcpt, data = self.replies[0], self.replies[1], self.replies[2]
            if data.code == 354 and mail.code == 250 and rcpt.code in (250, 251):
                self.transport.write(content)
                self.wanted = 4  # and the reply to the message
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.lost is not None:
                waiter.set_exception(self.lost)
            elif len(self.replies) >= self.wanted:
                waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self.lost = aiosmtplib.SMTPServerDisconnected("Unexpected EOF received")
        self._check()
        return self.inner.eof_received() if isinstance(self.inner, asyncio.Protocol) else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = aiosmtplib.SMTPServerDisconnected(f"Connection lost: {exc}")
        self._check()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    async def read(self, count: int) -> list[aiosmtplib.SMTPResponse]:
        """The next ``count`` replies."""
        self.wanted = count
        await self._wait()
        return [self.replies.popleft() for _ in range(count)]

    async def transaction(self, content: bytes) -> list[aiosmtplib.SMTPResponse]:
        """The replies to MAIL, RCPT and DATA; when they accept the message, ``content``
        is written as they arrive, and its own reply comes fourth."""
        self.content = content
        self.wanted = 3
        await self._wait()
        return [self.replies.popleft() for _ in range(self.wanted)]

    async def _wait(self) -> None:
        """Until ``wanted`` replies are here (``_check`` may raise ``wanted``)."""
        if len(self.replies) < self.wanted:
            if self.lost is not None:
                raise self.lost
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None


async def send(client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes) -> str:
    """Send ``data`` from ``sender`` to ``recipient``; returns the server's final reply.

    Only when :func:`can_pipeline` says so. Raises what ``client.sendmail`` would.
    """
    for address in (sender, recipient):
        if _CONTROL.search(address):
            raise ValueError("an envelope address contains a prohibited character")
    message = stuff(data)
    mail = f"MAIL FROM:<{sender}>"
    if client.supports_extension("size"):
        mail += f" SIZE={len(message) - 3}"  # without the terminating ".\r\n"
    commands = f"{mail}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii")
    transport, inner = client.transport, client.protocol
    assert isinstance(transport, asyncio.WriteTransport) and inner is not None
    replies = _Replies(inner, transport)
    transport.set_protocol(replies)
    try:
        transport.write(commands)
        mail_reply, rcpt_reply, data_reply, *done = await replies.transaction(message)
        if done:  # accepted: the message went out when the 354 came
            if done[0].code != 250:
                await _reset(transport, replies)
                raise aiosmtplib.SMTPDataError(done[0].code, done[0].message)
            return done[0].message
        if data_reply.code == 354 and (mail_reply.code != 250 or rcpt_reply.code not in (250, 251)):
            # A server that took DATA after refusing the envelope: end the empty message.
            transport.write(b".\r\n")
            await replies.read(1)
        if mail_reply.code != 250:
            await _reset(transport, replies)
            raise aiosmtplib.SMTPSenderRefused(mail_reply.code, mail_reply.message, sender)
        if rcpt_reply.code not in (250, 251):
            await _reset(transport, replies)
            code, text = rcpt_reply
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(code, text, recipient)]
            )
        await _reset(transport, replies)
        raise aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
    finally:
        if not transport.is_closing():
            transport.set_protocol(inner)


async def _reset(transport: asyncio.WriteTransport, replies: _Replies) -> None:
    """RSET after a refusal, as ``sendmail`` does; a failure of it changes nothing."""
    try:
        transport.write(b"RSET\r\n")
        await replies.read(1)
    except aiosmtplib.SMTPServerDisconnected:
        pass
