"""``/healthz``, ``/readyz`` and ``/metrics``: what operators and orchestrators poll.

The admin server answers with the details (the reasons the daemon is not ready name hosts,
users and channels) and serves the metrics; the public port only says yes or no.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from daemon import db, metrics
from daemon.http.state import ServiceState

STATE = web.AppKey("service_state", ServiceState)


def liveness_problems(state: ServiceState) -> list[str]:
    """Why the process should be restarted: a loop that died or stopped moving."""
    reasons = list(state.liveness())
    age = state.heartbeat_age()
    if age > max(state.settings.worker.poll_interval * 6, 60.0):
        reasons.append(f"claim loop stalled: last ran {age:.0f}s ago")
    return reasons


async def healthz(request: web.Request) -> web.Response:
    reasons = liveness_problems(request.app[STATE])
    if reasons:
        return web.Response(status=503, text="\n".join(reasons) + "\n")
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    reasons = await readiness_problems(request.app[STATE])
    if reasons:
        return web.Response(status=503, text="\n".join(reasons) + "\n")
    return web.Response(text="ready\n")


async def public_healthz(request: web.Request) -> web.Response:
    if liveness_problems(request.app[STATE]):
        return web.Response(status=503, text="unavailable\n")
    return web.Response(text="ok\n")


async def public_readyz(request: web.Request) -> web.Response:
    if await readiness_problems(request.app[STATE]):
        return web.Response(status=503, text="not ready\n")
    return web.Response(text="ready\n")


async def readiness_problems(state: ServiceState) -> list[str]:
    """Why the daemon should not receive traffic; empty when ready."""
    reasons: list[str] = []
    if state.stopping.is_set():
        reasons.append("stopping")
    try:
        async with asyncio.timeout(2):
            current, expected = await db.schema_status(state.store.pool)
        if current != expected:
            reasons.append(f"schema version {current}, expected {expected}")
    except Exception as exc:  # any failure to reach the database means not ready
        reasons.append(f"database unreachable: {type(exc).__name__}")
    limit = max(state.settings.worker.poll_interval * 3, 30.0)
    age = state.heartbeat_age()
    if age > limit:
        reasons.append(f"claim loop last ran {age:.0f}s ago")
    for channel, reason in state.paused().items():
        reasons.append(f"channel {channel} paused: {reason}")
    for channel, seconds in state.stalled_channels().items():
        reasons.append(
            f"channel {channel}: sends in flight and no message delivered or failed "
            f"for {seconds:.0f}s (a server accepting connections but not answering?)"
        )
    return reasons


async def metrics_view(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def setup_admin(app: web.Application, state: ServiceState) -> None:
    """Health with its reasons, and the metrics: for the admin server."""
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)


def setup_public(app: web.Application, state: ServiceState) -> None:
    """Bare health answers (200 or 503, no reasons) for load balancers on the public port."""
    app[STATE] = state
    app.router.add_get("/healthz", public_healthz)
    app.router.add_get("/readyz", public_readyz)
