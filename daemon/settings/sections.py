"""The sections of the settings tree (``OUTBOXD_<SECTION>__<FIELD>``)."""

from __future__ import annotations

import email.errors
import email.policy
import enum
import re
from pathlib import Path
from typing import Annotated, Any

import email_validator
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

ENV_PREFIX = "OUTBOXD_"
#: The file and null providers never wait on a network; this bounds a stuck disk.
LOCAL_SEND_TIMEOUT = 2.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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


class HttpSettings(_Section):
    host: str = Field(
        "127.0.0.1", description="Address the public HTTP server (webhook, unsubscribe) binds."
    )
    port: int = Field(8025, ge=0, le=65535, description="Port the HTTP server binds; 0 = any.")
    enabled: bool = Field(True, description="Serve HTTP at all.")
    admin_host: str = Field(
        "127.0.0.1",
        description="Address of the admin server (/metrics, detailed /readyz); keep it private.",
    )
    admin_port: int = Field(8026, ge=0, le=65535, description="Port of the admin server; 0 = any.")
    max_connections: int = Field(
        512,
        ge=1,
        le=100_000,
        description="Open connections the public server holds at most; at the cap, the one "
        "idle longest is closed for a new one (the file-descriptor limit is raised to its "
        "maximum at start and this is kept to a quarter of it).",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a complete request head (also the idle "
        "keep-alive time) before the connection is closed.",
    )
    body_timeout: float = Field(
        30.0, gt=0, description="Seconds a client has to send a request body (else 408)."
    )
    unsubscribe_token_days: float = Field(
        365.0, gt=0, description="How long an unsubscribe link works after it was sent."
    )
    legacy_token_days: float = Field(
        90.0,
        ge=0,
        description="How long unsubscribe links of the earlier format (with the address in "
        "them) keep working after they were sent; 0 refuses them.",
    )

    @field_validator("admin_port")
    @classmethod
    def _off_the_public_port(cls, port: int, info: ValidationInfo) -> int:
        public = (info.data.get("host"), info.data.get("port"))
        if port and (info.data.get("admin_host"), port) == public:
            raise ValueError(
                f"must differ from {ENV_PREFIX}HTTP__PORT on the same host "
                "(metrics and health details stay off the public port)"
            )
        return port


class FeedbackSettings(_Section):
    topic_arns: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="SNS topics accepted by the webhook."
    )
    cert_dir: Path | None = Field(None, description="Pinned SNS signing certificates.")
    transient_bounce_limit: int = Field(
        3, ge=1, description="Transient bounces after which a recipient is suppressed."
    )

    @field_validator("topic_arns", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


class PeopleSettings(_Section):
    hourly_cap: int | None = Field(
        None,
        ge=1,
        description=(
            "Most non-transactional, non-urgent notifications one person gets per hour; "
            "the excess is deferred to the next hour with room. Unset: no cap. Written to "
            "outbox.people_setting at start-up, so every outbox.notify() sees it."
        ),
    )
    categories: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "Categories a person's preference page always shows, comma-separated, besides "
            "those the person has switches for and the one of the message they came from."
        ),
    )

    digest_interval: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Longest pause between digest flushes, in seconds; the flush also wakes "
        "when the next digest window closes.",
    )
    digest_batch: int = Field(
        1000, ge=1, le=10_000, description="Digest groups folded per transaction."
    )
    schedule_catch_up: int = Field(
        1,
        ge=1,
        le=1000,
        description="How many missed occurrences of a schedule a daemon that was down still "
        "sends (the newest); older ones are skipped and logged.",
    )
    schedule_batch: int = Field(
        200, ge=1, le=10_000, description="Schedules fired per transaction."
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, tuple | list) and any(
            c in ("*", "transactional") or len(c) > 100 for c in value
        ):
            raise ValueError("must be category names (not '*' or 'transactional')")
        return value


