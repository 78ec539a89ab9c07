"""A minimal webhook receiver for ``outboxd bench --webhooks``: answers 200 to every POST
after checking its signature (as an application would). Run:
``python -m daemon.bench.hook_sink PORT SECRET``."""

from __future__ import annotations

import sys

from aiohttp import web

from daemon.hooks import signing


def main() -> None:
    secret = sys.argv[2]

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not signing.verify(secret, body, request.headers.get(signing.HEADER, "")):
            return web.Response(status=401)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks", receive)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
