"""Preference-page tokens: which person a link is for, and which message it came from.

A person's messages link to ``/preferences?token=...`` (their ``unsubscribe_url``,
``preferences_url`` and, for email, ``List-Unsubscribe``). The token is

    p1.<b64url(key)>.<channel>.<b64url(category)>.<expires unix seconds>.<b64url(sig)>

where ``sig`` is the first 16 bytes of HMAC-SHA256(first key of OUTBOXD_SECRET_KEY, every
segment before it joined by dots); every configured key verifies, so keys rotate as for
unsubscribe tokens. ``channel`` and ``category`` are those of the message the link was in
(RFC 8058 one-click switches that pair off). The ``p1`` prefix keeps these apart from the
inbox's ``v1`` subscriber tokens: neither verifies as the other.
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "p1"
#: How long a link in a message keeps working: long enough for the mail a person keeps.
DEFAULT_TTL_SECONDS = 400 * 86400
CHANNELS = frozenset({"email", "sms", "inapp"})
_SIG_BYTES = 16
_EXPIRES = re.compile(r"^[1-9][0-9]{0,11}$")


class InvalidPreferenceToken(ValueError):
    """The token is malformed, tampered with, signed by an unknown key, or expired."""


@dataclass(frozen=True, slots=True)
class PreferenceClaim:
    recipient_key: str
    channel: str
    category: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # one spelling per token
        raise ValueError("non-canonical base64")
    return data


def _sign(key: bytes, signed: str) -> bytes:
    # hmac.digest: OpenSSL's one-shot HMAC, a third of hmac.new(...).digest()'s cost.
    return hmac.digest(key, signed.encode("ascii"), "sha256")[:_SIG_BYTES]


def make_preference_token(
    keys: Sequence[bytes],
    *,
    recipient_key: str,
    channel: str,
    category: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> str:
    """A URL-safe token for person ``recipient_key``'s preference page."""
    if not keys:
        raise InvalidPreferenceToken("no signing key configured")
    if channel not in CHANNELS or not recipient_key or not category:
        raise InvalidPreferenceToken("a token needs a person, a channel and a category")
    expires = int(time.time() if now is None else now) + ttl_seconds
    signed = ".".join(
        (PREFIX, _b64(recipient_key.encode()), channel, _b64(category.encode()), str(expires))
    )
    return f"{signed}.{_b64(_sign(keys[0], signed))}"


def read_preference_token(
    keys: Sequence[bytes], token: str, *, now: float | None = None
) -> PreferenceClaim:
    """Verify ``token``; raises :class:`InvalidPreferenceToken` for anything but a genuine,
    unexpired one."""
    if not keys:
        raise InvalidPreferenceToken("no verification key configured")
    parts = token.split(".")
    if len(parts) != 6 or parts[0] != PREFIX:
        raise InvalidPreferenceToken("malformed token")
    signed, encoded_sig = token.rsplit(".", 1)
    try:
        if not signed.isascii():
            raise ValueError("not ASCII")
        signature = _unb64(encoded_sig)
        key = _unb64(parts[1]).decode("utf-8")
        category = _unb64(parts[3]).decode("utf-8")
    except (ValueError, TypeError) as exc:
        raise InvalidPreferenceToken("malformed token") from exc
    if not any(hmac.compare_digest(_sign(k, signed), signature) for k in keys):
        raise InvalidPreferenceToken("bad signature")
    channel, expires = parts[2], parts[4]
    if channel not in CHANNELS or not key or not category or not _EXPIRES.match(expires):
        raise InvalidPreferenceToken("malformed token")
    if int(expires) < (time.time() if now is None else now):
        raise InvalidPreferenceToken("expired token")
    return PreferenceClaim(key, channel, category, int(expires))