class InboxSettings(_Section):
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Web origins (scheme://host[:port], comma-separated) whose pages may call "
        "the inbox routes and open its event stream (CORS).",
    )
    heartbeat_seconds: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Seconds between comment lines on idle event streams, so that proxies "
        "and load balancers keep them open.",
    )
    max_streams: int = Field(
        10_000, ge=1, description="Event streams one process serves at once; more get 503."
    )
    stream_buffer: int = Field(
        256 * 1024,
        ge=4096,
        description="Bytes of events one stream client may be behind (unsent); a client that "
        "falls further behind is disconnected and catches up when it reconnects "
        "(Last-Event-ID).",
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(_origin(str(v)) for v in value)


_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


def _origin(value: str) -> str:
    """An origin as browsers send it in the Origin header; anything else is refused."""
    origin = value.strip().lower()
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(
            f"{value.strip()!r} is not an origin: expected scheme://host[:port] such as "
            "https://app.example.com, without a path or trailing slash"
        )
    return origin


class PoolMode(enum.StrEnum):
    SESSION = "session"
    TRANSACTION = "transaction"


class DatabaseSettings(_Section):
    """How outboxd talks to PostgreSQL (the DSN itself is OUTBOXD_DATABASE_URL)."""

    pool_mode: PoolMode = Field(
        PoolMode.SESSION,
        description=(
            "`session`: OUTBOXD_DATABASE_URL is PostgreSQL itself (or a session pooler). "
            "`transaction`: it is a transaction pooler such as PgBouncer in pool_mode="
            "transaction: no prepared statements are kept, no settings are sent at connect "
            "(set statement_timeout on the role), and LISTEN goes to LISTEN_URL."
        ),
    )
    listen_url: SecretStr | None = Field(
        None,
        description=(
            "A direct PostgreSQL DSN for LISTEN (new-message wake-ups, in-app streams) and "
            "for migrations. Unset: OUTBOXD_DATABASE_URL in session mode; in transaction "
            "mode the claim loops poll every OUTBOXD_WORKER__POLL_INTERVAL and in-app live "
            "streams are unavailable."
        ),
    )

    @field_validator("listen_url")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgres://", "postgresql://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value


class WorkerSettings(_Section):
    concurrency: int = Field(
        256,
        ge=1,
        le=10_000,
        description="Sends in flight per channel (SMTP: at most 4 per pooled connection).",
    )
    processes: int = Field(
        1, ge=1, le=64, description="Daemon processes `run` starts (one per core is sensible)."
    )
    batch_size: int = Field(200, ge=1, le=10_000, description="Max rows per claim.")
    lease_seconds: float = Field(
        120.0, gt=0, description="How long a claimed row stays leased before it is reclaimed."
    )
    max_attempts: int = Field(8, ge=1, description="Attempts before a message is failed.")
    retry_base_seconds: float = Field(5.0, gt=0, description="First retry delay (upper bound).")
    retry_max_seconds: float = Field(3600.0, gt=0, description="Cap on the retry delay.")
    poll_interval: float = Field(
        5.0, gt=0, description="Seconds between polls when no NOTIFY arrives."
    )
    render_timeout: float = Field(
        0.5,
        gt=0,
        description=(
            "Seconds one message's templates may take to render; over it, the message "
            "fails for good (a runaway template)."
        ),
    )
    grace_seconds: float = Field(
        30.0, ge=0, description="On shutdown, how long in-flight sends may take to finish."
    )
    reap_interval: float = Field(10.0, gt=0, description="Seconds between lease-expiry sweeps.")
    pause_seconds: float = Field(
        60.0,
        gt=0,
        description=(
            "A paused channel (e.g. SES sending paused, a full disk) probes again after an "
            "eighth of this, then twice as long after each failed probe, up to this."
        ),
    )
    retention_days: float | None = Field(
        None, gt=0, description="Purge finished messages older than this; unset = keep."
    )
    archive_after_hours: float | None = Field(
        24.0,
        ge=0,
        description=(
            "Move messages finished longer ago than this out of outbox.message into the "
            "monthly outbox.message_archive (see outbox.message_all); unset = never."
        ),
    )
    idempotency_days: float = Field(
        30.0,
        gt=0,
        description=(
            "How long an archived message's idempotency key still refuses a second enqueue "
            "(kept even after its archive partition is dropped)."
        ),
    )

    @model_validator(mode="after")
    def _retry_bounds(self) -> WorkerSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(
                f"{ENV_PREFIX}WORKER__RETRY_MAX_SECONDS: must be >= "
                f"{ENV_PREFIX}WORKER__RETRY_BASE_SECONDS"
            )
        return self
