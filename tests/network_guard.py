"""Proof that code under test reaches nothing but loopback: an audit hook that refuses,
and records, every name lookup and connect aimed elsewhere while it is armed."""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Iterator
from typing import Any

_armed = 0
attempts: list[tuple[str, str]] = []


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name: resolving it is already reaching out


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _armed:
        return
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    if not _is_loopback(host):
        attempts.append((event, str(host)))
        raise PermissionError(f"test refused {event} to {host!r}")


sys.addaudithook(_hook)


@contextlib.contextmanager
def no_outbound() -> Iterator[list[tuple[str, str]]]:
    """Within the block, a lookup or connect beyond loopback fails and is listed."""
    global _armed
    attempts.clear()
    _armed += 1
    try:
        yield attempts
    finally:
        _armed -= 1
