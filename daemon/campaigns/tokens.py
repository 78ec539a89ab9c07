"""Signed tokens in the links of lists and campaigns: ``/confirm`` (double opt-in) and the
tracking routes ``/t/o`` (open pixel) and ``/t/c`` (click redirect).

A token is ``<b64url(JSON payload)>.<b64url(signature)>``, the signature being the first
16 bytes of HMAC-SHA256 over ``outboxd:<purpose>\\n<payload>`` with the first key of
OUTBOXD_SECRET_KEY (every configured key verifies, as for unsubscribe links). The purpose
is signed, not carried: a click token is no confirmation token, and neither reads as an
unsubscribe token. b64url has no padding and only its canonical spelling is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_SIG_BYTES = 16
#: Longer tokens are refused before any work (a click token carries its URL).
MAX_TOKEN_CHARS = 4096


class InvalidLink(ValueError):
    """The token is malformed, tampered with, or signed by an unknown key."""


class ExpiredLink(InvalidLink):
    """The token is genuine but no longer valid."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("non-canonical base64")
    return data


def _signature(key: bytes, purpose: str, payload: bytes) -> bytes:
    message = f"outboxd:{purpose}\n".encode() + payload
    return hmac.new(key, message, hashlib.sha256).digest()[:_SIG_BYTES]


def sign(keys: Sequence[bytes], purpose: str, payload: Sequence[Any]) -> str:
    """A token carrying ``payload`` (JSON) for ``purpose``, signed with the first key."""
    if not keys:
        raise InvalidLink("no signing key configured")
    data = json.dumps(list(payload), separators=(",", ":"), ensure_ascii=False).encode()
    return f"{_b64(data)}.{_b64(_signature(keys[0], purpose, data))}"


def verify(keys: Sequence[bytes], purpose: str, token: str) -> list[Any]:
    """The payload of a genuine ``purpose`` token; raises :class:`InvalidLink` otherwise."""
    if not keys:
        raise InvalidLink("no verification key configured")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidLink("malformed token")
    try:
        encoded_payload, encoded_sig = token.split(".")
        data, signature = _unb64(encoded_payload), _unb64(encoded_sig)
    except (ValueError, binascii.Error) as exc:
        raise InvalidLink("malformed token") from exc
    if not any(hmac.compare_digest(_signature(k, purpose, data), signature) for k in keys):
        raise InvalidLink("bad signature")
    try:
        payload = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidLink("malformed payload") from exc
    if not isinstance(payload, list):
        raise InvalidLink("malformed payload")
    return payload


@dataclass(frozen=True, slots=True)
class ConfirmClaim:
    """Who confirms which list, and until when the link is valid (unix seconds)."""

    list_id: int
    recipient_key: str
    expires_at: int


def make_confirm_token(
    keys: Sequence[bytes],
    list_id: int,
    recipient_key: str,
    *,
    ttl_seconds: float,
    now: float | None = None,
) -> str:
    expires = int((time.time() if now is None else now) + ttl_seconds)
    return sign(keys, "confirm", [list_id, recipient_key, expires])


def read_confirm_token(
    keys: Sequence[bytes], token: str, *, now: float | None = None
) -> ConfirmClaim:
    """The claim of a genuine, unexpired confirmation token; :class:`ExpiredLink` when it
    has expired, :class:`InvalidLink` for anything else."""
    payload = verify(keys, "confirm", token)
    match payload:
        case [int(list_id), str(key), int(expires)] if not isinstance(list_id, bool) and key:
            claim = ConfirmClaim(list_id, key, expires)
        case _:
            raise InvalidLink("malformed payload")
    if (time.time() if now is None else now) >= claim.expires_at:
        raise ExpiredLink("expired confirmation link")
    return claim


def make_open_token(keys: Sequence[bytes], message_id: int) -> str:
    return sign(keys, "open", [message_id])


def read_open_token(keys: Sequence[bytes], token: str) -> int:
    """The message a genuine open-pixel token names."""
    match verify(keys, "open", token):
        case [int(message_id)] if not isinstance(message_id, bool):
            return message_id
        case _:
            raise InvalidLink("malformed payload")


def make_click_token(keys: Sequence[bytes], message_id: int, url: str) -> str:
    return sign(keys, "click", [message_id, url])


def read_click_token(keys: Sequence[bytes], token: str) -> tuple[int, str]:
    """The message and the (http or https) URL a genuine click token names."""
    match verify(keys, "click", token):
        case [int(message_id), str(url)] if not isinstance(message_id, bool) and is_web_url(url):
            return message_id, url
        case _:
            raise InvalidLink("malformed payload")


def is_web_url(url: str) -> bool:
    """An absolute http(s) URL with a host and nothing that could split a header."""
    if any(c in url for c in "\r\n\t\0 ") or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
