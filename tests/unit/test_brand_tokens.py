"""Unsubscribe tokens of branded messages carry the brand inside the encrypted payload:
the format users see (an opaque Fernet token) is unchanged, earlier tokens still read."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.fernet import Fernet

from daemon.tokens import InvalidToken, _fernet, make_token, read_token

KEYS = [b"k1"]


def test_a_branded_token_names_its_brand() -> None:
    token = make_token(KEYS, channel="email", recipient="a@example.com", category="news",
                       brand="acme")  # fmt: skip
    claim = read_token(KEYS, token)
    assert (claim.channel, claim.recipient, claim.category, claim.brand) == (
        "email", "a@example.com", "news", "acme",
    )  # fmt: skip
    assert "acme" not in token and "." not in token


def test_tokens_without_a_brand_are_as_before() -> None:
    token = make_token(KEYS, channel="email", recipient="a@example.com", category="news")
    assert read_token(KEYS, token).brand is None
    padded = base64.urlsafe_b64encode(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert json.loads(_fernet(KEYS[0]).decrypt(padded)) == ["email", "a@example.com", "news"]


@pytest.mark.parametrize(
    "fields", [["email", "a@example.com"], ["email", "a", "news", "acme", "x"], ["e", "a", "n", 7]]
)
def test_other_payload_shapes_are_refused(fields: list[object]) -> None:
    fernet: Fernet = _fernet(KEYS[0])
    token = fernet.encrypt(json.dumps(fields).encode()).decode().rstrip("=")
    with pytest.raises(InvalidToken, match="malformed payload"):
        read_token(KEYS, token)
