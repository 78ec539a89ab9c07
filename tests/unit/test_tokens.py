from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox.tokens import InvalidToken, make_token, read_token

KEY, OLD = b"k" * 32, b"o" * 32


def test_round_trip() -> None:
    token = make_token([KEY], channel="email", recipient="Zoë@example.com", category="news")
    claim = read_token([KEY], token)
    assert (claim.channel, claim.recipient, claim.category) == ("email", "Zoë@example.com", "news")
    assert len(token) < 200


def test_rotation_accepts_tokens_signed_by_an_older_key() -> None:
    token = make_token([OLD], channel="email", recipient="a@b.c", category="news")
    assert read_token([KEY, OLD], token).recipient == "a@b.c"
    with pytest.raises(InvalidToken):
        read_token([KEY], token)


def test_expiry() -> None:
    token = make_token([KEY], channel="email", recipient="a@b.c", category="n", issued_at=1000)
    with pytest.raises(InvalidToken, match="expired"):
        read_token([KEY], token, max_age_seconds=60)


@pytest.mark.parametrize("bad", ["", ".", "abc", "a.b.c", "!!!.???", "e30.AAAA"])
def test_garbage_is_invalid(bad: str) -> None:
    with pytest.raises(InvalidToken):
        read_token([KEY], bad)


def test_forged_payload_with_valid_looking_signature_is_invalid() -> None:
    token = make_token([KEY], channel="email", recipient="a@b.c", category="news")
    _, sig = token.split(".")
    forged = base64.urlsafe_b64encode(b'["email","victim@b.c","news",1]').rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        read_token([KEY], f"{forged}.{sig}")


def test_no_keys_is_an_error() -> None:
    with pytest.raises(InvalidToken):
        make_token([], channel="email", recipient="a@b.c", category="n")


@given(
    recipient=st.text(min_size=1, max_size=80),
    category=st.text(min_size=1, max_size=30),
    flip=st.integers(min_value=0, max_value=10_000),
)
def test_round_trip_and_any_change_is_detected(recipient: str, category: str, flip: int) -> None:
    token = make_token([KEY], channel="email", recipient=recipient, category=category)
    assert read_token([KEY], token).recipient == recipient
    position = flip % len(token)
    replacement = "A" if token[position] != "A" else "B"
    changed = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(InvalidToken):
        read_token([KEY], changed)
