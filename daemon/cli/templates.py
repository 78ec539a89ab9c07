"""``outboxd render``: a template's parts on the console, as a message would get them."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.common import json_object
from daemon.settings import Settings


def register(commands: Any) -> None:
    render = commands.add_parser("render", help="render a template to stdout")
    render.add_argument("name", help="template name, e.g. welcome or billing/low_balance")
    render.add_argument(
        "--context", type=json_object, default={}, help="template variables as a JSON object"
    )
    render.add_argument(
        "--channel",
        choices=("email", "sms", "inapp"),
        default=None,
        help="which parts to render (default: sms if the template has an sms part, else email)",
    )
    render.add_argument("--locale", help="locale variant, e.g. fr")
    render.add_argument(
        "--recipient",
        default="recipient@example.com",
        help="what the template sees as `recipient`",
    )
    render.set_defaults(handler=cmd_render)


def cmd_render(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.delivery.render import Renderer

    renderer = Renderer.from_settings(settings)
    channel = args.channel or (
        "sms" if renderer.exists(channel="sms", template=args.name) else "email"
    )
    context = {"recipient": args.recipient, "message_id": 0, **args.context}
    rendered = renderer.render(
        channel=channel, template=args.name, context=context, locale=args.locale
    )
    if channel == "sms":
        print(rendered.sms)
        return 0
    if channel == "inapp":
        print(f"Title: {rendered.subject}\n\n{rendered.inapp}")
        return 0
    print(f"Subject: {rendered.subject}\n\n--- text ---\n{rendered.text}")
    if rendered.html:
        print(f"\n--- html ---\n{rendered.html}")
    return 0
