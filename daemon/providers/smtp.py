"""SMTP through persistent aiosmtplib connections, pooled per destination.

A destination is the recipient's domain: a relay answers each domain at its own pace
(callouts, per-domain queues), so one slow domain must not take the connections of the
others. Each destination has up to ``pool_size`` connections, opened lazily, reused
across sends (a TLS handshake and AUTH per message would dominate the cost), and
discarded after any error; the lane sends to at most ``per_destination`` of them at once
and takes destinations in turn, so a send never waits here for a connection, and the send
timeout measures the send alone. A connection the server closed while idle is reopened
once, before anything was accepted.

The timeout is a hard deadline around the whole session: when it passes, the connection
is closed, which fails whatever read or write is pending at once (a deadline that only
cancels can be lost inside aiosmtplib's own per-command waits).
Replies decide the outcome: 4xx transient, 5xx permanent; connection trouble transient.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging

import aiosmtplib

from daemon.addresses import mask
from daemon.providers import mime, smtp_pipeline
from daemon.providers.base import ProviderBase
from daemon.settings import SmtpSettings, SmtpTls
from outbox import errors
from outbox.models import Message, Receipt, Rendered

logger = logging.getLogger(__name__)

#: How many destinations may use their whole pool at once (the lane's concurrency).
_FULL_POOLS_AT_ONCE = 4


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


def destination(message: Message) -> str:
    """The pool a message is sent through: its recipient's domain."""
    return message.recipient.rpartition("@")[2].lower()


