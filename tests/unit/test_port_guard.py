"""The suite's guard against the daemon's default ports (tests/port_guard.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.port_guard import DefaultPortUsed


@pytest.mark.parametrize("port", [8025, 8026])
def test_binding_a_default_port_is_refused(port: int) -> None:
    with socket.socket() as sock, pytest.raises(DefaultPortUsed):
        sock.bind(("127.0.0.1", port))


def test_binding_port_zero_is_allowed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] not in (0, 8025, 8026)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OUTBOXD_HTTP__PORT": "0"},
        {"OUTBOXD_HTTP__PORT": "0", "OUTBOXD_HTTP__ADMIN_PORT": "8026"},
    ],
)
def test_a_daemon_left_on_a_default_port_is_not_started(env: dict[str, str]) -> None:
    with pytest.raises(DefaultPortUsed):
        subprocess.run(
            [sys.executable, "-m", "daemon.cli", "run"], env={**os.environ, **env}, check=False
        )


@pytest.mark.parametrize(
    "env",
    [
        {"OUTBOXD_HTTP__ENABLED": "false"},
        {"OUTBOXD_HTTP__PORT": "0", "OUTBOXD_HTTP__ADMIN_PORT": "0"},
    ],
)
def test_a_daemon_on_free_ports_passes_the_guard(env: dict[str, str]) -> None:
    # `--help` exits at once: the guard only reads the command line and the environment.
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run", "--help"],
        env={**os.environ, **env}, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
