"""The ``Outboxd-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

The timestamp is signed with the body so that a captured request cannot be replayed later
than the receiver's tolerance; a new timestamp is signed at every attempt, while the body
(and the event id in it) stays the same.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime
from typing import Any

HEADER = "Outboxd-Signature"
#: How old a signature :func:`verify` accepts by default.
TOLERANCE_SECONDS = 300


def body(event_id: str, type_: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """The JSON body of one event: the same bytes at every attempt."""
    document = {"id": event_id, "type": type_, "created_at": created_at.isoformat(), "data": data}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, payload: bytes, timestamp: int) -> str:
    """The header value for ``payload`` signed at ``timestamp`` (Unix seconds)."""
    message = str(timestamp).encode("ascii") + b"." + payload
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str,
    payload: bytes,
    header: str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``payload`` with ``secret`` within ``tolerance`` seconds
    (any of several ``v1=`` values may match, as while a secret is rotated)."""
    fields = [part.partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key.strip() == "t"]
    signatures = [value.strip() for key, _, value in fields if key.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not signatures:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, payload, timestamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
