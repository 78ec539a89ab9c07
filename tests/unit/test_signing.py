"""The pieces the signed tokens share (outbox/signing.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from daemon.campaigns.tokens import InvalidLink, make_click_token, read_click_token
from outbox import signing

KEYS = [b"first-key", b"older-key"]


def test_base64url_has_no_padding_and_reads_back() -> None:
    for data in (b"", b"a", b"ab", b"abc", bytes(range(256))):
        text = signing.b64url(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert signing.unb64url(text) == data


@pytest.mark.parametrize("text", ["YQ==", "YR", "Y Q", "Y+Q", "Y/Q", "a", "YQ.", "é"])
def test_only_the_canonical_spelling_is_read(text: str) -> None:
    # padding, unused bits set in the last character, characters base64 skips or the
    # other alphabet uses, an impossible length, non-ASCII
    with pytest.raises(ValueError):
        signing.unb64url(text)


def test_signatures_are_hmac_sha256_checked_against_every_key() -> None:
    message = b"v1.dTE.1750000600"
    full = hmac.new(KEYS[1], message, hashlib.sha256).digest()
    assert signing.hmac_sha256(KEYS[1], message) == full
    assert signing.hmac_sha256(KEYS[1], message, 16) == full[:16]
    assert signing.signed_by_any(KEYS, message, full)
    assert signing.signed_by_any(KEYS, message, full[:16], 16)
    assert not signing.signed_by_any(KEYS, message, full[:16])  # truncated
    assert not signing.signed_by_any(KEYS, message + b"x", full)
    assert not signing.signed_by_any([], message, full)


def test_a_link_token_with_its_padding_put_back_is_refused() -> None:
    # One spelling per token: the padded form of a genuine token was accepted too.
    for n in range(3):
        token = make_click_token(KEYS, 7, "https://example.com/" + "x" * n)
        if len(token) % 4:
            break
    padded = token + "=" * (-len(token) % 4)
    assert padded != token and read_click_token(KEYS, token) == (
        7,
        "https://example.com/" + "x" * n,
    )
    with pytest.raises(InvalidLink):
        read_click_token(KEYS, padded)
