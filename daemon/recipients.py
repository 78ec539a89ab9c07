"""Recipient validation (email syntax, E.164 phone numbers) and masking for logs."""

from __future__ import annotations

import functools

import email_validator
import phonenumbers

from outbox import errors


@functools.lru_cache(maxsize=65536)
def validate_email(address: str) -> str:
    """The normalised address, or InvalidRecipient with the reason.

    Cached: a backlog often repeats recipients, and validation is the costliest check.
    """
    if "\r" in address or "\n" in address:
        raise errors.InvalidRecipient("invalid email address: contains a line break")
    try:
        result = email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise errors.InvalidRecipient(f"invalid email address {mask(address)!r}: {exc}") from exc
    return str(result.normalized)


@functools.lru_cache(maxsize=65536)
def validate_phone(number: str) -> str:
    """The E.164 form of ``number`` (which must already be +E.164), or InvalidRecipient."""
    if not number.startswith("+"):
        raise errors.InvalidRecipient(
            f"invalid phone number {mask(number)!r}: must be in E.164 form, e.g. +14155552671"
        )
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise errors.InvalidRecipient(f"invalid phone number {mask(number)!r}: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise errors.InvalidRecipient(f"invalid phone number {mask(number)!r}: not a valid number")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164 != number:
        raise errors.InvalidRecipient(
            f"invalid phone number {mask(number)!r}: not in E.164 form (expected {mask(e164)})"
        )
    return e164


def mask(recipient: str) -> str:
    """``a***@example.com`` / ``+44******789``: enough to debug, not enough to leak."""
    if "@" in recipient:
        local, _, domain = recipient.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(recipient) <= 6:
        return "*" * len(recipient)
    return recipient[:3] + "*" * (len(recipient) - 6) + recipient[-3:]
