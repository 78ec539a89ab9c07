"""The aiohttp service: :mod:`.app` assembles the routes of :mod:`.health`, :mod:`.webhooks`
and :mod:`.unsubscribe`. Nothing here imports the daemon's lifecycle: :mod:`daemon.main`
hands the app a :class:`~daemon.http.state.ServiceState`."""
