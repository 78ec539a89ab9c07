"""Locates the SQL files and bundled templates.

In a wheel they are packaged under ``outbox/_resources``; in a source checkout (editable
install, tests) they sit at the repository's top level beside the package. Neither depends
on the working directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _locate(name: str) -> Path:
    packaged = _PACKAGE_DIR / "_resources" / name
    if packaged.is_dir():
        return packaged
    source = _PACKAGE_DIR.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"outboxd resource directory {name!r} is missing from the install")


def sql_dir() -> Path:
    """Directory holding ``migrations/`` and ``queries.sql``."""
    return _locate("sql")


def bundled_templates_dir() -> Path:
    """Directory of the example templates shipped with outboxd."""
    return _locate("templates")
