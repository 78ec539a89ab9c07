"""A lean request path for one rest-json AWS operation: signed here, sent by aiohttp.

One aioboto3 ``send_email`` call costs about 1 ms of CPU, and the profile of a bare
aioboto3 loop against a local endpoint shows where: three quarters of it is the SDK's
machinery around the request (event hooks, endpoint ruleset resolution, parameter
validation, the user-agent string rebuilt and sanitised per call, the response parsed
through the service model), a quarter signing and sending it. Here the request body is
the JSON that botocore's rest-json serializer would make (the test suite holds the two to
the same bytes), signed with Signature Version 4 by :class:`Signer` with credentials from
the SDK's credential chain (refreshed as the SDK refreshes them), and an aiohttp session
sends it. Errors go through botocore's rest-json parser into a ``ClientError``, so that
they are classified exactly as the SDK's are.

The signer is ours because botocore's ``SigV4Auth.add_auth`` costs 150-300 us per request
(headers kept in an ``email.message.Message``, the URL split ten times, the signing key
derived anew each time), as much as the rest of outboxd's work for a message. This one
signs one fixed shape (a POST of JSON to a fixed path, no query) and keeps the day's
signing key; the test suite checks its signatures with botocore's ``SigV4Auth``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import aiohttp.helpers
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.parsers import create_parser
from yarl import URL


def _blob(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def body(params: dict[str, Any]) -> bytes:
    """The request body botocore's rest-json serializer makes for ``params`` (an
    operation whose members all go in the body; blobs base64-encoded)."""
    return json.dumps(params, default=_blob).encode("utf-8")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


class Signer:
    """AWS Signature Version 4 for POSTs of JSON to one URL without a query string."""

    def __init__(self, url: str, service: str, region: str) -> None:
        parts = urlsplit(url)
        if parts.query:
            raise ValueError("a query string is not signed here")
        default_port = {"http": 80, "https": 443}[parts.scheme]
        self.host = parts.hostname or ""
        if ":" in self.host:  # IPv6, bracketed as in the Host header
            self.host = f"[{self.host}]"
        if parts.port is not None and parts.port != default_port:
            self.host = f"{self.host}:{parts.port}"
        self.path = quote(parts.path or "/", safe="/~")
        self.service = service
        self.region = region
        self._key: tuple[str, str, bytes] | None = None  # (secret, day, signing key)

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key is None or self._key[:2] != (secret, day):
            key = _hmac(f"AWS4{secret}".encode(), day)
            for part in (self.region, self.service, "aws4_request"):
                key = _hmac(key, part)
            self._key = (secret, day, key)
        return self._key[2]

    def headers(self, payload: bytes, credentials: Any, now: float | None = None) -> dict[str, str]:
        """The headers that sign ``payload`` (``credentials``: access_key, secret_key, token)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        headers = {"content-type": "application/json", "host": self.host, "x-amz-date": stamp}
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        signed = ";".join(headers)  # already in sorted order
        canonical = "\n".join(
            [
                "POST",
                self.path,
                "",
                *(f"{name}:{value}" for name, value in headers.items()),
                "",
                signed,
                hashlib.sha256(payload).hexdigest(),
            ]
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = self._signing_key(credentials.secret_key, day)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        del headers["host"]  # aiohttp sends it, from the same URL
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers


class SignedJsonOperation:
    """Calls one rest-json operation (e.g. SES v2 ``SendEmail``) of an open aioboto3 client."""

    def __init__(self, client: Any, credentials: Any, operation: str, timeout: float) -> None:
        model = client.meta.service_model
        self.operation = model.operation_model(operation)
        self.name = operation
        self.url = client.meta.endpoint_url.rstrip("/") + self.operation.http["requestUri"]
        self.method = self.operation.http["method"]
        if self.method != "POST":
            raise ValueError(f"{operation} is not a POST")
        self.signer = Signer(self.url, model.signing_name, client.meta.region_name)
        #: The SDK's credentials object (refreshable ones refresh when they are due).
        self.credentials = credentials
        self._parser = create_parser(model.metadata["protocol"])
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}

    async def open(self) -> None:
        # HTTPS_PROXY and friends, as botocore honours them: read once here, where
        # aiohttp's trust_env would look them up in a thread for every request.
        with contextlib.suppress(LookupError):
            proxy, auth = aiohttp.helpers.get_env_proxy_for_url(URL(self.url))
            self._proxy = {"proxy": proxy, "proxy_auth": auth}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=128),
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
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
        payload = body(params)
        assert self._session is not None, "open() first"
        async with self._session.post(
            self.url,
            data=payload,
            headers=self.signer.headers(payload, frozen),
            allow_redirects=False,  # as the SDK: a redirect is an answer, not a new request
            **self._proxy,
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
