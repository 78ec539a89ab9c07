"""Settings of the HTTP servers and what they serve: the public and admin servers
(``OUTBOXD_HTTP__*``), the SES feedback webhook (``OUTBOXD_FEEDBACK__*``) and the in-app
inbox routes (``OUTBOXD_INBOX__*``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from daemon.settings.base import ENV_PREFIX, _Section


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
