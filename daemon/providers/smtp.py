"""SMTP through a pool of persistent aiosmtplib connections.

Connections are opened lazily up to ``pool_size``, reused across sends (a TLS handshake
and AUTH per message would dominate the cost), and discarded after any error. A
connection the server closed while idle is reopened once, before anything was accepted.
Replies decide the outcome: 4xx transient, 5xx permanent; connection trouble transient.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging

import aiosmtplib

from daemon.addresses import mask
from daemon.providers import mime
from daemon.providers.base import ProviderBase
from daemon.settings import SmtpSettings, SmtpTls
from outbox import errors
from outbox.models import Message, Receipt, Rendered

logger = logging.getLogger(__name__)

_QUEUED_PER_CONNECTION = 4


def classify(exc: Exception) -> errors.OutboxError:
    """The decision for an aiosmtplib error."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return _by_code(first.code, f"recipient refused: {first.code} {first.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and not isinstance(
        exc, aiosmtplib.SMTPServerDisconnected
    ):
        return _by_code(exc.code, f"{exc.code} {exc.message}")
    return errors.TransientError(f"SMTP {type(exc).__name__}: {exc}")


def _by_code(code: int, text: str) -> errors.OutboxError:
    if 500 <= code < 600:
        return errors.PermanentError(f"SMTP {text}")
    return errors.TransientError(f"SMTP {text}")


class SmtpProvider(ProviderBase):
    name = "smtp"
    channel = "email"

    def __init__(self, settings: SmtpSettings, *, sender: str, reply_to: str | None = None) -> None:
        self.settings = settings
        self.sender = sender
        self.reply_to = reply_to
        self.envelope_from = email.utils.parseaddr(sender)[1]
        self.domain = mime.sender_domain(sender)
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.pool_size)
        #: Sends worth having in flight: a few per connection keep the connections busy;
        #: more would only wait for one, inside their send timeout.
        self.max_in_flight = settings.pool_size * _QUEUED_PER_CONNECTION
        #: Connections opened so far (tests and metrics read it).
        self.connections_opened = 0

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await asyncio.wait_for(client.quit(), 2)
            except Exception:  # closing politely is best effort
                _discard(client)

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.tls == SmtpTls.TLS,
            start_tls=s.tls == SmtpTls.STARTTLS,
            validate_certs=s.validate_certs,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        """A new connection; a server that cannot be reached or logged in to pauses the
        channel.

        With one relay, a failure to connect, to start TLS or to log in fails every send
        alike, whatever the message: pausing (no attempt used, one probe per cool-down)
        rides out an outage of any length, and a wrong password fails no message for good
        while the operator fixes it.
        """
        client = self._new_client()
        s = self.settings
        try:
            await client.connect()
            # Logging in here rather than inside connect() leaves the connection to us
            # when the login is refused: _discard closes it at once.
            if s.username:
                await client.login(s.username, s.password.get_secret_value() if s.password else "")
        except (aiosmtplib.SMTPException, OSError) as exc:
            _discard(client)
            raise errors.ChannelPaused(self._connect_failure(exc)) from exc
        self.connections_opened += 1
        return client

    def _connect_failure(self, exc: BaseException) -> str:
        server = f"SMTP server {self.settings.host}:{self.settings.port}"
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return (
                f"{server} refused the login of {self.settings.username!r}: "
                f"{exc.code} {exc.message} (check OUTBOXD_SMTP__USERNAME and __PASSWORD)"
            )
        if isinstance(exc, (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError)):
            return f"{server} unreachable: {exc}"
        if isinstance(exc, aiosmtplib.SMTPException):
            return f"{server} refused the session: {exc}"  # EHLO, STARTTLS, AUTH offered
        return f"{server} unreachable: {exc}"  # refused, reset, TLS handshake, ...

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        data = mime.build_email(message, rendered, sender=self.sender, reply_to=self.reply_to)
        async with self._slots:
            reused = bool(self._idle)
            client = self._idle.pop() if reused else None
            try:
                if client is None or not client.is_connected:
                    client = await self._connect()
                    reused = False
                try:
                    await client.sendmail(self.envelope_from, [message.recipient], data)
                except aiosmtplib.SMTPServerDisconnected:
                    if not reused:
                        raise
                    # The server dropped the idle connection before MAIL FROM: reopen once.
                    _discard(client)
                    client = await self._connect()
                    await client.sendmail(self.envelope_from, [message.recipient], data)
            except errors.ChannelPaused:
                raise
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                if client is not None:
                    _discard(client)
                decision = classify(exc) if isinstance(exc, Exception) else errors.TransientError()
                logger.debug(
                    "SMTP send failed: %s", decision.reason,
                    extra={"message_id": message.id, "recipient": mask(message.recipient)},
                )  # fmt: skip
                raise decision from exc
            except BaseException:
                if client is not None:
                    _discard(client)
                raise
            self._idle.append(client)
        return Receipt(self.name, mime.message_id(message, self.domain))


def _discard(client: aiosmtplib.SMTP) -> None:
    """Close a connection we give up on at once.

    A plain close of a TLS connection waits for the server's close_notify (up to 30 s)
    before the socket is closed; a connection given up after an error owes the server
    nothing, and a socket left closing would outlive a stopping daemon's event loop.
    """
    if isinstance(client.transport, asyncio.Transport):
        client.transport.abort()
    client.close()
