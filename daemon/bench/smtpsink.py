"""A minimal SMTP sink for ``outboxd bench --provider smtp``: it costs almost nothing.

It answers every command of a mail transaction with a success reply, finds the end of
each message by its ``CRLF.CRLF`` alone, and throws the message away. It parses nothing
else: no addresses, no headers, no dot-unstuffing. Pipelined commands are answered in one
write. The aiosmtpd sink costs more CPU per message than outboxd's own SMTP path, so it
hid that path's limit; with this one (or Postfix's ``smtp-sink``) the sender is the limit.
Run: ``python -m daemon.bench.smtpsink PORT``.
"""

from __future__ import annotations

import asyncio
import sys

_GREETING = b"220 sink ESMTP\r\n"
# What a real relay advertises (Postfix's smtp-sink advertises these too).
_EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n"
_END_OF_DATA = b"\r\n.\r\n"
_REPLIES = {
    b"HELO": b"250 sink\r\n",
    b"MAIL": b"250 2.1.0 Ok\r\n",
    b"RCPT": b"250 2.1.5 Ok\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"RSET": b"250 2.0.0 Ok\r\n",
    b"NOOP": b"250 2.0.0 Ok\r\n",
    b"QUIT": b"221 2.0.0 Bye\r\n",
}


class SinkProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False
        #: Messages accepted on this connection.
        self.accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(_GREETING)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        replies = []
        closing = False
        start = 0
        while True:
            if self.in_data:
                found = buffer.find(_END_OF_DATA, start)
                if found < 0:
                    break
                end = found + len(_END_OF_DATA)
                self.in_data = False
                self.accepted += 1
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                start = end
                continue
            line_end = buffer.find(b"\n", start)
            if line_end < 0:
                break
            verb = buffer[start : start + 4].upper()
            start = line_end + 1
            if verb == b"EHLO":
                replies.append(_EHLO)
            else:
                replies.append(_REPLIES.get(verb, b"502 5.5.2 Error: command not recognized\r\n"))
            if verb == b"DATA":
                # The message starts with the CRLF ending this line, so that an empty
                # message (".") is found like any other terminator.
                self.in_data = True
                start = line_end - 1
            elif verb == b"QUIT":
                closing = True
                break
        # Keep what is not handled yet; inside a message only the last bytes can begin
        # a terminator, the rest is thrown away.
        rest = buffer[start:]
        self.buffer = rest[-4:] if self.in_data and len(rest) > 4 else rest
        assert self.transport is not None
        if replies:
            self.transport.write(b"".join(replies))
        if closing:
            self.transport.close()


async def serve(port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Start the sink on ``host:port`` (0: any free port)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(SinkProtocol, host, port)


async def _main(port: int) -> None:
    server = await serve(port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
