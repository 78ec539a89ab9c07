"""Tokens in the links of lists and campaigns: ``/confirm`` (double opt-in) and the tracking
routes ``/t/o`` (open pixel) and ``/t/c`` (click redirect).

A token is a Fernet token (AES-128-CBC and HMAC-SHA256, from ``cryptography``) of a JSON
array, without its base64 padding: authenticated, so any change is detected, and opaque,
so no recipient key or address can be read from a URL. Its key is derived (HKDF-SHA256)
from OUTBOXD_SECRET_KEY and the token's purpose ("confirm", "open", "click"): a click
token is no confirmation token, and none of them is an unsubscribe token. The first key
makes tokens and every configured key reads them, so keys rotate as for unsubscribe links.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken as FernetInvalid
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from outbox import signing

#: Longer tokens are refused before any work (a click token carries its URL).
MAX_TOKEN_CHARS = 4096


class InvalidLink(ValueError):
    """The token is malformed, tampered with, or made with an unknown key."""


class ExpiredLink(InvalidLink):
    """The token is genuine but no longer valid."""


@functools.lru_cache(maxsize=64)
def _fernet(key: bytes, purpose: str) -> Fernet:
    info = f"outboxd {purpose} link v1".encode()
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)
    return Fernet(base64.urlsafe_b64encode(derived))


def sign(keys: Sequence[bytes], purpose: str, payload: Sequence[Any]) -> str:
    """An opaque token carrying ``payload`` (JSON) for ``purpose``, made with the first key."""
    if not keys:
        raise InvalidLink("no signing key configured")
    data = json.dumps(list(payload), separators=(",", ":"), ensure_ascii=False).encode()
    return _fernet(keys[0], purpose).encrypt(data).decode("ascii").rstrip("=")


def verify(keys: Sequence[bytes], purpose: str, token: str) -> list[Any]:
    """The payload of a genuine ``purpose`` token; raises :class:`InvalidLink` otherwise."""
    if not keys:
        raise InvalidLink("no verification key configured")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidLink("malformed token")
    try:
        padded = base64.urlsafe_b64encode(signing.unb64url(token))
    except ValueError as exc:
        raise InvalidLink("malformed token") from exc
    for key in keys:
        try:
            data = _fernet(key, purpose).decrypt(padded)
        except FernetInvalid:
            continue
        try:
            payload = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidLink("malformed payload") from exc
        if not isinstance(payload, list):
            raise InvalidLink("malformed payload")
        return payload
    raise InvalidLink("bad token")


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
    """An absolute http(s) URL with a host, in ASCII (a Location header as it is), and
    nothing that could split a header."""
    if not url.isascii() or any(c in url for c in "\r\n\t\0 ") or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
