"""A minimal, fast SES v2 endpoint for ``outboxd bench --provider ses``.

It answers ``SendEmail`` with a fresh MessageId and ``GetAccount`` with a quota, and
nothing else: enough to measure outboxd's own cost per SES send without AWS.
Run: ``python -m daemon.bench.fakeses PORT``.
"""

from __future__ import annotations

import itertools
import sys

from aiohttp import web

_ids = itertools.count(1)


async def send_email(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"MessageId": f"bench-{next(_ids):012d}"})


async def get_account(request: web.Request) -> web.Response:
    return web.json_response({"SendQuota": {"MaxSendRate": 0.0}, "SendingEnabled": True})


def main() -> None:
    app = web.Application()
    app.router.add_post("/v2/email/outbound-emails", send_email)
    app.router.add_get("/v2/email/account", get_account)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
