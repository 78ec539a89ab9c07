"""Reading the tree from the environment and systemd credentials, and saying in one line
what is wrong with it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from daemon.settings.explain import describe, env_name, known_variables, unknown_variables
from daemon.settings.tree import Settings
from outbox import errors

__all__ = ["credentials", "describe", "env_name", "load"]

#: systemd credentials (LoadCredential=NAME:...) -> the setting they provide.
CREDENTIALS = {
    "secret_key": ("secret_key",),
    "database_url": ("database_url",),
    "smtp_password": ("smtp", "password"),
}


def credentials(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings read from ``$CREDENTIALS_DIRECTORY`` (systemd), for unset variables only."""
    environ = os.environ if environ is None else environ
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    found: dict[str, Any] = {}
    for name, path in CREDENTIALS.items():
        file = Path(directory) / name
        if env_name(path) in environ or not file.is_file():
            continue
        value = file.read_text(encoding="utf-8").strip()
        if len(path) == 1:
            found[path[0]] = value
        else:
            found.setdefault(path[0], {})[path[1]] = value
    return found


def load(**overrides: Any) -> Settings:
    """Read the settings; raise :class:`ConfigurationError` with a one-line reason.

    An ``OUTBOXD_`` variable that is no setting is an error, not ignored: a misspelt
    OUTBOXD_DATABASE_URL would otherwise run against the embedded database.
    """
    unknown = unknown_variables(os.environ, known_variables(Settings))
    if unknown:
        raise errors.ConfigurationError(unknown)
    try:
        return Settings(**{**credentials(), **overrides})
    except ValidationError as exc:
        raise errors.ConfigurationError(describe(exc)) from exc
    except SettingsError as exc:  # a section given whole, as JSON that does not parse
        field = re.search(r'field "(\w+)"', str(exc))
        name = env_name([field[1]]) if field else "OUTBOXD_*"
        raise errors.ConfigurationError(
            f"invalid setting {name}: not valid JSON (set its {name}__<FIELD> variables instead)"
        ) from exc
