"""The whole settings tree and the rules that span its sections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from daemon.settings.base import ENV_PREFIX, postgres_dsn
from daemon.settings.campaigns import CampaignSettings, TrackingSettings
from daemon.settings.channels import (
    LOCAL_SEND_TIMEOUT,
    AwsSettings,
    EmailSettings,
    FileSettings,
    SesSettings,
    SmsSettings,
    SmtpSettings,
)
from daemon.settings.console import ConsoleSettings
from daemon.settings.hooks import HookSettings
from daemon.settings.http import FeedbackSettings, HttpSettings, InboxSettings
from daemon.settings.people import PeopleSettings
from daemon.settings.worker import DatabaseSettings, WorkerSettings
from outbox import resources


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
    inbox: InboxSettings = InboxSettings()
    worker: WorkerSettings = WorkerSettings()
    database: DatabaseSettings = DatabaseSettings()
    people: PeopleSettings = PeopleSettings()
    campaigns: CampaignSettings = CampaignSettings()
    tracking: TrackingSettings = TrackingSettings()
    hooks: HookSettings = HookSettings()
    console: ConsoleSettings = ConsoleSettings()

    @field_validator("secret_key", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir(cls, value: Path | None) -> Path | None:
        # Found at start-up rather than at the first message, which would fail for good.
        if value is not None and not value.is_dir():
            reason = "is not a directory" if value.exists() else "no such directory"
            if not value.is_absolute():
                reason += f" (looked for {value.resolve()})"
            raise ValueError(reason)
        return value

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        return postgres_dsn(value)

    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        # A row waits at most one send timeout for its turn, then renders and sends within
        # the render and send timeouts: a shorter lease would let another worker reclaim
        # a row mid-send and send it twice.
        timeout = self.max_send_timeout
        render = self.worker.render_timeout
        if self.worker.lease_seconds <= self.min_lease_seconds:
            source = " and ".join(
                sorted({self._timeout_variable(c) for c in ("email", "sms")} - {""})
            )
            raise ValueError(
                f"{ENV_PREFIX}WORKER__LEASE_SECONDS: {self.worker.lease_seconds:g} must exceed "
                f"twice the send timeout plus the render timeout ({timeout:g}s from {source}, "
                f"{render:g}s from {ENV_PREFIX}WORKER__RENDER_TIMEOUT: more than "
                f"{self.min_lease_seconds:g}s)"
            )
        return self

    @property
    def min_lease_seconds(self) -> float:
        """The longest a claimed row can take: waiting one send timeout, then rendering
        and sending within their timeouts."""
        return 2 * self.max_send_timeout + self.worker.render_timeout

    def send_timeout(self, channel: str) -> float:
        """Seconds one send through ``channel``'s provider may take."""
        if channel == "inapp":  # rendered and handed to the result write: no I/O
            return LOCAL_SEND_TIMEOUT
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
    def transaction_pooling(self) -> bool:
        """Whether OUTBOXD_DATABASE_URL is a transaction pooler (PgBouncer)."""
        return self.database.pool_mode == "transaction"

    @property
    def direct_dsn(self) -> str | None:
        """OUTBOXD_DATABASE__LISTEN_URL, if set."""
        url = self.database.listen_url
        return None if url is None else url.get_secret_value()

    def listen_dsn(self, dsn: str) -> str | None:
        """Where LISTEN (and migrations) connect: OUTBOXD_DATABASE__LISTEN_URL, else ``dsn``
        unless that is a transaction pooler (None: poll instead)."""
        if self.database.listen_url is not None:
            return self.database.listen_url.get_secret_value()
        return None if self.transaction_pooling else dsn

    @property
    def templates_path(self) -> Path:
        """The template directory: OUTBOXD_TEMPLATES_DIR, else the bundled templates."""
        return self.templates_dir or resources.bundled_templates_dir()

    @property
    def links_base_url(self) -> str:
        """Base URL of links in messages: OUTBOXD_PUBLIC_URL, else this daemon's address."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        return f"http://{self.http.host}:{self.http.port}"

    @property
    def file_dir(self) -> Path:
        return self.file.dir or self.data_dir / "outgoing"

    @property
    def brand(self) -> dict[str, Any]:
        """``brand`` in templates of messages without one: the keys a brand of
        ``outbox.brand`` has too, so that one template serves both."""
        return {
            "key": None,
            "name": self.brand_name,
            "url": self.brand_url,
            "address": self.brand_address,
            "logo_url": None,
            "colors": {},
        }
