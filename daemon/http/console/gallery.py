"""The template gallery: every template's parts, previewed per channel and locale with its
``example.json``, and the warnings an operator should see before a message fails.

Previews go through the daemon's own :class:`~daemon.delivery.render.Renderer`, so what
the gallery shows is what a message with that context would be sent as.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from daemon.delivery.render import Renderer
from outbox import errors
from outbox.models import Rendered

EXAMPLE = "example.json"
_PART = re.compile(r"^(?P<part>subject|text|html|sms|inapp)(?:\.(?P<locale>[A-Za-z0-9_-]+))?\.j2$")
#: Variables the daemon adds to every context (or, for links, to those that get them).
PROVIDED = frozenset(
    {"brand", "recipient", "message_id", "unsubscribe_url", "preferences_url", "confirm_url"}
)
#: Stand-ins for the signed links the daemon makes per message.
PREVIEW_LINKS = {
    "unsubscribe_url": "https://notify.example.com/unsubscribe?token=preview",
    "preferences_url": "https://notify.example.com/preferences?token=preview",
}
#: A channel is offered when its template has this part.
_CHANNEL_PART = {"email": "text", "sms": "sms", "inapp": "inapp"}
_REQUIRED = {"email": ("subject", "text"), "sms": ("sms",), "inapp": ("subject",)}


@dataclass(slots=True)
class TemplateInfo:
    """One template as the gallery lists it."""

    name: str
    #: part -> the locales that have their own variant ("" for the plain part)
    parts: dict[str, list[str]] = field(default_factory=dict)
    example: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def channels(self) -> list[str]:
        return [c for c, part in _CHANNEL_PART.items() if part in self.parts]

    @property
    def locales(self) -> list[str]:
        return sorted({loc for locs in self.parts.values() for loc in locs if loc})


def _example(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = directory / EXAMPLE
    if not path.is_file():
        return None, f"no {EXAMPLE}: nothing to preview with"
    try:
        value = json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"{EXAMPLE} is not readable JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"{EXAMPLE} must hold a JSON object (the context)"
    return value, None


def _variables(env: jinja2.Environment, directory: Path, names: list[str]) -> set[str]:
    found: set[str] = set()
    for name in names:
        try:
            tree = env.parse((directory / name).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, jinja2.TemplateSyntaxError):
            continue  # the preview reports it, with the line
        # A name the template assigns itself (a {% set %} inside a loop, which
        # find_undeclared_variables still reports) is not the context's to provide.
        assigned = {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx == "store"}
        found |= jinja2.meta.find_undeclared_variables(tree) - assigned
    return found


def describe(renderer: Renderer, name: str) -> TemplateInfo:
    """The parts of template ``name``, its example and its warnings (without rendering)."""
    directory = renderer.directory / name
    info = TemplateInfo(name)
    files = sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
    for file in files:
        match = _PART.match(file)
        if match:
            info.parts.setdefault(match["part"], []).append(match["locale"] or "")
    info.example, problem = _example(directory)
    if problem:
        info.warnings.append(problem)
    for channel in info.channels:
        missing = [p for p in _REQUIRED[channel] if "" not in info.parts.get(p, [])]
        if missing:
            info.warnings.append(f"{channel}: no plain {', '.join(missing)} part to fall back on")
    for locale in info.locales:
        plain_only = [p for p, locs in info.parts.items() if "" in locs and locale not in locs]
        if plain_only:
            info.warnings.append(
                f"locale {locale}: {', '.join(sorted(plain_only))} fall back to the plain part"
            )
    if info.example is not None:
        used = _variables(renderer.env, directory, [f for f in files if _PART.match(f)])
        missing_vars = sorted(used - PROVIDED - set(info.example))
        if missing_vars:
            info.warnings.append(
                f"{EXAMPLE} lacks {', '.join(missing_vars)} (used by the template; a message "
                "without them fails unless the template tests `is defined`)"
            )
    return info


def gallery(renderer: Renderer) -> list[TemplateInfo]:
    """Every template under the renderer's directory, with the failures of its previews
    among its warnings."""
    found = []
    for name in renderer.template_names():
        info = describe(renderer, name)
        if info.example is not None:
            for shown in previews(renderer, info):
                if shown.error:
                    info.warnings.append(f"{shown.channel} {shown.locale or ''}: {shown.error}")
        found.append(info)
    return found


@dataclass(frozen=True, slots=True)
class Preview:
    channel: str
    locale: str | None
    rendered: Rendered | None
    error: str | None


def preview(
    renderer: Renderer,
    *,
    template: str,
    channel: str,
    context: Mapping[str, Any],
    locale: str | None = None,
) -> Preview:
    """``template`` rendered for ``channel`` and ``locale`` as the daemon would send it;
    a failure is reported, not raised."""
    variables = {**PREVIEW_LINKS, "recipient": "ann@example.com", "message_id": 0, **context}
    try:
        rendered = renderer.render(
            channel=channel, template=template, context=variables, locale=locale
        )
    except errors.TemplateError as exc:
        return Preview(channel, locale, None, str(exc))
    return Preview(channel, locale, rendered, None)


def previews(renderer: Renderer, info: TemplateInfo) -> list[Preview]:
    """Every channel and locale of ``info``, previewed with its example."""
    context = info.example or {}
    return [
        preview(renderer, template=info.name, channel=channel, context=context, locale=locale)
        for channel in info.channels
        for locale in [None, *info.locales]
    ]
