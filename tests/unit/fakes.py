"""In-memory stand-ins for the database and a provider: the unit layer of the delivery loops.

:class:`MemoryStore` implements the :class:`~outbox.store.Store` methods that the lane, the
completer and the rate limiter call, with the semantics of their SQL (SKIP LOCKED claims in
priority order, lease- and attempt-guarded completion, the token bucket), on the running
event loop's clock: under ``@pytest.mark.virtual_time`` a retry due in an hour is due after
an hour of virtual time. Every call is recorded, and tests wait for what they expect with
:meth:`MemoryStore.wait_for` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon.delivery.render import Renderer
from daemon.providers.base import ProviderBase
from outbox import errors
from outbox.models import Message, Receipt, Rendered, Status
from outbox.store import ClaimPosition, Completion

#: Where a row's place in claim order (``not_before``) counts from: loop time 0.
_EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


def now() -> float:
    """The running loop's clock: the one the delivery loops sleep and time out on."""
    return asyncio.get_running_loop().time()


@dataclasses.dataclass
class Row:
    """One ``outbox.message`` row, as far as the delivery loops see it."""

    id: int
    channel: str
    recipient: str
    template: str = "note"
    context: dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "Ann"})
    priority: int = 1
    status: Status = Status.PENDING
    attempts: int = 0
    #: When it becomes due, on the loop's clock.
    due: float = 0.0
    locked_by: str | None = None
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    expires_at: datetime | None = None
    suppressed_reason: str | None = None
    context_bytes: int = 0

    @property
    def not_before(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.due)

    def message(self) -> Message:
        return Message(
            id=self.id, channel=self.channel, recipient=self.recipient,
            template=self.template, context=dict(self.context), category="transactional",
            priority=self.priority, locale=None, tags={}, attempts=self.attempts,
            expires_at=self.expires_at, created_at=_EPOCH,
            suppressed_reason=self.suppressed_reason, context_bytes=self.context_bytes,
            not_before=self.not_before,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Claim:
    """One call of :meth:`MemoryStore.claim`."""

    at: float
    channel: str
    limit: int
    ids: tuple[int, ...]


@dataclasses.dataclass
class _Bucket:
    tokens: float
    updated: float
    factor: float = 1.0
    factor_at: float = -86400.0


class MemoryStore:
    """The Store methods of the delivery loops, in memory (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.claims: list[Claim] = []
        #: Batches :meth:`complete_many` wrote (failed writes are not in it).
        self.writes: list[list[Completion]] = []
        #: How many of the next complete_many / claim calls fail with a DatabaseError.
        self.failing_writes = 0
        self.failing_claims = 0
        self.failing_takes = 0
        #: complete_many waits for this event, when set to one (a slow database).
        self.write_gate: asyncio.Event | None = None
        self.buckets: dict[str, _Bucket] = {}
        self._changed = asyncio.Event()

    # -- setting up ---------------------------------------------------------------------
    def add(self, count: int = 1, *, channel: str = "email", **fields: Any) -> list[int]:
        """Insert ``count`` pending rows, due now (loop time 0 unless ``due`` says)."""
        ids = []
        for _ in range(count):
            row_id = len(self.rows) + 1
            recipient = f"user{row_id}@example.com" if channel == "email" else "+14155550100"
            self.rows[row_id] = Row(row_id, channel, recipient, **fields)
            ids.append(row_id)
        return ids

    def with_status(self, status: Status) -> list[int]:
        return [row.id for row in self.rows.values() if row.status is status]

    async def wait_for(self, condition: Callable[[], bool], within: float = 3600.0) -> None:
        """Wait until ``condition()`` holds after some store call (a claim, a write)."""
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    # -- the Store methods --------------------------------------------------------------
    async def claim(
        self,
        channel: str,
        limit: int,
        worker: str,
        lease_seconds: float,
        after: Mapping[int, ClaimPosition] | None = None,
    ) -> list[Message]:
        self._changed.set()
        if self.failing_claims:
            self.failing_claims -= 1
            raise errors.DatabaseError("claim: ConnectionResetError: connection lost")
        after = after or {}
        t = now()
        due = sorted(
            (
                row
                for row in self.rows.values()
                if row.channel == channel and row.status is Status.PENDING and row.due <= t
                and (row.priority not in after or (row.not_before, row.id) > after[row.priority])
            ),
            key=lambda row: (-row.priority, row.due, row.id),
        )[:limit]  # fmt: skip
        for row in due:
            row.status, row.locked_by, row.attempts = Status.SENDING, worker, row.attempts + 1
        self.claims.append(Claim(t, channel, limit, tuple(row.id for row in due)))
        return [row.message() for row in due]

    async def next_due(self, channel: str) -> datetime | None:
        dues = [
            row.due
            for row in self.rows.values()
            if row.channel == channel and row.status is Status.PENDING
        ]
        if not dues:
            return None
        # The lane compares with the wall clock: say "in so many seconds" in its terms.
        return datetime.now(UTC) + timedelta(seconds=max(min(dues) - now(), 0.0))

    async def complete_many(self, completions: Sequence[Completion], worker: str) -> int:
        if self.write_gate is not None:
            await self.write_gate.wait()
        self._changed.set()
        if self.failing_writes:
            self.failing_writes -= 1
            raise errors.DatabaseError("complete: ConnectionResetError: connection lost")
        written = 0
        for c in completions:
            row = self.rows[c.message_id]
            if row.status is not Status.SENDING or row.locked_by != worker:
                continue  # the lease guard: another worker has the row now
            if row.attempts != c.attempts:
                continue
            written += 1
            row.status, row.locked_by, row.error = c.status, None, c.error
            row.provider, row.provider_message_id = c.provider, c.provider_message_id
            if c.status is Status.PENDING:
                row.due = now() + c.retry_delay
            row.attempts -= 1 if c.refund else 0
        self.writes.append(list(completions))
        return written

    # The token bucket of sql/queries.sql (rate_init, rate_take, rate_give_back,
    # rate_backoff), on the loop's clock.
    async def rate_init(self, channel: str, burst: float) -> None:
        self.buckets.setdefault(channel, _Bucket(tokens=burst, updated=now()))

    async def rate_take(
        self, channel: str, want: int, rate: float, burst: float, recovery: float
    ) -> tuple[int, float, float]:
        if self.failing_takes:
            self.failing_takes -= 1
            raise errors.DatabaseError("rate limit: ConnectionResetError: connection lost")
        bucket, t = self.buckets[channel], now()
        factor = min(1.0, bucket.factor + (t - bucket.factor_at) * recovery)
        available = min(burst, bucket.tokens + (t - bucket.updated) * rate * factor)
        granted = max(0, min(want, math.floor(available)))
        bucket.tokens, bucket.updated = available - granted, t
        self._changed.set()
        return granted, available - granted, rate * factor

    async def rate_give_back(self, channel: str, tokens: int, burst: float) -> None:
        bucket = self.buckets[channel]
        bucket.tokens = min(burst, bucket.tokens + tokens)

    async def rate_backoff(self, channel: str, recovery: float, floor: float) -> float | None:
        bucket, t = self.buckets[channel], now()
        if bucket.factor_at >= t - 1.0:
            return None
        recovered = min(1.0, bucket.factor + (t - bucket.factor_at) * recovery)
        bucket.factor, bucket.factor_at = max(floor, recovered * 0.5), t
        return bucket.factor


class ScriptedProvider(ProviderBase):
    """A provider that does what the test says: accept, raise, or hold sends at a gate."""

    def __init__(self, channel: str = "email", name: str = "scripted") -> None:
        self.channel = channel
        self.name = name
        #: Raised by every send while set.
        self.error: Exception | None = None
        #: Raised by the next sends, one each, before ``error`` applies.
        self.next_errors: collections.deque[Exception] = collections.deque()
        #: Sends wait here while it is set to an event that is not set.
        self.gate: asyncio.Event | None = None
        self.attempted: list[int] = []
        self.rendered: list[Rendered] = []
        self.accepted: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._changed = asyncio.Event()

    async def wait_for(self, condition: Callable[[], bool], within: float = 3600.0) -> None:
        """Wait until ``condition()`` holds after a send starts or ends."""
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        self.attempted.append(message.id)
        self.rendered.append(rendered)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self._changed.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.next_errors:
                raise self.next_errors.popleft()
            if self.error is not None:
                raise self.error
        finally:
            self.in_flight -= 1
            self._changed.set()
        self.accepted.append(message.id)
        return Receipt(self.name, f"<{message.id}@scripted>")


def renderer(directory: Path) -> Renderer:
    """A renderer with one template, ``note``, for email and SMS (needs ``name``)."""
    note = directory / "note"
    note.mkdir(parents=True, exist_ok=True)
    (note / "subject.j2").write_text("Hello {{ name }}")
    (note / "text.j2").write_text("Hi {{ name }}, this is message {{ message_id }}.")
    (note / "sms.j2").write_text("Hi {{ name }}")
    return Renderer(directory)
