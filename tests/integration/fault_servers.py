"""SMTP servers that misbehave in the ways real ones do, for the fault tests."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP as ServerSession


@dataclass
class StallingServer:
    """Takes the message, then stalls ``stall`` seconds before answering the first
    ``stalls`` DATA commands; answers at once after that. A message counts as delivered
    only when the client was still there to hear the 250 (as a real MTA would deliver)."""

    stall: float
    stalls: int
    delivered: Counter[str] = field(default_factory=Counter)
    #: For each stalled DATA, how long the client waited before it hung up.
    waited: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: ServerSession, session: Any, envelope: Any) -> str:
        await self._stall()
        if server.transport is None or server.transport.is_closing():
            return "451 client gone"
        self.delivered.update(envelope.rcpt_tos)
        return "250 OK"

    async def _stall(self) -> None:
        if self.stalls > 0:
            self.stalls -= 1
            started = time.monotonic()
            try:
                await asyncio.sleep(self.stall)
            except asyncio.CancelledError:  # aiosmtpd cancels us when the client hangs up
                self.waited.append(time.monotonic() - started)
                raise
            self.waited.append(time.monotonic() - started)


@dataclass
class DomainPacedServer:
    """A relay that answers DATA for recipients at ``slow_domain`` after ``delay`` seconds
    (callouts, a slow next hop) and at once for everyone else."""

    slow_domain: str
    delay: float
    delivered: list[tuple[str, float]] = field(default_factory=list)

    async def handle_DATA(self, server: ServerSession, session: Any, envelope: Any) -> str:
        if envelope.rcpt_tos[0].endswith("@" + self.slow_domain):
            await asyncio.sleep(self.delay)
        self.delivered.append((envelope.rcpt_tos[0], time.monotonic()))
        return "250 OK"
