"""Recipient validation (email syntax, E.164 phone numbers) and masking for logs."""

from __future__ import annotations

import functools
import re

import email_validator
import phonenumbers

from outbox import errors

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: A dot-atom local part at a domain of plain ASCII labels under an all-letter TLD.
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_SPECIAL_USE_TLDS = frozenset(email_validator.SPECIAL_USE_DOMAIN_NAMES)
#: RFC 2142 mailboxes (postmaster, abuse...), which email_validator lowercases.
_CASE_INSENSITIVE_MAILBOXES = frozenset(
    email_validator.rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES
)


def _plain_address(address: str) -> str | None:
    """The normalised form of an address that email_validator would surely accept, or None.

    email_validator costs 50-65 us for an address it has not seen (Unicode and IDNA
    checks), a third of a message's whole cost in a backlog of distinct recipients. Most
    addresses are plain ASCII; this accepts only those, with every rule the library would
    apply to them, and leaves anything else (Unicode, punycode, special-use domains) to
    the library (so do the RFC 2142 mailboxes it lowercases). A property test holds the
    two to the same answers.
    """
    match = _PLAIN_ADDRESS.fullmatch(address)
    if match is None or len(address) > 254:
        return None
    domain = match[1].lower()
    if "--" in domain or len(domain) > 253 or domain.rsplit(".", 1)[1] in _SPECIAL_USE_TLDS:
        return None
    local = address[: match.start(1) - 1]
    if local.lower() in _CASE_INSENSITIVE_MAILBOXES:
        return None
    return f"{local}@{domain}"


def validate_email(address: str) -> str:
    """The normalised address (domain in lower case), or InvalidRecipient with the reason."""
    return _plain_address(address) or _validate_email(address)


@functools.lru_cache(maxsize=65536)
def _validate_email(address: str) -> str:
    # Cached: a backlog often repeats recipients, and this is the costliest check.
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
    kind = _COSTLY_NUMBER_TYPES.get(phonenumbers.number_type(parsed))
    if kind is None and phonenumbers.shortnumberinfo.is_valid_short_number(parsed):
        kind = "a short code"
    if kind is not None:
        raise errors.InvalidRecipient(f"refused phone number {mask(number)!r}: {kind}")
    return e164


#: Numbers that cost more than an SMS (or charge the sender per message), by their type.
_COSTLY_NUMBER_TYPES = {
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
}


#: Anything shaped like an email address, also URL-encoded (``ann%40example.com``), or an
#: E.164 phone number, wherever it appears in a text.
_ADDRESS_IN_TEXT = re.compile(
    r"(?P<local>[\w.!#$%&'*+/=?^`{|}~-]+?)(?P<at>@|%40)(?P<domain>[\w-]+(?:\.[\w-]+)+)"
    r"|(?<![\w+])(?P<phone>\+[1-9][0-9]{6,14})(?![0-9])",
    re.IGNORECASE,
)


def mask_text(text: str) -> str:
    """``text`` with every address in it masked as :func:`mask` does; for text we did not
    write ourselves (server replies, exception messages) before it reaches a log."""
    if "@" not in text and "%40" not in text and "+" not in text:
        return text
    return _ADDRESS_IN_TEXT.sub(_masked_match, text)


def _masked_match(match: re.Match[str]) -> str:
    if match["phone"]:
        return mask(match["phone"])
    return f"{match['local'][:1]}***{match['at']}{match['domain']}"


def mask(recipient: str) -> str:
    """``a***@example.com`` / ``+44******789``: enough to debug, not enough to leak."""
    if "@" in recipient:
        local, _, domain = recipient.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(recipient) <= 6:
        return "*" * len(recipient)
    return recipient[:3] + "*" * (len(recipient) - 6) + recipient[-3:]
