"""Subscriber tokens for the in-app inbox: the application's backend mints one per person,
the browser sends it to outboxd (``Authorization: Bearer <token>``, or ``?token=`` for an
EventSource), and outboxd serves that person's inbox.

The format is public, so that any language can mint tokens::

    v1.<b64url(key)>.<expires>.<b64url(HMAC-SHA256(secret, "v1.<b64url(key)>.<expires>"))>

``key`` is the UTF-8 bytes of the person's key (``outbox.recipient.key``), ``expires`` the
expiry in Unix seconds (decimal digits), ``secret`` the UTF-8 bytes of the first key of
``OUTBOXD_SECRET_KEY`` (older keys still verify, so keys can be rotated), the signature the
full 32-byte digest, and b64url the URL-safe alphabet without padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

VERSION = "v1"
#: Longer tokens are refused before any work (an HTTP header line holds at most 8190 bytes).
MAX_TOKEN_LENGTH = 8192
_DIGITS = re.compile(r"[0-9]{1,12}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class InvalidInboxToken(ValueError):
    """The inbox token is malformed, signed by an unknown key, or expired."""


@dataclass(frozen=True, slots=True)
class InboxClaim:
    """What a genuine token says: whose inbox, and until when (Unix seconds)."""

    key: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Only the canonical spelling: otherwise the unused bits of the last character would
    # give one token several valid spellings.
    if _b64(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def _signature(secret: bytes, head: str) -> bytes:
    return hmac.new(secret, head.encode("ascii"), hashlib.sha256).digest()


def inbox_token(key: str, *, secret: str | bytes, ttl: int = 3600, now: float | None = None) -> str:
    """A token that lets the holder read and manage ``key``'s inbox for ``ttl`` seconds.

    ``secret`` is the first key of ``OUTBOXD_SECRET_KEY`` (a str is taken as UTF-8).
    """
    if not isinstance(key, str) or not key:
        raise ValueError("inbox_token: key must be a non-empty string")
    if "\x00" in key:
        raise ValueError("inbox_token: key contains NUL, which no outbox.recipient key can")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(f"inbox_token: ttl must be a positive number of seconds, got {ttl!r}")
    secret_bytes = _secret_bytes(secret)
    if not secret_bytes:
        raise ValueError("inbox_token: secret is empty")
    expires = int(time.time() if now is None else now) + ttl
    head = f"{VERSION}.{_b64(key.encode('utf-8'))}.{expires}"
    return f"{head}.{_b64(_signature(secret_bytes, head))}"


def read_inbox_token(
    token: str, secrets: Iterable[str | bytes], *, now: float | None = None
) -> InboxClaim:
    """Verify ``token`` against any of ``secrets``; raises :class:`InvalidInboxToken` for
    anything but a genuine, unexpired token."""
    keys = [_secret_bytes(s) for s in secrets if s]
    if not keys:
        raise InvalidInboxToken("no verification key configured")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidInboxToken("malformed token")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not _DIGITS.fullmatch(parts[2]):
        raise InvalidInboxToken("malformed token")
    try:
        key = _unb64(parts[1]).decode("utf-8")
        signature = _unb64(parts[3])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInboxToken("malformed token") from exc
    head = token.rsplit(".", 1)[0]
    # Every key is tried, so the time taken does not tell which one matched.
    matched = False
    for secret in keys:
        matched |= hmac.compare_digest(_signature(secret, head), signature)
    if not matched:
        raise InvalidInboxToken("bad signature")
    if not key:
        raise InvalidInboxToken("malformed token")
    expires = int(parts[2])
    if (time.time() if now is None else now) >= expires:
        raise InvalidInboxToken("expired token")
    return InboxClaim(key, expires)
