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

import binascii
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from outbox import signing

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


def _unb64(text: str) -> bytes:
    if not _B64URL.fullmatch(text):  # an empty segment too
        raise ValueError("not base64url")
    return signing.unb64url(text)


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


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
    head = f"{VERSION}.{signing.b64url(key.encode('utf-8'))}.{expires}"
    return f"{head}.{signing.b64url(signing.hmac_sha256(secret_bytes, head.encode('ascii')))}"


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
    if not signing.signed_by_any(keys, head.encode("ascii"), signature):
        raise InvalidInboxToken("bad signature")
    if not key:
        raise InvalidInboxToken("malformed token")
    expires = int(parts[2])
    if (time.time() if now is None else now) >= expires:
        raise InvalidInboxToken("expired token")
    return InboxClaim(key, expires)
