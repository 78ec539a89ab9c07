"""Proof that tests never listen on the daemon's default ports.

Several test runs share a machine (CI jobs, worktrees); a test that binds the public
default (8025) or the admin default (8026) fails or, worse, talks to another run's daemon.
Tests ask for port 0 or :func:`daemon.bench.support.free_port` instead. An audit hook,
installed when the suite starts, refuses a bind to a default port in the test process, and
refuses to start an ``outboxd run`` child whose environment would leave HTTP on a default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

#: The defaults of OUTBOXD_HTTP__PORT and OUTBOXD_HTTP__ADMIN_PORT (daemon/settings).
DEFAULT_PORTS = {"OUTBOXD_HTTP__PORT": 8025, "OUTBOXD_HTTP__ADMIN_PORT": 8026}
_OFF = {"0", "false", "no", "off"}


class DefaultPortUsed(PermissionError):
    """A test reached for a default port that another test run may hold."""


def _text(value: Any) -> str:
    return os.fsdecode(value) if isinstance(value, str | bytes | os.PathLike) else str(value)


def _runs_the_daemon(args: Sequence[Any] | str | bytes) -> bool:
    words = [_text(args)] if isinstance(args, str | bytes) else [_text(a) for a in args]
    named = any("daemon.cli" in w or w.endswith("outboxd") or "'outboxd'" in w for w in words)
    return named and any(w == "run" or "'run'" in w for w in words)


def _defaults_left(env: Mapping[Any, Any]) -> list[str]:
    values = {_text(k): _text(v) for k, v in env.items()}
    if values.get("OUTBOXD_HTTP__ENABLED", "true").strip().lower() in _OFF:
        return []
    return [
        name
        for name, default in DEFAULT_PORTS.items()
        if values.get(name, str(default)).strip() == str(default)
    ]


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.bind":
        address = args[1]
        if isinstance(address, tuple) and address[1:2] and address[1] in DEFAULT_PORTS.values():
            raise DefaultPortUsed(f"test bound default port {address[1]}; use port 0")
    elif event == "subprocess.Popen":
        _, command, _, env = args
        if _runs_the_daemon(command):
            left = _defaults_left(os.environ if env is None else env)
            if left:
                raise DefaultPortUsed(
                    f"outboxd run started with {', '.join(left)} on its default; "
                    "set it to 0 or a free_port()"
                )


sys.addaudithook(_hook)