class _Deadline:
    """Closes the session's connection when the send timeout passes."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self.client: aiosmtplib.SMTP | None = None
        self._handle = asyncio.get_running_loop().call_later(seconds, self._fire)

    def _fire(self) -> None:
        self.expired = True
        if self.client is not None:
            _discard(self.client)

    def cancel(self) -> None:
        self._handle.cancel()


class _Destination:
    """The connections of one destination: idle ones, and a slot per pooled connection."""

    __slots__ = ("idle", "slots", "users")

    def __init__(self, size: int) -> None:
        self.idle: list[aiosmtplib.SMTP] = []
        self.slots = asyncio.Semaphore(size)
        self.users = 0


class SmtpProvider(ProviderBase):
    name = "smtp"
    channel = "email"

    def __init__(self, settings: SmtpSettings, *, sender: str, reply_to: str | None = None) -> None:
        self.settings = settings
        self.sender = sender
        self.reply_to = reply_to
        self.envelope_from = email.utils.parseaddr(sender)[1]
        self.domain = mime.sender_domain(sender)
        #: Per destination: idle connections and slots (only while in use or idle).
        self._destinations: dict[str, _Destination] = {}
        self._idle_count = 0
        #: Sends in flight to one destination: one per pooled connection.
        self.per_destination = settings.pool_size
        #: Sends in flight in all: a few destinations with their whole pool busy.
        self.max_in_flight = settings.pool_size * _FULL_POOLS_AT_ONCE
        #: Connections opened so far (tests and metrics read it).
        self.connections_opened = 0

    destination = staticmethod(destination)

    async def close(self) -> None:
        destinations, self._destinations = self._destinations, {}
        self._idle_count = 0
        for client in (c for d in destinations.values() for c in d.idle):
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

    async def _connect(self, deadline: _Deadline) -> aiosmtplib.SMTP:
        """A new connection; a server that cannot be reached or logged in to pauses the
        channel.

        With one relay, a failure to connect, to start TLS or to log in fails every send
        alike, whatever the message: pausing (no attempt used, one probe per cool-down)
        rides out an outage of any length, and a wrong password fails no message for good
        while the operator fixes it.
        """
        client = deadline.client = self._new_client()
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
        key = destination(message)
        recipient = mime.ascii_recipient(message.recipient)
        utf8 = recipient is None
        data = b"" if utf8 else self._mime(message, rendered, utf8=False)
        place = self._destinations.get(key)
        if place is None:
            place = self._destinations[key] = _Destination(self.settings.pool_size)
        place.users += 1
        try:
            # The lane sends no more than a pool's worth to one destination: this waits
            # only for callers that do not go through it, and before the deadline starts.
            async with place.slots:
                return await self._send(place, message, rendered, data)
        finally:
            place.users -= 1
            if not place.users and not place.idle:
                del self._destinations[key]

    async def _send(
        self, place: _Destination, message: Message, rendered: Rendered, data: bytes
    ) -> Receipt:
        client = place.idle.pop() if place.idle else None
        if client is not None:
            self._idle_count -= 1
        deadline = _Deadline(self.settings.timeout)
        deadline.client = client
        try:
            client = await self._session(place, deadline, client, message, rendered, data)
        except errors.ChannelPaused:
            if deadline.expired:
                raise self._timed_out(message) from None
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
            if deadline.client is not None:
                _discard(deadline.client)
            if deadline.expired:
                raise self._timed_out(message) from exc
            decision = classify(exc) if not isinstance(exc, ValueError) else (
                errors.PermanentError(f"SMTP: {exc}")
            )  # fmt: skip
            logger.debug(
                "SMTP send failed: %s", decision.reason,
                extra={"message_id": message.id, "recipient": mask(message.recipient)},
            )  # fmt: skip
            raise decision from exc
        except BaseException:
            if deadline.client is not None:
                _discard(deadline.client)
            raise
        finally:
            deadline.cancel()
        self._keep(place, client)
        return Receipt(self.name, mime.message_id(message, self.domain))

    def _mime(self, message: Message, rendered: Rendered, *, utf8: bool) -> bytes:
        return mime.build_email(
            message, rendered, sender=self.sender, reply_to=self.reply_to, utf8=utf8
        )

    async def _session(
        self,
        place: _Destination,
        deadline: _Deadline,
        client: aiosmtplib.SMTP | None,
        message: Message,
        rendered: Rendered,
        data: bytes,
    ) -> aiosmtplib.SMTP:
        """Send on ``client`` (or a new connection); the connection used."""
        reused = client is not None and client.is_connected
        if client is None or not reused:
            client = await self._connect(deadline)
        options: list[str] = []
        if not data:  # the local part needs SMTPUTF8
            if client.is_ehlo_or_helo_needed:  # what the server offers comes with EHLO
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
            if not client.supports_extension("smtputf8"):
                self._keep(place, client)
                deadline.client = None
                raise errors.PermanentError(
                    "the recipient's local part is not ASCII and the SMTP server does not "
                    "offer SMTPUTF8 (RFC 6531)"
                )
            data = self._mime(message, rendered, utf8=True)
            options.append("SMTPUTF8")
        recipient = mime.ascii_recipient(message.recipient) or message.recipient
        try:
            await self._transaction(client, recipient, data, options)
        except aiosmtplib.SMTPServerDisconnected:
            if not reused or deadline.expired:
                raise
            # The server dropped the idle connection before MAIL FROM: reopen once.
            _discard(client)
            client = await self._connect(deadline)
            await self._transaction(client, recipient, data, options)
        return client

    async def _transaction(
        self, client: aiosmtplib.SMTP, recipient: str, data: bytes, options: list[str]
    ) -> None:
        # Pipelined where the server allows it: a third of the CPU of sendmail.
        if not options and smtp_pipeline.can_pipeline(client, self.envelope_from, recipient):
            await smtp_pipeline.send(client, self.envelope_from, recipient, data)
        else:
            await client.sendmail(self.envelope_from, [recipient], data, mail_options=options)

    def _keep(self, place: _Destination, client: aiosmtplib.SMTP) -> None:
        """Back to the destination's idle connections, unless enough are idle already."""
        if self._idle_count >= self.max_in_flight or not client.is_connected:
            _discard(client)
            return
        place.idle.append(client)
        self._idle_count += 1

    def _timed_out(self, message: Message) -> errors.TransientError:
        reason = f"SMTP: no answer within {self.settings.timeout:g}s (connection closed)"
        logger.info("SMTP send timed out", extra={"message_id": message.id, "provider": self.name})
        return errors.TransientError(reason)


def _discard(client: aiosmtplib.SMTP) -> None:
    """Close a connection we give up on at once.

    A plain close of a TLS connection waits for the server's close_notify (up to 30 s)
    before the socket is closed; a connection given up after an error owes the server
    nothing, and a socket left closing would outlive a stopping daemon's event loop.
    """
    if isinstance(client.transport, asyncio.Transport):
        client.transport.abort()
    client.close()
