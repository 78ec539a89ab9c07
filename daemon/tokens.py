"""Unsubscribe tokens: opaque, authenticated, and dated.

A token is a Fernet token (AES-128-CBC and HMAC-SHA256, from ``cryptography``) of
``[channel, recipient, category]`` (``[channel, recipient, category, brand]`` for a
branded message, whose opt-out holds for that brand), without its base64 padding: nothing
in the URL says who it is about, and any change to it is detected. Its key is derived
(HKDF-SHA256) from OUTBOXD_SECRET_KEY; the first key encrypts, every configured key
decrypts, so keys are rotated by putting the new key first and dropping the old one once
its links have aged out (``max_age_seconds``, OUTBOXD_HTTP__UNSUBSCRIBE_TOKEN_DAYS).

Tokens of the earlier format (``<base64url JSON with the plain address>.<HMAC>``) are
still read, for ``legacy_max_age_seconds`` after they were issued
(OUTBOXD_HTTP__LEGACY_TOKEN_DAYS), so links already in mailboxes keep working while
they fade out.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken as FernetInvalid
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from outbox import signing

_LEGACY_SIG_BYTES = 16
_KDF_INFO = b"outboxd unsubscribe token v2"


class InvalidToken(ValueError):
    """The token is malformed, tampered with, made with an unknown key, or expired."""


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    channel: str
    recipient: str
    category: str
    issued_at: int
    #: The brand of the message the link came from (``outbox.brand``); None: no brand.
    brand: str | None = None


@functools.lru_cache(maxsize=16)
def _fernet(key: bytes) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(key)
    return Fernet(base64.urlsafe_b64encode(derived))


def make_token(
    keys: Sequence[bytes],
    *,
    channel: str,
    recipient: str,
    category: str,
    issued_at: int | None = None,
    brand: str | None = None,
) -> str:
    """An opaque, URL-safe token naming who unsubscribes from what (and which brand's)."""
    if not keys:
        raise InvalidToken("no signing key configured")
    issued = int(time.time()) if issued_at is None else issued_at
    fields = [channel, recipient, category] + ([brand] if brand is not None else [])
    payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _fernet(keys[0]).encrypt_at_time(payload, issued).decode("ascii").rstrip("=")


def read_token(
    keys: Sequence[bytes],
    token: str,
    *,
    max_age_seconds: float | None = None,
    legacy_max_age_seconds: float | None = None,
    now: float | None = None,
) -> UnsubscribeClaim:
    """Verify ``token``; raises :class:`InvalidToken` for anything but a genuine one
    issued less than ``max_age_seconds`` ago (and, for the earlier format, less than
    ``legacy_max_age_seconds``)."""
    if not keys:
        raise InvalidToken("no verification key configured")
    if not isinstance(token, str) or not token.isascii():
        raise InvalidToken("malformed token")
    if "." in token:
        claim = _read_legacy(keys, token)
        if legacy_max_age_seconds is not None:
            _check_age(claim, legacy_max_age_seconds, now)
    else:
        claim = _read(keys, token)
    if max_age_seconds is not None:
        _check_age(claim, max_age_seconds, now)
    return claim


def _read(keys: Sequence[bytes], token: str) -> UnsubscribeClaim:
    try:
        padded = base64.urlsafe_b64encode(signing.unb64url(token))
    except ValueError as exc:
        raise InvalidToken("malformed token") from exc
    for key in keys:
        fernet = _fernet(key)
        try:
            payload = fernet.decrypt(padded)
        except FernetInvalid:
            continue
        issued_at = fernet.extract_timestamp(padded)
        return _claim(payload, issued_at)
    raise InvalidToken("bad token")


def _read_legacy(keys: Sequence[bytes], token: str) -> UnsubscribeClaim:
    try:
        encoded_payload, encoded_sig = token.split(".")
        payload = signing.unb64url(encoded_payload)
        signature = signing.unb64url(encoded_sig)
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not signing.signed_by_any(keys, payload, signature, _LEGACY_SIG_BYTES):
        raise InvalidToken("bad signature")
    try:
        *fields, issued_at = json.loads(payload.decode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed payload") from exc
    if not isinstance(issued_at, int) or isinstance(issued_at, bool):
        raise InvalidToken("malformed payload")
    return _claim(json.dumps(fields).encode(), issued_at)


def _claim(payload: bytes, issued_at: int) -> UnsubscribeClaim:
    try:
        fields = json.loads(payload.decode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed payload") from exc
    if (
        not isinstance(fields, list)
        or len(fields) not in (3, 4)
        or not all(isinstance(v, str) for v in fields)
    ):
        raise InvalidToken("malformed payload")
    channel, recipient, category, *brand = fields
    return UnsubscribeClaim(channel, recipient, category, issued_at, brand[0] if brand else None)


def _check_age(claim: UnsubscribeClaim, max_age_seconds: float, now: float | None) -> None:
    if (time.time() if now is None else now) - claim.issued_at > max_age_seconds:
        raise InvalidToken("expired token")
