"""What outboxd's signed tokens are made of: URL-safe base64 without padding, read in its
one canonical spelling, and HMAC-SHA256 signatures checked against every configured key.

The token formats themselves (unsubscribe, preference, inbox, list and tracking links)
live with their users; this module only holds the pieces they share, so that each format
spells them the same way.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable

#: Bytes of a full HMAC-SHA256 signature.
SHA256_BYTES = 32


def b64url(data: bytes) -> str:
    """``data`` in the URL-safe base64 alphabet, without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """The bytes :func:`b64url` spells as ``text``; ValueError for any other spelling.

    Only the canonical spelling is accepted: otherwise padding, characters base64 skips
    and the unused bits of the last character would give one token several valid forms.
    """
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def hmac_sha256(key: bytes, message: bytes, size: int = SHA256_BYTES) -> bytes:
    """The first ``size`` bytes of HMAC-SHA256(``key``, ``message``)."""
    # hmac.digest: OpenSSL's one-shot HMAC, a third of hmac.new(...).digest()'s cost.
    return hmac.digest(key, message, "sha256")[:size]


def signed_by_any(
    keys: Iterable[bytes], message: bytes, signature: bytes, size: int = SHA256_BYTES
) -> bool:
    """Whether ``signature`` is :func:`hmac_sha256` of ``message`` under one of ``keys``.

    Every key is tried and each comparison takes constant time, so the time taken tells
    neither how much of a forged signature was right nor which key matched.
    """
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(hmac_sha256(key, message, size), signature)
    return matched
