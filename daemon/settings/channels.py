"""Settings of the channels and the providers that send them: email (SES, SMTP, file),
SMS (SNS), AWS (``OUTBOXD_EMAIL__*``, ``OUTBOXD_SMS__*``, ``OUTBOXD_SMTP__*``, ...)."""

from __future__ import annotations

import email.errors
import email.policy
import enum
from pathlib import Path

import email_validator
from pydantic import Field, SecretStr, field_validator

from daemon.settings.base import _Section

#: The file and null providers never wait on a network; this bounds a stuck disk.
LOCAL_SEND_TIMEOUT = 2.0

_MAILBOX_EXAMPLE = "an email address, optionally with a display name: 'Acme <hi@acme.example>'"


def mailbox(value: str) -> str:
    """``value`` if it is one email address, optionally with a display name; else ValueError.

    Special-use domains (``localhost``, ``.test``) are accepted: a sender there is fine for
    the file provider in development, and a real provider reports its own refusal.
    """
    if "\r" in value or "\n" in value:
        raise ValueError(f"must be {_MAILBOX_EXAMPLE}, without line breaks")
    try:
        header = email.policy.default.header_factory("from", value)
        addresses = header.addresses
    except (email.errors.HeaderParseError, IndexError, ValueError):
        raise ValueError(f"must be {_MAILBOX_EXAMPLE}") from None
    if header.defects or len(addresses) != 1:
        raise ValueError(f"must be {_MAILBOX_EXAMPLE}")
    local, _, domain = addresses[0].addr_spec.rpartition("@")
    if domain.lower().rsplit(".", 1)[-1] in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        domain = "example.com"  # checks the syntax of the rest
    try:
        email_validator.validate_email(
            f"{local}@{domain}", check_deliverability=False, globally_deliverable=False
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"must be {_MAILBOX_EXAMPLE} ({exc})") from None
    return value


class EmailProviderName(enum.StrEnum):
    SES = "ses"
    SMTP = "smtp"
    FILE = "file"
    NULL = "null"


class SmsProviderName(enum.StrEnum):
    SNS = "sns"
    FILE = "file"
    NULL = "null"


class EmailSettings(_Section):
    provider: EmailProviderName = Field(
        EmailProviderName.FILE, description="Which provider sends email."
    )
    sender: str = Field(
        "outboxd <outboxd@localhost>",
        alias="from",
        description="From address, optionally with a display name: 'Acme <hi@acme.test>'.",
    )
    reply_to: str | None = Field(None, description="Reply-To address, if any.")
    rate: float = Field(
        0.0, ge=0, description="Max emails per second for the whole cluster; 0 = unlimited."
    )
    list_unsubscribe_mailto: str | None = Field(
        None, description="Optional mailto address added to List-Unsubscribe."
    )

    @field_validator("sender", "reply_to")
    @classmethod
    def _mailbox(cls, value: str | None) -> str | None:
        return None if value is None else mailbox(value)


class SmsSettings(_Section):
    provider: SmsProviderName = Field(SmsProviderName.FILE, description="Which provider sends SMS.")
    rate: float = Field(0.0, ge=0, description="Max SMS per second for the whole cluster.")
    sender_id: str | None = Field(None, description="Alphanumeric SenderID, where supported.")
    max_price: float | None = Field(None, gt=0, description="Max price per SMS in USD (SNS).")
    max_segments: int = Field(
        6,
        ge=1,
        le=20,
        description="An SMS longer than this many segments (160 GSM-7 or 70 UCS-2 characters "
        "for one; 153 or 67 each when split) fails instead of being sent (SNS).",
    )
    receipts: bool = Field(
        False,
        description="Read SNS SMS delivery-status records from CloudWatch Logs (SNS "
        "delivery status logging must be on): delivered or failed, the carrier's answer and "
        "the price on each message.",
    )
    receipt_log_group: str | None = Field(
        None,
        description="The log group of successful deliveries (failures: the same name plus "
        "'/Failure'); unset: sns/<region>/<account>/DirectPublishToPhoneNumber.",
    )
    receipt_interval: float = Field(
        30.0, gt=0, description="Seconds between reads of the delivery-status logs."
    )
    monthly_cap_usd: float | None = Field(
        None,
        gt=0,
        description="SMS spend per calendar month (UTC) in USD; the SMS channel pauses "
        "before a send could pass it (the price of SMS not yet priced is estimated).",
    )
    price_estimate_usd: float = Field(
        0.01,
        gt=0,
        description="Price assumed for an SMS before any of this month's receipts tell the "
        "average (the spend cap counts SMS not yet priced at the higher of the two).",
    )


class SmtpTls(enum.StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class SmtpSettings(_Section):
    host: str = Field("localhost", description="SMTP server host name.")
    port: int = Field(25, ge=1, le=65535, description="SMTP server port.")
    username: str | None = Field(None, description="Login user name, if the server needs one.")
    password: SecretStr | None = Field(None, description="Login password.")
    tls: SmtpTls = Field(SmtpTls.NONE, description="none, starttls or tls (implicit TLS).")
    timeout: float = Field(30.0, gt=0, description="Seconds for connecting and for one send.")
    pool_size: int = Field(8, ge=1, le=256, description="Persistent SMTP connections.")
    validate_certs: bool = Field(True, description="Verify the server's TLS certificate.")


class AwsSettings(_Section):
    region: str = Field("us-east-1", description="AWS region for SES and SNS.")
    endpoint_url: str | None = Field(None, description="Endpoint override for local fakes.")
    timeout: float = Field(10.0, gt=0, description="Seconds for one AWS API call.")


class SesSettings(_Section):
    configuration_set: str | None = Field(None, description="SES configuration set name.")


class FileSettings(_Section):
    dir: Path | None = Field(
        None, description="Where the file provider writes; default <data_dir>/outgoing."
    )
