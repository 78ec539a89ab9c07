"""The aiohttp service: assembles the route groups and serves them."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import aiohttp
from aiohttp import web

from daemon.feedback import certificates
from daemon.feedback.envelope import SnsVerifier
from daemon.feedback.store import FeedbackStore
from daemon.http import health, html, preferences, unsubscribe, webhooks
from daemon.http.state import ServiceState
from daemon.people.profiles import PeopleStore
from daemon.settings import ENV_PREFIX
from outbox import errors

logger = logging.getLogger(__name__)

#: SNS messages are at most 256 KiB; nothing we accept is larger.
MAX_BODY = 256 * 1024


def make_app(state: ServiceState, client: aiohttp.ClientSession) -> web.Application:
    """The full HTTP service; ``client`` serves outgoing requests."""
    settings = state.settings
    app = web.Application(client_max_size=MAX_BODY)
    health.setup(app, state)
    feedback = FeedbackStore(state.store.pool)
    webhooks.setup(
        app,
        verifier=SnsVerifier(
            topic_arns=settings.feedback.topic_arns,
            cert_dir=settings.feedback.cert_dir,
            download=certificates.http_download(client),
        ),
        feedback=feedback,
        confirmer=webhooks.https_confirmer(client),
        transient_bounce_limit=settings.feedback.transient_bounce_limit,
    )
    tokens = unsubscribe.TokenRules(
        keys=list(state.signing_keys),
        max_age_seconds=settings.http.unsubscribe_token_days * unsubscribe.DAY,
        legacy_max_age_seconds=settings.http.legacy_token_days * unsubscribe.DAY,
    )
    unsubscribe.setup(app, tokens=tokens, store=feedback)
    preferences.setup(
        app,
        keys=state.signing_keys,
        store=PeopleStore(state.store.pool),
        categories=settings.people.categories,
    )
    app.on_response_prepare.append(html.add_safety_headers)
    return app


async def start(stack: AsyncExitStack, state: ServiceState) -> int:
    """Serve the app; the runner is cleaned up by ``stack``. Returns the bound port."""
    http = state.settings.http
    client = await stack.enter_async_context(aiohttp.ClientSession())
    runner = web.AppRunner(make_app(state, client), access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    # No reuse_port: a second daemon on the same port would silently get half of the
    # requests (split metrics, unsubscribe tokens of the other's keys).
    site = web.TCPSite(runner, http.host, http.port)
    try:
        await site.start()
    except OSError as exc:
        raise errors.ConfigurationError(
            f"invalid setting {ENV_PREFIX}HTTP__PORT: cannot listen on {http.host}:{http.port}: "
            f"{exc.strerror or exc} (another outboxd running? set {ENV_PREFIX}HTTP__PORT, or "
            f"{ENV_PREFIX}HTTP__ENABLED=false)"
        ) from exc
    port: int = runner.addresses[0][1]
    logger.info("HTTP on %s:%d", http.host, port, extra={"action": "start"})
    return port
