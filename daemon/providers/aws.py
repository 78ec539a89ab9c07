"""What AWS providers share: client construction and THE error-classification table."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from daemon.providers.base import ProviderBase
from daemon.settings import AwsSettings
from outbox import errors

#: Error code (with any "Exception" suffix removed) -> what it means for the message.
#: Account-level failures (paused sending, bad credentials, missing permissions) pause the
#: channel: every other send would fail the same way, so no attempt is used up.
CLASSIFICATION: dict[str, type[errors.OutboxError]] = {
    # Slow down and retry later without using an attempt.
    "TooManyRequests": errors.Throttled,
    "Throttling": errors.Throttled,
    "Throttled": errors.Throttled,
    "LimitExceeded": errors.Throttled,
    "KMSThrottling": errors.Throttled,
    "RequestLimitExceeded": errors.Throttled,
    # The account cannot send at all right now.
    "SendingPaused": errors.ChannelPaused,
    "AccountSuspended": errors.ChannelPaused,
    "AccessDenied": errors.ChannelPaused,
    "AuthorizationError": errors.ChannelPaused,
    "InvalidClientTokenId": errors.ChannelPaused,
    "UnrecognizedClient": errors.ChannelPaused,
    "SignatureDoesNotMatch": errors.ChannelPaused,
    "ExpiredToken": errors.ChannelPaused,
    "InvalidSecurity": errors.ChannelPaused,
    "KMSAccessDenied": errors.ChannelPaused,
    "KMSDisabled": errors.ChannelPaused,
    # This message can never be sent.
    "MessageRejected": errors.PermanentError,
    "MailFromDomainNotVerified": errors.PermanentError,
    "BadRequest": errors.PermanentError,
    "InvalidParameter": errors.PermanentError,
    "InvalidParameterValue": errors.PermanentError,
    "Validation": errors.PermanentError,
    "NotFound": errors.PermanentError,
    "OptedOut": errors.PermanentError,
    "EndpointDisabled": errors.PermanentError,
    # AWS had a problem: retry with backoff.
    "InternalFailure": errors.TransientError,
    "InternalError": errors.TransientError,
    "InternalServiceError": errors.TransientError,
    "ServiceUnavailable": errors.TransientError,
    "ConcurrentModification": errors.TransientError,
}


def _normalise(code: str) -> str:
    return code.removesuffix("Exception")


def classify(exc: BaseException, service: str) -> errors.OutboxError:
    """The decision for an exception raised by an AWS call."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        text = f"{service} {code}: {error.get('Message', '')}".rstrip(": ")
        decision = CLASSIFICATION.get(_normalise(code))
        if decision is None:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
            if status == 429:
                decision = errors.Throttled
            elif 400 <= status < 500:
                decision = errors.PermanentError
            else:
                decision = errors.TransientError
        return decision(text)
    if isinstance(exc, BotoCoreError | aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return errors.TransientError(f"{service} {type(exc).__name__}: {exc}")
    return errors.TransientError(f"{service} unexpected {type(exc).__name__}: {exc}")


def client(
    service: str, aws: AwsSettings, session: aioboto3.Session | None = None
) -> AbstractAsyncContextManager[Any]:
    """A long-lived aioboto3 client; enter it once per process.

    botocore makes a single attempt ("standard" mode, ``max_attempts=1``): its own retries
    would sleep through throttling unseen by the cluster-wide rate limiter, and could outlast
    the send timeout. Our retry policy (attempts, backoff with jitter, throttling without
    using attempts) is in charge instead.
    """
    config = Config(
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=aws.timeout,
        read_timeout=aws.timeout,
        max_pool_connections=128,
    )
    session = session or aioboto3.Session()
    context: AbstractAsyncContextManager[Any] = session.client(
        service, region_name=aws.region, endpoint_url=aws.endpoint_url, config=config
    )
    return context


class AwsProvider(ProviderBase):
    """Base for providers holding one long-lived aioboto3 client of ``service``."""

    service = ""
    #: Sends in flight per process. A call costs ~1 ms of CPU, so one process tops out
    #: near 1,000/s; at AWS's ~50 ms per call, 64 in flight already reach that. More would
    #: add no speed, only sends that a crash leaves unrecorded and a restart repeats
    #: (measured, 2 processes killed 5 times: 256 in flight 6.0 % duplicates, 64: 3.1 %).
    max_in_flight = 64

    def __init__(self, aws_settings: AwsSettings) -> None:
        self.aws = aws_settings
        self._stack = AsyncExitStack()
        self._session = aioboto3.Session()
        self._client: Any = None

    async def open(self) -> None:
        self._client = await self._stack.enter_async_context(
            client(self.service, self.aws, self._session)
        )

    async def close(self) -> None:
        await self._stack.aclose()
