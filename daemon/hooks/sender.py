"""One signed POST of one event to one endpoint, and what its answer means.

The URL is checked (:mod:`daemon.feedback.outbound`) before anything is sent: an IP
literal at once, a name by the session's resolver before it connects. Redirects are not
followed (a 3xx is a failure, like any other answer but 2xx), and no more than a bounded
piece of the answer is read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from daemon.addresses import mask_text
from daemon.feedback import outbound
from daemon.hooks import signing
from daemon.hooks.store import Delivery, Endpoint

USER_AGENT = "outboxd-webhooks/1"


@dataclass(frozen=True, slots=True)
class Answer:
    """How one POST went: ``delivered`` on 2xx; ``refused`` when the URL may never be
    posted to as it is (retrying cannot help until an operator changes it)."""

    delivered: bool
    http_status: int | None = None
    error: str | None = None
    refused: bool = False


def open_session(allow: outbound.Allowlist, *, limit: int = 100) -> aiohttp.ClientSession:
    """A session whose every connect goes through the SSRF guard's resolver."""
    connector = aiohttp.TCPConnector(
        resolver=outbound.GuardedResolver(allow), limit=limit, limit_per_host=0, ttl_dns_cache=60
    )
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)


async def post(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    delivery: Delivery,
    *,
    allow: outbound.Allowlist,
    seconds: float,
    max_body_bytes: int,
) -> Answer:
    """POST ``delivery`` to ``endpoint``, signed now, waiting ``seconds`` at most."""
    try:
        outbound.check_url(endpoint.url, allow)
    except outbound.UrlRefused as exc:
        return Answer(False, error=f"URL refused: {exc}", refused=True)
    payload = signing.body(delivery.event_id, delivery.type, delivery.created_at, delivery.data)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.HEADER: signing.sign(endpoint.secret, payload, int(time.time())),
        "Outboxd-Event-Id": delivery.event_id,
    }
    try:
        async with session.post(
            endpoint.url,
            data=payload,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            answer = await response.content.read(max_body_bytes)
            status = response.status
    except TimeoutError:
        return Answer(False, error=f"no answer within {seconds:g}s")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, outbound.AddressRefused):
            return Answer(False, error=f"URL refused: {exc.os_error}")
        return Answer(False, error=mask_text(f"{type(exc).__name__}: {exc}")[:300])
    except (aiohttp.ClientError, OSError) as exc:
        return Answer(False, error=mask_text(f"{type(exc).__name__}: {exc}")[:300])
    if 200 <= status < 300:
        return Answer(True, http_status=status)
    said = answer[:200].decode("utf-8", "replace").strip()
    return Answer(False, http_status=status, error=mask_text(f"HTTP {status}: {said}".strip()))
