"""The settings tree, read once from the environment (prefix ``OUTBOXD_``, nesting ``__``).

Nothing else in outboxd reads ``os.environ``: the tree is built at start-up and passed
down. :func:`load` turns validation errors into one line naming the variable.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from outbox import errors

ENV_PREFIX = "OUTBOXD_"
#: The file and null providers never wait on a network; this bounds a stuck disk.
LOCAL_SEND_TIMEOUT = 2.0
_SECRET_FIELDS = frozenset({"password", "secret_key", "database_url"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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


class SmsSettings(_Section):
    provider: SmsProviderName = Field(SmsProviderName.FILE, description="Which provider sends SMS.")
    rate: float = Field(0.0, ge=0, description="Max SMS per second for the whole cluster.")
    sender_id: str | None = Field(None, description="Alphanumeric SenderID, where supported.")
    max_price: float | None = Field(None, gt=0, description="Max price per SMS in USD (SNS).")


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
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8025, ge=0, le=65535, description="Port the HTTP server binds; 0 = any.")
    enabled: bool = Field(True, description="Serve HTTP at all.")


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
    grace_seconds: float = Field(
        30.0, ge=0, description="On shutdown, how long in-flight sends may take to finish."
    )
    reap_interval: float = Field(10.0, gt=0, description="Seconds between lease-expiry sweeps.")
    pause_seconds: float = Field(
        60.0,
        gt=0,
        description="A paused channel (e.g. SES sending paused) probes again after this.",
    )
    retention_days: float | None = Field(
        None, gt=0, description="Purge finished messages older than this; unset = keep."
    )

    @model_validator(mode="after")
    def _retry_bounds(self) -> WorkerSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(
                f"{ENV_PREFIX}WORKER__RETRY_MAX_SECONDS: must be >= "
                f"{ENV_PREFIX}WORKER__RETRY_BASE_SECONDS"
            )
        return self


class Settings(BaseSettings):
    """Everything outboxd can be told, from ``OUTBOXD_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(
        None, description="PostgreSQL DSN; unset = embedded PostgreSQL under data_dir."
    )
    data_dir: Path = Field(Path(".outboxd"), description="Embedded database and default outbox.")
    templates_dir: Path | None = Field(None, description="Template directory; unset = bundled.")
    public_url: AnyHttpUrl | None = Field(None, description="Base URL for unsubscribe links.")
    secret_key: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="HMAC keys for unsubscribe tokens, comma-separated; the first signs."
    )
    migrate_on_start: bool = Field(True, description="`run` applies pending migrations first.")
    log_format: Literal["auto", "text", "json"] = Field("auto", description="Log output format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    brand_name: str = Field("outboxd", description="Brand name shown in templates.")
    brand_url: str = Field("https://example.com", description="Brand home page for templates.")
    brand_address: str = Field("", description="Postal address shown in email footers.")

    email: EmailSettings = EmailSettings()
    sms: SmsSettings = SmsSettings()
    smtp: SmtpSettings = SmtpSettings()
    aws: AwsSettings = AwsSettings()
    ses: SesSettings = SesSettings()
    file: FileSettings = FileSettings()
    http: HttpSettings = HttpSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    worker: WorkerSettings = WorkerSettings()

    @field_validator("secret_key", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgres://", "postgresql://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        # A lease shorter than one send lets another worker reclaim a row mid-send.
        timeout = self.max_send_timeout
        if self.worker.lease_seconds <= timeout * 2:
            source = " and ".join(
                sorted({self._timeout_variable(c) for c in ("email", "sms")} - {""})
            )
            raise ValueError(
                f"{ENV_PREFIX}WORKER__LEASE_SECONDS: {self.worker.lease_seconds:g} must exceed "
                f"twice the send timeout ({timeout:g}s, from {source})"
            )
        return self

    def send_timeout(self, channel: str) -> float:
        """Seconds one send through ``channel``'s provider may take."""
        provider = self.email.provider if channel == "email" else self.sms.provider
        if provider == "smtp":
            return self.smtp.timeout
        if provider in ("ses", "sns"):
            return self.aws.timeout
        return LOCAL_SEND_TIMEOUT

    @property
    def max_send_timeout(self) -> float:
        return max(self.send_timeout("email"), self.send_timeout("sms"))

    def _timeout_variable(self, channel: str) -> str:
        provider = self.email.provider if channel == "email" else self.sms.provider
        if provider == "smtp":
            return f"{ENV_PREFIX}SMTP__TIMEOUT"
        if provider in ("ses", "sns"):
            return f"{ENV_PREFIX}AWS__TIMEOUT"
        return f"the {provider} provider's {LOCAL_SEND_TIMEOUT:g}s"

    @property
    def file_dir(self) -> Path:
        return self.file.dir or self.data_dir / "outgoing"

    @property
    def brand(self) -> dict[str, str]:
        return {"name": self.brand_name, "url": self.brand_url, "address": self.brand_address}


def env_name(location: tuple[int | str, ...]) -> str:
    """The environment variable for a pydantic error location, e.g. OUTBOXD_EMAIL__RATE."""
    parts = [str(p) for p in location if not isinstance(p, int)]
    if parts == ["email", "from"] or parts == ["email", "sender"]:
        parts = ["email", "from"]
    return ENV_PREFIX + "__".join(p.upper() for p in parts) if parts else ENV_PREFIX + "*"


def describe(exc: ValidationError) -> str:
    """One line naming the first bad variable, without echoing secret values."""
    err = exc.errors()[0]
    location = tuple(err.get("loc", ()))
    name = env_name(location)
    message = err.get("msg", "invalid value").removeprefix("Value error, ")
    field_name = str(location[-1]) if location else ""
    if field_name not in _SECRET_FIELDS and "input" in err and isinstance(err["input"], str):
        return f"invalid setting {name}: {message} (got {err['input']!r})"
    if not location or location == ("worker",):
        return f"invalid setting {message}"
    return f"invalid setting {name}: {message}"


#: systemd credentials (LoadCredential=NAME:...) -> the setting they provide.
CREDENTIALS = {
    "secret_key": ("secret_key",),
    "database_url": ("database_url",),
    "smtp_password": ("smtp", "password"),
}


def credentials(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings read from ``$CREDENTIALS_DIRECTORY`` (systemd), for unset variables only."""
    environ = os.environ if environ is None else environ
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    found: dict[str, Any] = {}
    for name, path in CREDENTIALS.items():
        file = Path(directory) / name
        if env_name(path) in environ or not file.is_file():
            continue
        value = file.read_text(encoding="utf-8").strip()
        if len(path) == 1:
            found[path[0]] = value
        else:
            found.setdefault(path[0], {})[path[1]] = value
    return found


def load(**overrides: Any) -> Settings:
    """Read the settings; raise :class:`ConfigurationError` with a one-line reason."""
    try:
        return Settings(**{**credentials(), **overrides})
    except ValidationError as exc:
        raise errors.ConfigurationError(describe(exc)) from exc
