"""The ``outboxd`` console script's entry point.

Applications install outboxd for the client library alone (``pip install outboxd``); the
daemon's dependencies come with the ``daemon`` extra. This module imports nothing but the
standard library until it has checked them, so that the script run from a client-only
install says in one line how to install the daemon (exit 2) instead of a traceback.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Callable, Iterable

DISTRIBUTION = "outboxd"
EXTRA = "daemon"
INSTALL = f"pip install '{DISTRIBUTION}[{EXTRA}]'"
#: Exit status for a usage or set-up problem, as for bad settings.
EXIT_USAGE = 2

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_requirements(
    requirements: Iterable[str], installed: Callable[[str], bool] = _installed
) -> list[str]:
    """Distributions of the daemon extra, among ``requirements`` (the ``Requires-Dist``
    lines of outboxd's metadata), that are not installed."""
    missing = []
    for requirement in requirements:
        marker = _EXTRA_MARKER.search(requirement)
        name = _NAME.match(requirement)
        if marker and marker[1] == EXTRA and name and not installed(name[0]):
            missing.append(name[0])
    return missing


def _declared_requirements() -> list[str]:
    try:
        return importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []  # run from a source tree without an install: the import below tells


def _refuse(missing: list[str]) -> None:
    named = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    print(
        f"outboxd: the daemon is not installed (missing {named}); install it with: {INSTALL}",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_USAGE)


def main() -> None:
    """Run the command line if the daemon's dependencies are installed; else say how."""
    missing = missing_requirements(_declared_requirements())
    if missing:
        _refuse(missing)
    try:
        from daemon.cli import main as cli
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if not top or top in {"daemon", "outbox"}:
            raise
        _refuse([top])
    cli.main()
