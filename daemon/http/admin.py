"""The admin server: what operators and their tools read, kept off the public port.

It serves ``/metrics`` and ``/healthz`` and ``/readyz`` with their reasons, on
OUTBOXD_HTTP__ADMIN_HOST:OUTBOXD_HTTP__ADMIN_PORT (loopback by default: expose it only to
your monitoring, never to the internet). The operator console (:mod:`daemon.http.console`)
is served here too, under ``/console``, and never on the public port.
"""

from __future__ import annotations

from aiohttp import web

from daemon.http import console, health
from daemon.http.state import ServiceState

#: Nothing the admin server accepts has a body worth more than this.
MAX_BODY = 64 * 1024
#: Operators and scrapers need few connections; the public server's cap is a setting.
MAX_CONNECTIONS = 64


def make_app(state: ServiceState) -> web.Application:
    """The admin application (routes only; :mod:`daemon.http.app` serves it)."""
    app = web.Application(client_max_size=MAX_BODY)
    health.setup_admin(app, state)
    console.setup(app, state)
    return app
