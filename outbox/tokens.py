"""Unsubscribe tokens: HMAC-SHA256 over (channel, recipient, category, issued_at).

Signed with the first key; any configured key verifies, so keys can be rotated by
putting the new key first and dropping the old one once its links have aged out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

_SIG_BYTES = 16  # 128 bits of HMAC-SHA256: ample against forgery, short in a URL


class InvalidToken(ValueError):
    """The token is malformed, tampered with, signed by an unknown key, or expired."""


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    channel: str
    recipient: str
    category: str
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Only the canonical spelling is accepted: otherwise the unused bits of the last
    # character give every token several valid spellings.
    if _b64(data) != text:
        raise ValueError("non-canonical base64")
    return data


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_SIG_BYTES]


def make_token(
    keys: Sequence[bytes],
    *,
    channel: str,
    recipient: str,
    category: str,
    issued_at: int | None = None,
) -> str:
    """A URL-safe token naming who unsubscribes from what."""
    if not keys:
        raise InvalidToken("no signing key configured")
    issued = int(time.time()) if issued_at is None else issued_at
    payload = json.dumps(
        [channel, recipient, category, issued], separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_sign(keys[0], payload))}"


def read_token(
    keys: Sequence[bytes], token: str, *, max_age_seconds: int | None = None
) -> UnsubscribeClaim:
    """Verify ``token``; raises :class:`InvalidToken` for anything but a genuine one."""
    if not keys:
        raise InvalidToken("no verification key configured")
    try:
        encoded_payload, encoded_sig = token.split(".")
        payload = _unb64(encoded_payload)
        signature = _unb64(encoded_sig)
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not any(hmac.compare_digest(_sign(key, payload), signature) for key in keys):
        raise InvalidToken("bad signature")
    try:
        channel, recipient, category, issued_at = json.loads(payload.decode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed payload") from exc
    if not all(isinstance(v, str) for v in (channel, recipient, category)) or not isinstance(
        issued_at, int
    ):
        raise InvalidToken("malformed payload")
    if max_age_seconds is not None and time.time() - issued_at > max_age_seconds:
        raise InvalidToken("expired token")
    return UnsubscribeClaim(channel, recipient, category, issued_at)
