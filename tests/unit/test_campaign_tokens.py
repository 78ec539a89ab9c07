"""Signed links of lists and campaigns: genuine tokens read back, anything else is refused."""

from __future__ import annotations

import base64

import pytest

from daemon.campaigns import tokens
from daemon.tokens import InvalidToken, read_token

KEYS = [b"current-key", b"older-key"]


def test_confirm_token_round_trip_and_expiry() -> None:
    token = tokens.make_confirm_token(KEYS, 7, "u42", ttl_seconds=60, now=1_000)
    claim = tokens.read_confirm_token(KEYS, token, now=1_059)
    assert (claim.list_id, claim.recipient_key, claim.expires_at) == (7, "u42", 1_060)
    with pytest.raises(tokens.ExpiredLink):
        tokens.read_confirm_token(KEYS, token, now=1_060)


def test_an_older_key_still_verifies_an_unknown_one_does_not() -> None:
    token = tokens.make_confirm_token([b"older-key"], 7, "u42", ttl_seconds=60)
    assert tokens.read_confirm_token(KEYS, token).list_id == 7
    with pytest.raises(tokens.InvalidLink):
        tokens.read_confirm_token([b"another"], token)


def test_tampered_confirm_tokens_are_invalid_not_expired() -> None:
    for _ in range(20):  # a fresh IV each time: every spelling of the last character too
        token = tokens.make_confirm_token(KEYS, 7, "u42", ttl_seconds=60)
        for index in (0, 5, len(token) // 2, len(token) - 5, len(token) - 1):
            for replacement in "ABCDEFGH":
                if token[index] == replacement:
                    continue
                tampered = token[:index] + replacement + token[index + 1 :]
                with pytest.raises(tokens.InvalidLink) as caught:
                    tokens.read_confirm_token(KEYS, tampered)
                assert not isinstance(caught.value, tokens.ExpiredLink)


def test_tokens_are_opaque() -> None:
    token = tokens.make_confirm_token(KEYS, 7, "ann@example.com", ttl_seconds=60)
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"ann" not in decoded and b"example" not in decoded
    assert "." not in token and "=" not in token


@pytest.mark.parametrize(
    "token", ["", ".", "abc", "a.b.c", "é.é", "x" * 5000, "W10.AAAAAAAAAAAAAAAAAAAAAA"]
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    for read in (
        lambda t: tokens.read_confirm_token(KEYS, t),
        lambda t: tokens.read_open_token(KEYS, t),
        lambda t: tokens.read_click_token(KEYS, t),
    ):
        with pytest.raises(tokens.InvalidLink):
            read(token)


def test_a_token_of_one_purpose_is_refused_for_another() -> None:
    opened = tokens.make_open_token(KEYS, 5)
    assert tokens.read_open_token(KEYS, opened) == 5
    with pytest.raises(tokens.InvalidLink):
        tokens.read_click_token(KEYS, opened)
    with pytest.raises(tokens.InvalidLink):
        tokens.read_confirm_token(KEYS, opened)
    # ... and none of ours reads as an unsubscribe token, nor the other way round.
    with pytest.raises(InvalidToken):
        read_token(KEYS, opened)
    from daemon.tokens import make_token

    unsubscribe = make_token(KEYS, channel="email", recipient="a@example.com", category="news")
    with pytest.raises(tokens.InvalidLink):
        tokens.read_open_token(KEYS, unsubscribe)


def test_click_tokens_carry_only_web_urls() -> None:
    token = tokens.make_click_token(KEYS, 9, "https://shop.example/sale?a=1&b=2")
    assert tokens.read_click_token(KEYS, token) == (9, "https://shop.example/sale?a=1&b=2")
    for url in ("javascript:alert(1)", "//evil.example", "https://x.example/\r\nSet-Cookie: a"):
        with pytest.raises(tokens.InvalidLink):
            tokens.read_click_token(KEYS, tokens.make_click_token(KEYS, 9, url))


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://a.example/x", True),
        ("http://a.example", True),
        ("ftp://a.example", False),
        ("mailto:a@example.com", False),
        ("https:///nohost", False),
        ("/relative", False),
        ("https://a.example/ spaced", False),
        ("https://a.example/caf\u00e9", False),  # not tracked, left as written
    ],
)
def test_web_urls(url: str, ok: bool) -> None:
    assert tokens.is_web_url(url) is ok
