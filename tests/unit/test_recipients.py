from __future__ import annotations

import pytest

from daemon.recipients import mask, validate_email, validate_phone
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
