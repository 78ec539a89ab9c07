"""Reading the tree from the environment and systemd credentials, and saying in one line
what is wrong with it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.settings.sections import ENV_PREFIX
from daemon.settings.tree import Settings
from outbox import errors

_SECRET_FIELDS = frozenset({"password", "secret_key", "database_url"})


def env_name(location: tuple[int | str, ...]) -> str:
    """The environment variable for a pydantic error location, e.g. OUTBOXD_EMAIL__RATE."""
    parts = [str(p) for p in location if not isinstance(p, int)]
    if parts == ["email", "from"] or parts == ["email", "sender"]:
        parts = ["email", "from"]
    return ENV_PREFIX + "__".join(p.upper() for p in parts) if parts else ENV_PREFIX + "*"


def describe(exc: ValidationError) -> str:
    """One line naming the first bad variable, without echoing secret values."""
    err = exc.errors()[0]
    location = tuple(err.get("loc", ()))
    name = env_name(location)
    message = err.get("msg", "invalid value").removeprefix("Value error, ")
    field_name = str(location[-1]) if location else ""
    if field_name not in _SECRET_FIELDS and "input" in err and isinstance(err["input"], str):
        return f"invalid setting {name}: {message} (got {err['input']!r})"
    if not location or location == ("worker",):
        return f"invalid setting {message}"
    return f"invalid setting {name}: {message}"


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
    """Read the settings; raise :class:`ConfigurationError` with a one-line reason."""
    try:
        return Settings(**{**credentials(), **overrides})
    except ValidationError as exc:
        raise errors.ConfigurationError(describe(exc)) from exc
