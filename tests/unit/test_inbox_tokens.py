"""Inbox subscriber tokens: the documented format, byte for byte, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from outbox import inbox_token
from outbox.inbox import InboxClaim, InvalidInboxToken, read_inbox_token

NOW = 1_750_000_000


def _by_the_spec(key: str, expires: int, secret: str) -> str:
    """The contract's format, written out independently of outbox.inbox."""

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    head = f"v1.{b64url(key.encode())}.{expires}"
    digest = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64url(digest)}"


@pytest.mark.parametrize("key", ["u42", "ünïcødé-ユーザー", "a.b/c+d=e", "x" * 300])
def test_token_matches_the_documented_format(key: str) -> None:
    token = inbox_token(key, secret="s3cret-é", ttl=600, now=NOW)
    assert token == _by_the_spec(key, NOW + 600, "s3cret-é")
    assert "=" not in token and len(token.rsplit(".", 1)[1]) == 43  # 32 bytes, no padding
    assert read_inbox_token(token, ["s3cret-é"], now=NOW) == InboxClaim(key, NOW + 600)


def test_bytes_and_str_secrets_agree_and_rotation_verifies_old_keys() -> None:
    token = inbox_token("u1", secret=b"old", now=NOW)
    assert token == inbox_token("u1", secret="old", now=NOW)
    assert read_inbox_token(token, [b"new", b"old"], now=NOW).key == "u1"
    with pytest.raises(InvalidInboxToken, match="bad signature"):
        read_inbox_token(token, [b"new"], now=NOW)


def test_expiry_is_exclusive() -> None:
    token = inbox_token("u1", secret="k", ttl=10, now=NOW)
    assert read_inbox_token(token, ["k"], now=NOW + 9.999).expires == NOW + 10
    with pytest.raises(InvalidInboxToken, match="expired"):
        read_inbox_token(token, ["k"], now=NOW + 10)


def _flip_last(token: str) -> str:
    return token[:-1] + ("B" if token[-1] == "A" else "A")


def _resigned(head: str) -> str:
    digest = hmac.new(b"k", head.encode(), hashlib.sha256).digest()
    return f"{head}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1.dTE.1750000600",
        "v2" + inbox_token("u1", secret="k", now=NOW)[2:],
        inbox_token("u1", secret="k", now=NOW) + ".extra",
        inbox_token("u1", secret="k", now=NOW).replace("dTE", "dTI"),  # another person
        _flip_last(inbox_token("u1", secret="k", now=NOW)),  # tampered signature
        # Correctly signed, but not in the canonical format:
        _resigned("v1.dTE=.1750000600"),  # padding
        _resigned("v1.dTF.1750000600"),  # non-canonical last character
        _resigned("v1.dTE.+1750000600"),
        _resigned("v1.dTE. 1750000600"),
        _resigned("v1.dTE.١٧٥٠٠٠٠٦٠٠"),  # Arabic-Indic digits
        _resigned("v1..1750000600"),  # empty key
        _resigned("v1.__8.1750000600"),  # not UTF-8
        "v1.dTE.1750000600." + "A" * 43 + "é",
        "x" * 10_000,
    ],
)
def test_malformed_or_forged_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidInboxToken):
        read_inbox_token(token, ["k"], now=NOW)


def test_no_keys_configured_refuses_everything() -> None:
    with pytest.raises(InvalidInboxToken, match="no verification key"):
        read_inbox_token(inbox_token("u1", secret="k"), [])


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"key": ""}, "key must be a non-empty string"),
        ({"key": "u\x00"}, "key contains NUL"),
        ({"ttl": 0}, "ttl must be a positive"),
        ({"ttl": 1.5}, "ttl must be a positive"),
        ({"ttl": True}, "ttl must be a positive"),
        ({"secret": ""}, "secret is empty"),
    ],
)
def test_minting_refuses_bad_arguments(kwargs: dict[str, object], complaint: str) -> None:
    args: dict[str, object] = {"key": "u1", "secret": "k", **kwargs}
    key = args.pop("key")
    with pytest.raises(ValueError, match=complaint):
        inbox_token(key, **args)  # type: ignore[arg-type]
