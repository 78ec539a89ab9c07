"""The real daemon speaks systemd's notify protocol on a socket of the test's own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.integration.aws_fake import free_port


def test_ready_watchdog_and_stopping(database_url: str, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(
        NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000", OUTBOXD_DATABASE_URL=database_url,
        OUTBOXD_DATA_DIR=str(tmp_path / "data"), OUTBOXD_HTTP__PORT=str(port),
        OUTBOXD_HTTP__ADMIN_PORT="0",
        OUTBOXD_WORKER__POLL_INTERVAL="0.2",
    )  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(30)
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            first = server.recv(4096).decode()
            assert first.splitlines()[0] == "READY=1"
            # READY means the HTTP server is bound and the schema is current.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                assert r.status == 200
            started = time.monotonic()
            watchdog = server.recv(4096).decode()
            assert watchdog == "WATCHDOG=1"
            assert time.monotonic() - started < 1.0  # at least twice per WatchdogSec
            proc.send_signal(signal.SIGTERM)
            seen = []
            while not any(m.startswith("STOPPING=1") for m in seen):
                seen.append(server.recv(4096).decode())
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
