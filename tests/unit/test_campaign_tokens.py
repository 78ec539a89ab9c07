"""Signed links of lists and campaigns: genuine tokens read back, anything else is refused."""

from __future__ import annotations

import pytest

from daemon.campaigns import tokens
from outbox.tokens import InvalidToken, read_token

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


def _flip(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


@pytest.mark.parametrize("where", [0, 5, -1, -5])
def test_tampered_confirm_tokens_are_invalid_not_expired(where: int) -> None:
    token = tokens.make_confirm_token(KEYS, 7, "u42", ttl_seconds=60)
    index = where if where >= 0 else len(token) + where
    with pytest.raises(tokens.InvalidLink) as caught:
        tokens.read_confirm_token(KEYS, _flip(token, index))
    assert not isinstance(caught.value, tokens.ExpiredLink)


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
    from outbox.tokens import make_token

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
    ],
)
def test_web_urls(url: str, ok: bool) -> None:
    assert tokens.is_web_url(url) is ok
