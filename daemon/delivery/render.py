"""Template rendering per the contract: ``<dir>/<name>/{subject,text,html,sms,inapp}.j2``.

In-app items take their title from ``subject.j2`` and their body (plain text) from
``inapp.j2``; a template without ``inapp.j2`` gives title-only items.

A locale variant ``<part>.<locale>.j2`` wins over the plain part (``fr-CA`` falls back to
``fr``, then to the plain part). HTML parts and layouts are autoescaped, other parts are
not. Templates run sandboxed with StrictUndefined: a missing variable is a
:class:`~outbox.errors.TemplateError` naming it, and so is every other rendering failure.

Rendering is on the hot path, so the resolution of (template, channel, locale) to compiled
templates is cached; misses are not, so a template deployed later is found.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.exceptions

from daemon.delivery.sandbox import Environment
from daemon.settings import Settings
from outbox import errors, resources
from outbox.models import Rendered

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
#: Each channel's parts, and whether the part is required.
_PARTS = {
    "email": (("subject", True), ("text", True), ("html", False)),
    "sms": (("sms", True),),
    "inapp": (("subject", True), ("inapp", False)),
}
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


@functools.lru_cache(maxsize=1024)  # asked on every render, of a few names
def _autoescape(name: str | None) -> bool:
    base = (name or "").rsplit("/", 1)[-1]
    return base.startswith("html") or base.endswith(".html.j2") or base.endswith(".html")


def _one_line(template: str, subject: str) -> str:
    if "\n" in subject or "\r" in subject:
        subject = _LINE_BREAKS.sub(" ", subject)
    subject = subject.strip()
    if not subject:
        raise errors.TemplateError(f"template {template!r}: the subject is empty")
    return subject


def _tidy_text(text: str) -> str:
    """Strip the ends and trailing spaces of lines; line breaks become \n."""
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def valid_locale(locale: str) -> bool:
    """Whether ``locale`` is spelled like a locale (``fr``, ``pt-BR``, ``zh_Hant_TW``)."""
    return _LOCALE.fullmatch(locale) is not None


def locale_candidates(locale: str | None) -> list[str]:
    """``fr-CA`` -> ["fr-CA", "fr_CA", "fr"]; None -> []."""
    if not locale:
        return []
    if not _LOCALE.fullmatch(locale):
        raise errors.TemplateError(f"invalid locale {locale!r}")
    parts = re.split(r"[-_]", locale)
    candidates: list[str] = []
    for n in range(len(parts), 0, -1):
        for sep in ("-", "_"):
            candidate = sep.join(parts[:n])
            if candidate not in candidates:
                candidates.append(candidate)
    return candidates


class _BundledFallback(jinja2.BaseLoader):
    """The bundled ``digest`` templates (``digest/``, ``<name>/digest/``) and the layouts
    they extend, for a template directory that lacks them: digests work out of the box."""

    def __init__(self) -> None:
        self.bundled = jinja2.FileSystemLoader(str(resources.bundled_templates_dir()))

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        folders = template.split("/")[:-1]
        if "digest" in folders or folders[:1] == ["_layouts"]:
            return self.bundled.get_source(environment, template)
        raise jinja2.TemplateNotFound(template)


def _loader(directory: Path) -> jinja2.BaseLoader:
    own = jinja2.FileSystemLoader(str(directory))
    if directory.resolve() == resources.bundled_templates_dir().resolve():
        return own
    return jinja2.ChoiceLoader([own, _BundledFallback()])


@dataclass(frozen=True, slots=True)
class _Resolved:
    parts: tuple[tuple[str, jinja2.Template | None], ...]


class Renderer:
    """Renders messages from a template directory."""

    def __init__(self, directory: Path, *, brand: Mapping[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self.brand = dict(brand or {})
        self.env = Environment(
            loader=_loader(self.directory),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            auto_reload=False,
            cache_size=2000,
            keep_trailing_newline=False,
        )
        self._resolved: dict[tuple[str, str, str | None], _Resolved] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Renderer:
        """The renderer of the configured template directory and brand."""
        return cls(settings.templates_path, brand=settings.brand)

    def render(
        self,
        *,
        channel: str,
        template: str,
        context: Mapping[str, Any],
        locale: str | None = None,
        brand: Mapping[str, Any] | None = None,
    ) -> Rendered:
        """Render every part of ``template`` for ``channel``; raises TemplateError.
        Templates see ``brand`` (the message's brand, else the configured one)."""
        resolved = self._resolve(channel, template, locale)
        variables = {**context, "brand": self.brand if brand is None else brand}
        out: dict[str, str | None] = {}
        for part, compiled in resolved.parts:
            out[part] = None if compiled is None else self._run(template, part, compiled, variables)
        if channel == "sms":
            return Rendered(sms=(out["sms"] or "").strip())
        if channel == "inapp":
            return Rendered(
                subject=_one_line(template, out["subject"] or ""),
                inapp=_tidy_text(out["inapp"] or ""),
            )
        return Rendered(
            subject=_one_line(template, out["subject"] or ""),
            text=_tidy_text(out["text"] or ""),
            html=out.get("html"),
        )

    def exists(self, *, channel: str, template: str) -> bool:
        """Whether ``template`` has every required part for ``channel``."""
        try:
            self._resolve(channel, template, None)
        except errors.TemplateError:
            return False
        return True

    def template_names(self) -> list[str]:
        """Every template (directory holding a part) under the directory, layouts excluded."""
        names = set()
        for path in self.directory.rglob("*.j2"):
            relative = path.parent.relative_to(self.directory).as_posix()
            if relative != "." and not any(p.startswith("_") for p in relative.split("/")):
                names.add(relative)
        return sorted(names)

    def _resolve(self, channel: str, template: str, locale: str | None) -> _Resolved:
        key = (channel, template, locale)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        if channel not in _PARTS:
            raise errors.TemplateError(f"unknown channel {channel!r}")
        if not _NAME.fullmatch(template) or ".." in template:
            raise errors.TemplateError(f"invalid template name {template!r}")
        locales = locale_candidates(locale)
        parts = []
        for part, required in _PARTS[channel]:
            compiled = self._load_part(template, part, locales)
            if compiled is None and required:
                raise errors.TemplateError(
                    f"template {template!r} not found: no {part}.j2 in {self.directory / template}"
                )
            parts.append((part, compiled))
        resolved = _Resolved(tuple(parts))
        self._resolved[key] = resolved
        return resolved

    def _load_part(self, template: str, part: str, locales: list[str]) -> jinja2.Template | None:
        for suffix in [*(f".{loc}" for loc in locales), ""]:
            name = f"{template}/{part}{suffix}.j2"
            try:
                return self.env.get_template(name)
            except jinja2.TemplateNotFound as exc:
                if exc.name != name:  # a missing layout or include, not a missing part
                    raise errors.TemplateError(
                        f"template {template!r} ({part}{suffix}.j2): "
                        f"includes a missing template {exc.name!r}"
                    ) from exc
            except jinja2.TemplateSyntaxError as exc:
                raise errors.TemplateError(
                    f"template {template!r}: syntax error in {exc.name or name} "
                    f"line {exc.lineno}: {exc.message}"
                ) from exc
        return None

    @staticmethod
    def _run(template: str, part: str, compiled: jinja2.Template, variables: dict[str, Any]) -> str:
        try:
            # What Template.render does, without its copy of ``variables`` (new_context
            # copies them again) and without rewriting the traceback of an error, which
            # is reported by its message alone.
            return "".join(compiled.root_render_func(compiled.new_context(variables)))
        except Exception as exc:  # a filter or a value may raise anything
            where = f"template {template!r} ({(compiled.name or part).rsplit('/', 1)[-1]})"
            if isinstance(exc, jinja2.UndefinedError):
                reason = exc.message
            elif isinstance(exc, jinja2.exceptions.SecurityError):
                reason = f"unsafe operation: {exc}"
            elif isinstance(exc, jinja2.TemplateError):
                reason = str(exc)
            else:
                reason = f"{type(exc).__name__}: {exc}"
            raise errors.TemplateError(f"{where}: {reason}") from exc
