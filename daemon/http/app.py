"""The HTTP service: the public server (what SNS and recipients need) and the admin server
(what operators need), each behind a :class:`~daemon.http.connections.ConnectionGuard`."""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

from daemon.campaigns.store import CampaignStore
from daemon.feedback import certificates
from daemon.feedback.envelope import SnsVerifier
from daemon.feedback.store import FeedbackStore
from daemon.http import (
    admin,
    confirm,
    health,
    html,
    inbox,
    preferences,
    tracking,
    unsubscribe,
    webhooks,
)
from daemon.http.connections import GUARD, LISTEN_BACKLOG, ConnectionGuard
from daemon.http.file_limits import connection_budget, raise_file_limit
from daemon.http.state import ServiceState
from daemon.people.profiles import PeopleStore
from daemon.settings import ENV_PREFIX
from outbox import errors

logger = logging.getLogger(__name__)

#: SNS messages are at most 256 KiB; nothing we accept is larger.
MAX_BODY = 256 * 1024
LINGERING_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Ports:
    """Where the HTTP service listens (the bound ports, when 0 asked for any)."""

    public: int
    admin: int


def make_app(state: ServiceState, client: aiohttp.ClientSession) -> web.Application:
    """The public service (webhook, unsubscribe, bare health); ``client`` serves outgoing
    requests."""
    settings = state.settings
    app = web.Application(client_max_size=MAX_BODY)
    health.setup_public(app, state)
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
    inbox.setup(app, state)
    campaigns = CampaignStore(state.store.pool)
    confirm.setup(app, keys=state.signing_keys, store=campaigns)
    tracking.setup(app, keys=state.signing_keys, store=campaigns)
    app.on_response_prepare.append(html.add_safety_headers)
    return app


async def start(stack: AsyncExitStack, state: ServiceState) -> Ports:
    """Serve both servers; ``stack`` closes them. Returns the bound ports."""
    http = state.settings.http
    files = raise_file_limit()
    client = await stack.enter_async_context(aiohttp.ClientSession())
    public = ConnectionGuard(
        name="public",
        limit=connection_budget(http.max_connections, files),
        head_timeout=http.header_timeout,
        body_timeout=http.body_timeout,
    )
    public_port = await _serve(
        stack, make_app(state, client), public, http.host, http.port, "HTTP__PORT"
    )
    operators = ConnectionGuard(
        name="admin",
        limit=admin.MAX_CONNECTIONS,
        head_timeout=http.header_timeout,
        body_timeout=http.body_timeout,
    )
    admin_port = await _serve(
        stack,
        admin.make_app(state),
        operators,
        http.admin_host,
        http.admin_port,
        "HTTP__ADMIN_PORT",
    )
    logger.info(
        "HTTP on %s:%d, admin (metrics, health details) on %s:%d",
        http.host, public_port, http.admin_host, admin_port, extra={"action": "start"},
    )  # fmt: skip
    return Ports(public_port, admin_port)


async def _serve(
    stack: AsyncExitStack,
    app: web.Application,
    guard: ConnectionGuard,
    host: str,
    port: int,
    variable: str,
) -> int:
    app.middlewares.insert(0, guard.middleware)
    app[GUARD] = guard
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # aiohttp's own idle limit, also before the first request: the guard's deadline.
        keepalive_timeout=guard.head_timeout,
        # How long a body left unread is drained before closing (aiohttp: 10 s, which a
        # client that trickles a body after its 408 would hold a connection for).
        lingering_time=LINGERING_SECONDS,
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    # No reuse_port: a second daemon on the same port would silently get half of the
    # requests (split metrics, unsubscribe tokens of the other's keys).
    site = GuardedSite(runner, guard, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise errors.ConfigurationError(
            f"invalid setting {ENV_PREFIX}{variable}: cannot listen on {host}:{port}: "
            f"{exc.strerror or exc} (another outboxd running? set {ENV_PREFIX}{variable}, or "
            f"{ENV_PREFIX}HTTP__ENABLED=false)"
        ) from exc
    guard.start()
    stack.callback(guard.stop)
    bound: int = runner.addresses[0][1]
    return bound


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through a :class:`ConnectionGuard`."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
    ) -> None:
        super().__init__(runner)
        self._guard = guard
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
        )
        # create_server listens with the backlog it also takes as the number of
        # connections to accept per turn of the loop; the kernel's queue is made deeper
        # afterwards (see connections.LISTEN_BACKLOG), on a duplicate of each descriptor.
        for listening in self._server.sockets:
            with socket.fromfd(listening.fileno(), listening.family, listening.type) as same:
                same.listen(LISTEN_BACKLOG)
