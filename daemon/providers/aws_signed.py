"""A lean request path for one rest-json AWS operation: botocore signs, aiohttp sends.

One aioboto3 ``send_email`` call costs about 1 ms of CPU, and the profile of a bare
aioboto3 loop against a local endpoint shows where: three quarters of it is the SDK's
machinery around the request (event hooks, endpoint ruleset resolution, parameter
validation, the user-agent string rebuilt and sanitised per call, the response parsed
through the service model), a quarter signing and sending it. Here the request body is
the JSON that botocore's rest-json serializer would make (the test suite holds the two to
the same bytes), botocore's own ``SigV4Auth`` signs it with credentials from the SDK's
credential chain (refreshed as the SDK refreshes them), and an aiohttp session sends it.
Errors go through botocore's rest-json parser into a ``ClientError``, so that they are
classified exactly as the SDK's are.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.parsers import create_parser

_JSON = {"Content-Type": "application/json"}


def _blob(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def body(params: dict[str, Any]) -> bytes:
    """The request body botocore's rest-json serializer makes for ``params`` (an
    operation whose members all go in the body; blobs base64-encoded)."""
    return json.dumps(params, default=_blob).encode("utf-8")


class SignedJsonOperation:
    """Calls one rest-json operation (e.g. SES v2 ``SendEmail``) of an open aioboto3 client."""

    def __init__(self, client: Any, credentials: Any, operation: str, timeout: float) -> None:
        model = client.meta.service_model
        self.operation = model.operation_model(operation)
        self.name = operation
        self.url = client.meta.endpoint_url.rstrip("/") + self.operation.http["requestUri"]
        self.method = self.operation.http["method"]
        self.signing_name = model.signing_name
        self.region = client.meta.region_name
        #: The SDK's credentials object (refreshable ones refresh when they are due).
        self.credentials = credentials
        self._parser = create_parser(model.metadata["protocol"])
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=128),
            timeout=self._timeout,
            trust_env=True,  # HTTPS_PROXY and friends, as botocore honours them
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parsed JSON answer; raises ``ClientError`` as the SDK would."""
        if self.credentials is None:
            raise NoCredentialsError()
        frozen = await self.credentials.get_frozen_credentials()
        request = AWSRequest(self.method, self.url, data=body(params), headers=dict(_JSON))
        SigV4Auth(frozen, self.signing_name, self.region).add_auth(request)
        assert self._session is not None, "open() first"
        async with self._session.request(
            self.method, self.url, data=request.body, headers=dict(request.headers.items())
        ) as response:
            raw = await response.read()
            if response.status < 300:
                answer: dict[str, Any] = json.loads(raw) if raw else {}
                return answer
            headers = dict(response.headers.items())
        parsed = self._parser.parse(
            {"status_code": response.status, "headers": headers, "body": raw},
            self.operation.output_shape,
        )
        raise ClientError(parsed, self.name)
