from __future__ import annotations

import email_validator
import hypothesis
import hypothesis.strategies as st
import pytest

from daemon import addresses
from daemon.addresses import mask, validate_email, validate_phone
from daemon.providers.sns import sms_segments
from outbox import errors


@pytest.mark.parametrize(
    "address", ["ann@example.com", "a.b+tag@sub.example.co.uk", "zoë@exämple.com"]
)
def test_valid_addresses(address: str) -> None:
    assert "@" in validate_email(address)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plain",
        "a@",
        "@example.com",
        "a@@example.com",
        "a b@example.com",
        "a@example.com\nBcc: x@y",
    ],
)
def test_invalid_addresses_fail_permanently(address: str) -> None:
    with pytest.raises(errors.InvalidRecipient):
        validate_email(address)


@pytest.mark.parametrize("number", ["+14155552671", "+442071838750", "+33142685300"])
def test_valid_phone_numbers(number: str) -> None:
    assert validate_phone(number) == number


@pytest.mark.parametrize(
    "number", ["14155552671", "+1234", "+1 415 555 2671", "+999999999999", "+1415555267a", ""]
)
def test_invalid_phone_numbers_fail_permanently(number: str) -> None:
    with pytest.raises(errors.InvalidRecipient):
        validate_phone(number)


def test_errors_never_contain_the_full_recipient() -> None:
    with pytest.raises(errors.InvalidRecipient) as caught:
        validate_email("secretperson@@example.com")
    assert "secretperson" not in caught.value.reason


def test_mask() -> None:
    assert mask("ann@example.com") == "a***@example.com"
    assert mask("+442071838750") == "+44*******750"
    assert mask("12345") == "*****"


_LOCAL_CHARS = "abcXYZ019.!#$%&'*+/=?^_`{|}~-\"(),:;<>@[\\] é"
_DOMAIN_CHARS = "abcXYZ019-.é_"
_TLDS = ["com", "CO", "uk", "x", "c1", "123", "test", "local", "LOCALHOST", "onion", "arpa",
         "invalid", "example", "xn--p1ai", "museum", "a" * 63, "b" * 64]  # fmt: skip


@hypothesis.settings(max_examples=3000, deadline=None)
@hypothesis.given(
    local=st.one_of(
        st.text(alphabet=_LOCAL_CHARS, min_size=0, max_size=70),
        st.from_regex(r"[A-Za-z0-9._+'-]{1,70}", fullmatch=True),
        st.sampled_from(["Postmaster", "WWW", "abuse", "Info.x"]),
    ),
    labels=st.lists(
        st.one_of(
            st.text(alphabet=_DOMAIN_CHARS, min_size=0, max_size=12),
            st.from_regex(r"[a-zA-Z0-9-]{1,12}", fullmatch=True),
            st.sampled_from(["xn--bcher-kva", "ab--cd", "a" * 63, "b" * 64, "mail"]),
        ),
        min_size=0,
        max_size=4,
    ),
    tld=st.sampled_from(_TLDS),
)
def test_the_plain_address_shortcut_agrees_with_email_validator(
    local: str, labels: list[str], tld: str
) -> None:
    address = f"{local}@{'.'.join([*labels, tld])}"
    shortcut = addresses._plain_address(address)
    if shortcut is None:
        return  # left to email_validator itself
    library = email_validator.validate_email(address, check_deliverability=False)
    assert shortcut == library.normalized


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ("ann@example.com", "ann@example.com"),
        ("Ann.O'Neil+tag@Mail.Example.CO.uk", "Ann.O'Neil+tag@mail.example.co.uk"),
        ("user123@a-b.io", "user123@a-b.io"),
    ],
)
def test_plain_addresses_take_the_shortcut(address: str, normalised: str) -> None:
    assert addresses._plain_address(address) == normalised
    assert validate_email(address) == normalised


@pytest.mark.parametrize(
    "address",
    ["zoë@example.com", "a@xn--bcher-kva.com", "a@host.test", "a@b.c1", "a..b@example.com"],
)
def test_other_addresses_go_to_email_validator(address: str) -> None:
    assert addresses._plain_address(address) is None


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("+19002345678", "premium-rate"),
        ("+449012345678", "premium-rate"),
        ("+33891123456", "premium-rate"),
        ("+33884012345", "shared-cost"),
        ("+34901123456", "shared-cost"),
        ("+611300123456", "shared-cost"),
    ],
)
def test_costly_numbers_are_refused(number: str, kind: str) -> None:
    with pytest.raises(errors.InvalidRecipient, match=kind) as caught:
        validate_phone(number)
    assert number not in str(caught.value)


@pytest.mark.parametrize("number", ["+447911123456", "+18005550100", "+33612345678"])
def test_mobile_and_toll_free_numbers_are_accepted(number: str) -> None:
    assert validate_phone(number) == number


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1), ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),
        ("€" * 80, 1), ("€" * 81, 2), ("é" * 160, 1),
        ("ł" * 70, 1), ("ł" * 71, 2), ("ł" * 134, 2), ("ł" * 135, 3),
        ("😀" * 35, 1), ("😀" * 36, 2), ("a" * 159 + "ł", 3),
    ],
)  # fmt: skip
def test_sms_segments(text: str, segments: int) -> None:
    assert sms_segments(text) == segments
