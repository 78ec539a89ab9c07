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

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from outbox import signing

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


def _sign(key: bytes, signed: str) -> bytes:
    return signing.hmac_sha256(key, signed.encode("ascii"), _SIG_BYTES)


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
        (
            PREFIX,
            signing.b64url(recipient_key.encode()),
            channel,
            signing.b64url(category.encode()),
            str(expires),
        )
    )
    return f"{signed}.{signing.b64url(_sign(keys[0], signed))}"


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
        signature = signing.unb64url(encoded_sig)
        key = signing.unb64url(parts[1]).decode("utf-8")
        category = signing.unb64url(parts[3]).decode("utf-8")
    except (ValueError, TypeError) as exc:
        raise InvalidPreferenceToken("malformed token") from exc
    if not signing.signed_by_any(keys, signed.encode("ascii"), signature, _SIG_BYTES):
        raise InvalidPreferenceToken("bad signature")
    channel, expires = parts[2], parts[4]
    if channel not in CHANNELS or not key or not category or not _EXPIRES.match(expires):
        raise InvalidPreferenceToken("malformed token")
    if int(expires) < (time.time() if now is None else now):
        raise InvalidPreferenceToken("expired token")
    return PreferenceClaim(key, channel, category, int(expires))
