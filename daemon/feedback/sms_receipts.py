"""SMS delivery receipts: SNS delivery-status records read from CloudWatch Logs.

SNS (with delivery status logging on) writes one JSON record per SMS to
``sns/<region>/<account>/DirectPublishToPhoneNumber`` (delivered) or to the same name plus
``/Failure``. Every OUTBOXD_SMS__RECEIPT_INTERVAL the loop reads both groups from where
it got to (``outbox.sms_receipt_cursor``) and records each receipt once: delivered, or
failed with the carrier's reason, and the price in USD on the message. Then it reads the
month's spend for the cap and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from daemon.feedback.sms_spend import CappedSms, SpendGate
from daemon.metrics import REGISTRY
from daemon.providers import aws
from daemon.settings import Settings
from outbox import errors, sql
from outbox.store import _translated

logger = logging.getLogger(__name__)

QUERY_NAMES = ("sms_receipt_cursors", "sms_receipts_apply")

RECEIPTS = Counter(
    "outboxd_sms_receipts_total",
    "SNS SMS delivery-status records read, by outcome (delivered, failed).",
    ["status"],
    registry=REGISTRY,
)
SPEND = Gauge(
    "outboxd_sms_spend_usd",
    "SMS spend of the current month (UTC) in USD, from the delivery receipts' prices.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
#: Records of an SMS are written within minutes; a first read looks back this far.
FIRST_LOOK_BACK_MS = 24 * 3600 * 1000
MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SmsReceipt:
    event_id: str
    provider_message_id: str
    delivered: bool
    price_usd: float | None
    response: str | None
    occurred: datetime


def parse(event: dict[str, Any]) -> SmsReceipt | None:
    """One CloudWatch Logs event as a receipt; None for anything else (logged)."""
    text = event.get("message")
    if not isinstance(text, str) or len(text) > MAX_RECORD_BYTES:
        return None
    try:
        record = json.loads(text)
        notification, delivery = record["notification"], record.get("delivery") or {}
        message_id = notification["messageId"]
        status = record["status"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(message_id, str) or status not in ("SUCCESS", "FAILURE"):
        return None
    price = delivery.get("priceInUSD")
    response = delivery.get("providerResponse")
    return SmsReceipt(
        event_id=str(event.get("eventId") or f"{message_id}:{status}"),
        provider_message_id=message_id,
        delivered=status == "SUCCESS",
        price_usd=float(price) if isinstance(price, int | float) else None,
        response=str(response)[:500] if response is not None else None,
        occurred=datetime.fromtimestamp(int(event.get("timestamp", 0)) / 1000, UTC),
    )


class ReceiptReader:
    """Reads the delivery-status log groups into the database, and refreshes the spend."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, gate: SpendGate) -> None:
        self.pool = pool
        self.settings = settings
        self.gate = gate
        self.groups: tuple[str, ...] = ()
        #: Test signal: set after every pass.
        self.passed = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        async with aws.client("logs", self.settings.aws) as logs:
            while not stopping.is_set():
                try:
                    await self.run_once(logs)
                except errors.DatabaseError as exc:
                    logger.warning("SMS receipts: %s", exc, extra={"action": "sms_receipts"})
                except Exception as exc:  # AWS refusals: logged, tried again next pass
                    logger.warning(
                        "SMS receipts: %s", aws.classify(exc, "CloudWatch Logs"),
                        extra={"action": "sms_receipts"},
                    )  # fmt: skip
                self.passed.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.sms.receipt_interval):
                        await stopping.wait()

    async def run_once(self, logs: Any) -> int:
        """One pass over both groups; returns the receipts that changed a message."""
        if not self.groups:
            self.groups = await self._groups()
        async with _translated("read SMS receipt cursors"):
            cursors = {r["log_group"]: r["last_ms"] for r in
                       await self.pool.fetch(sql.get("sms_receipt_cursors"))}  # fmt: skip
        changed = 0
        for group in self.groups:
            changed += await self._read_group(logs, group, cursors.get(group))
        await self.gate.refresh(self.pool)
        SPEND.set(self.gate.spent_usd)
        return changed

    async def _groups(self) -> tuple[str, ...]:
        success = self.settings.sms.receipt_log_group
        if success is None:
            async with aws.client("sts", self.settings.aws) as sts:
                account = (await sts.get_caller_identity())["Account"]
            success = f"sns/{self.settings.aws.region}/{account}/DirectPublishToPhoneNumber"
        return (success, f"{success}/Failure")

    async def _read_group(self, logs: Any, group: str, last_ms: int | None) -> int:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        start = last_ms if last_ms is not None else now_ms - FIRST_LOOK_BACK_MS
        arguments: dict[str, Any] = {"logGroupName": group, "startTime": start, "limit": 1000}
        changed = 0
        while True:
            try:
                page = await logs.filter_log_events(**arguments)
            except Exception as exc:
                if "ResourceNotFound" in type(exc).__name__ or "ResourceNotFound" in str(exc):
                    return changed  # SNS creates the group with its first record
                raise
            events = page.get("events", [])
            if events:
                changed += await self._apply(group, events)
            token = page.get("nextToken")
            if not token or not events:
                return changed
            arguments["nextToken"] = token

    async def _apply(self, group: str, events: Sequence[dict[str, Any]]) -> int:
        receipts = [r for r in map(parse, events) if r is not None]
        if len(receipts) < len(events):
            logger.warning(
                "SMS receipts: %d records of %s are not delivery-status records",
                len(events) - len(receipts), group, extra={"action": "sms_receipts"},
            )  # fmt: skip
        last_ms = max(int(e.get("timestamp", 0)) for e in events)
        async with _translated("record SMS receipts"):
            rows = await self.pool.fetch(
                sql.get("sms_receipts_apply"),
                [r.event_id for r in receipts],
                [r.provider_message_id for r in receipts],
                [r.delivered for r in receipts],
                [r.price_usd for r in receipts],
                [r.response for r in receipts],
                [r.occurred for r in receipts],
                group,
                last_ms,
            )
        for receipt in receipts:
            RECEIPTS.labels("delivered" if receipt.delivered else "failed").inc()
        return len(rows)


def build(
    pool: asyncpg.Pool, settings: Settings, providers: dict[str, Any]
) -> dict[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """Wraps the SMS provider in the spend cap (when one is set) and returns the receipt
    loop (when receipts are on), by task name. Call before the providers are opened."""
    sms = settings.sms
    gate = SpendGate(sms.monthly_cap_usd, sms.price_estimate_usd)
    if sms.monthly_cap_usd is not None:
        providers["sms"] = CappedSms(providers["sms"], gate, pool)
    if sms.receipts:
        return {"sms-receipts": ReceiptReader(pool, settings, gate).run}
    if sms.monthly_cap_usd is not None:
        return {"sms-spend": _spend_loop(pool, gate, sms.receipt_interval)}
    return {}


def _spend_loop(
    pool: asyncpg.Pool, gate: SpendGate, interval: float
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """Without receipts, the cap still needs the month's count (and a new month)."""

    async def run(stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stopping.wait()
            with contextlib.suppress(errors.DatabaseError):
                await gate.refresh(pool)
                SPEND.set(gate.spent_usd)

    return run
