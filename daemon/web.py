"""The aiohttp service: health, readiness and metrics (feedback and unsubscribe routes are
registered by their own modules)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from daemon import db, metrics, unsubscribe, webhook
from daemon.sns import SnsVerifier
from outbox.feedback_store import FeedbackStore

if TYPE_CHECKING:
    from daemon.main import Daemon

logger = logging.getLogger(__name__)

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
#: SNS messages are at most 256 KiB; nothing we accept is larger.
MAX_BODY = 256 * 1024


async def healthz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    if daemon.heartbeat_age() > max(daemon.settings.worker.poll_interval * 6, 60.0):
        return web.Response(status=503, text="claim loop stalled\n")
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    reasons = await readiness_problems(daemon)
    if reasons:
        return web.Response(status=503, text="\n".join(reasons) + "\n")
    return web.Response(text="ready\n")


async def readiness_problems(daemon: Daemon) -> list[str]:
    """Why the daemon should not receive traffic; empty when ready."""
    reasons: list[str] = []
    if daemon.stopping.is_set():
        reasons.append("stopping")
    store = daemon.store
    if store is None:
        reasons.append("starting")
        return reasons
    try:
        async with asyncio.timeout(2):
            current, expected = await db.schema_status(store.pool)
        if current != expected:
            reasons.append(f"schema version {current}, expected {expected}")
    except Exception as exc:  # any failure to reach the database means not ready
        reasons.append(f"database unreachable: {type(exc).__name__}")
    limit = max(daemon.settings.worker.poll_interval * 3, 30.0)
    age = daemon.heartbeat_age()
    if age > limit:
        reasons.append(f"claim loop last ran {age:.0f}s ago")
    for channel, reason in daemon.paused.items():
        reasons.append(f"channel {channel} paused: {reason}")
    return reasons


async def metrics_view(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def make_app(daemon: Daemon, client: aiohttp.ClientSession) -> web.Application:
    """The full HTTP service of ``daemon``; ``client`` serves outgoing requests."""
    settings = daemon.settings
    app = web.Application(client_max_size=MAX_BODY)
    app[DAEMON] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    assert daemon.store is not None
    feedback = FeedbackStore(daemon.store.pool)
    webhook.setup(
        app,
        verifier=SnsVerifier(
            topic_arns=settings.feedback.topic_arns,
            cert_dir=settings.feedback.cert_dir,
            http=client,
        ),
        feedback=feedback,
        confirmer=webhook.https_confirmer(client),
        transient_bounce_limit=settings.feedback.transient_bounce_limit,
    )
    unsubscribe.setup(app, keys=daemon.unsubscribe_keys, store=feedback)
    return app


async def start(stack: AsyncExitStack, daemon: Daemon) -> int:
    """Serve the app; the runner is cleaned up by ``stack``. Returns the bound port."""
    http = daemon.settings.http
    client = await stack.enter_async_context(aiohttp.ClientSession())
    runner = web.AppRunner(make_app(daemon, client), access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, http.host, http.port, reuse_port=True)
    await site.start()
    port: int = runner.addresses[0][1]
    logger.info("HTTP on %s:%d", http.host, port, extra={"action": "start"})
    return port
