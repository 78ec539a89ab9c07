"""SNS signing certificates: which URLs may name one, and where it comes from.

A certificate URL must be exactly ``https://sns.<region>.amazonaws.com[.cn]/Simple
NotificationService-<id>.pem`` (ASCII, no user, port, query or fragment). With pinned
certificates (OUTBOXD_FEEDBACK__CERT_DIR) nothing is ever downloaded; otherwise a
certificate is downloaded once (concurrent requests share the download), kept in memory,
and a failed download is remembered for a minute so that a flood of messages naming a
missing certificate costs one request, not one per message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from cryptography import x509

logger = logging.getLogger(__name__)

#: AWS region names: us-east-1, eu-central-2, us-gov-west-1, cn-northwest-1, us-isob-east-1.
_REGION = r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}"
SNS_HOST = re.compile(rf"sns\.(?P<region>{_REGION})\.amazonaws\.com(?P<china>\.cn)?", re.ASCII)
_CERT_PATH = re.compile(r"/SimpleNotificationService-[A-Za-z0-9]{1,64}\.pem", re.ASCII)
MAX_CERT_BYTES = 64 * 1024
CACHE_SIZE = 32
FAILURE_SECONDS = 60.0
_MAX_FAILURES = 1024

#: Fetches a certificate URL (already checked) and returns its body.
Download = Callable[[str], Awaitable[bytes]]


class CertificateRefused(Exception):
    """The certificate cannot be used; the message says why (safe to show the sender)."""


def is_sns_host(host: str) -> bool:
    """Whether ``host`` is an SNS endpoint: ``sns.<region>.amazonaws.com`` (``.com.cn`` in
    the China regions, and only there)."""
    match = SNS_HOST.fullmatch(host)
    return match is not None and match["region"].startswith("cn-") == bool(match["china"])


def cert_file_name(url: object) -> str:
    """The certificate's file name if ``url`` is an SNS signing-certificate URL."""
    if not isinstance(url, str) or len(url) > 256 or not url.isascii():
        raise CertificateRefused("SigningCertURL is not an SNS certificate URL")
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    path = slash + path
    # Compared as plain text: whatever a URL parser would make of '@', ':', '\\', '%'
    # or a trailing newline, none of them can be part of an accepted URL.
    if (scheme, sep) != ("https", "://") or not is_sns_host(host) or not _CERT_PATH.fullmatch(path):
        raise CertificateRefused("SigningCertURL is not an SNS certificate URL")
    return path[1:]


def http_download(session: aiohttp.ClientSession, timeout: float = 5.0) -> Download:
    """Downloads through ``session``: no redirects, at most :data:`MAX_CERT_BYTES`."""

    async def download(url: str) -> bytes:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            async with session.get(url, allow_redirects=False, timeout=client_timeout) as response:
                if response.status != 200:
                    raise CertificateRefused(
                        f"signing certificate download answered {response.status}"
                    )
                data = await response.content.read(MAX_CERT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CertificateRefused("signing certificate could not be downloaded") from exc
        if len(data) > MAX_CERT_BYTES:
            raise CertificateRefused("signing certificate is too large")
        return data

    return download


class Certificates:
    """Where verified messages get their signing certificates."""

    def __init__(
        self,
        *,
        cert_dir: Path | None = None,
        download: Download | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_dir = cert_dir
        self.download = download
        self.now = now
        self.monotonic = monotonic
        self._loaded: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._failed: dict[str, tuple[float, str]] = {}
        self._pending: dict[str, asyncio.Future[x509.Certificate]] = {}

    async def get(self, url: str) -> x509.Certificate:
        """The certificate ``url`` names, valid now; or :class:`CertificateRefused`."""
        file_name = cert_file_name(url)
        cert = self._loaded.get(url)
        if cert is None:
            if self.cert_dir is not None:
                cert = self._pinned(file_name)
            else:
                cert = await self._downloaded(url)
            self._remember(url, cert)
        if not cert.not_valid_before_utc <= self.now() <= cert.not_valid_after_utc:
            raise CertificateRefused("signing certificate is expired or not yet valid")
        return cert

    def _pinned(self, file_name: str) -> x509.Certificate:
        assert self.cert_dir is not None
        path = self.cert_dir / file_name
        if not path.is_file():
            # Not remembered: pinning the file makes the next message verify.
            raise CertificateRefused(
                "signing certificate is not pinned in OUTBOXD_FEEDBACK__CERT_DIR"
            )
        return _load(path.read_bytes())

    async def _downloaded(self, url: str) -> x509.Certificate:
        failed = self._failed.get(url)
        if failed is not None:
            until, reason = failed
            if self.monotonic() < until:
                raise CertificateRefused(reason)
            del self._failed[url]
        if self.download is None:
            raise CertificateRefused("signing certificate is not pinned and downloads are off")
        pending = self._pending.get(url)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(url, self.download))
            self._pending[url] = pending
            pending.add_done_callback(lambda done: self._settled(url, done))
        # Shielded: one caller giving up must not cancel the download the others wait on.
        return await asyncio.shield(pending)

    async def _fetch(self, url: str, download: Download) -> x509.Certificate:
        try:
            cert = _load(await download(url))
        except CertificateRefused as exc:
            self._remember_failure(url, exc)
            raise
        except Exception as exc:  # whatever the download did, the sender gets a 403
            refused = CertificateRefused("signing certificate could not be downloaded")
            self._remember_failure(url, refused)
            raise refused from exc
        logger.info("downloaded SNS signing certificate %s", url, extra={"action": "webhook"})
        return cert

    def _remember_failure(self, url: str, refused: CertificateRefused) -> None:
        self._failed[url] = (self.monotonic() + FAILURE_SECONDS, str(refused))
        while len(self._failed) > _MAX_FAILURES:
            self._failed.pop(next(iter(self._failed)))
        logger.warning("SNS signing certificate refused: %s", refused, extra={"action": "webhook"})

    def _settled(self, url: str, done: asyncio.Future[x509.Certificate]) -> None:
        self._pending.pop(url, None)
        if not done.cancelled():
            done.exception()  # retrieved here, in case every waiter has given up

    def _remember(self, url: str, cert: x509.Certificate) -> None:
        self._loaded[url] = cert
        self._loaded.move_to_end(url)
        while len(self._loaded) > CACHE_SIZE:
            self._loaded.popitem(last=False)


def _load(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateRefused("signing certificate is not a PEM certificate") from exc
