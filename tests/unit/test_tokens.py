from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.tokens import InvalidToken, make_token, read_token

KEY, OLD = b"k" * 32, b"o" * 32
DAY = 86400


def legacy_token(key: bytes, channel: str, recipient: str, category: str, issued: int) -> str:
    """A token as outboxd made them before they became opaque (the plain address inside)."""
    payload = json.dumps([channel, recipient, category, issued], separators=(",", ":"),
                         ensure_ascii=False).encode()  # fmt: skip
    signature = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()  # noqa: E731
    return f"{b64(payload)}.{b64(signature)}"


def test_round_trip() -> None:
    token = make_token([KEY], channel="email", recipient="Zoë@example.com", category="news")
    claim = read_token([KEY], token)
    assert (claim.channel, claim.recipient, claim.category) == ("email", "Zoë@example.com", "news")
    assert len(token) < 200


@pytest.mark.parametrize("recipient", ["ann@example.com", "+14155552671"])
def test_tokens_are_opaque(recipient: str) -> None:
    token = make_token([KEY], channel="email", recipient=recipient, category="news")
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for form in (recipient, recipient.split("@")[0], recipient[1:]):
        assert form not in token and form.encode() not in decoded
    assert "=" not in token and token.isascii()


def test_rotation_accepts_tokens_made_with_an_older_key() -> None:
    token = make_token([OLD], channel="email", recipient="a@b.c", category="news")
    assert read_token([KEY, OLD], token).recipient == "a@b.c"
    with pytest.raises(InvalidToken):
        read_token([KEY], token)


def test_expiry() -> None:
    token = make_token([KEY], channel="email", recipient="a@b.c", category="n", issued_at=1000)
    assert read_token([KEY], token, max_age_seconds=60, now=1059).issued_at == 1000
    with pytest.raises(InvalidToken, match="expired"):
        read_token([KEY], token, max_age_seconds=60, now=1061)


def test_earlier_tokens_work_through_the_rotation_period_only() -> None:
    token = legacy_token(KEY, "email", "a@b.c", "news", 1000)
    claim = read_token([KEY], token, max_age_seconds=365 * DAY, legacy_max_age_seconds=90 * DAY,
                       now=1000 + 89 * DAY)  # fmt: skip
    assert (claim.recipient, claim.category, claim.issued_at) == ("a@b.c", "news", 1000)
    with pytest.raises(InvalidToken, match="expired"):
        read_token([KEY], token, legacy_max_age_seconds=90 * DAY, now=1000 + 91 * DAY)
    # A new-format token of the same age is still good.
    fresh = make_token([KEY], channel="email", recipient="a@b.c", category="n", issued_at=1000)
    assert read_token([KEY], fresh, max_age_seconds=365 * DAY, legacy_max_age_seconds=90 * DAY,
                      now=1000 + 91 * DAY)  # fmt: skip


@pytest.mark.parametrize(
    "bad", ["", ".", "abc", "a.b.c", "!!!.???", "e30.AAAA", "gAAAAA", "gAAAA\u00e9", "g A", "a=="]
)
def test_garbage_is_invalid(bad: str) -> None:
    with pytest.raises(InvalidToken):
        read_token([KEY], bad)


def test_forged_legacy_payload_with_valid_looking_signature_is_invalid() -> None:
    token = legacy_token(KEY, "email", "a@b.c", "news", 1000)
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
