from __future__ import annotations

import io
import json
import logging
import os
import socket
from pathlib import Path

import pytest

from daemon import logs, sdnotify


def test_notify_sends_datagrams_to_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        env = {"NOTIFY_SOCKET": path}
        assert sdnotify.ready(env)
        assert sdnotify.watchdog(env)
        assert sdnotify.stopping(env)
        got = [server.recv(4096).decode() for _ in range(3)]
    assert got[0].splitlines()[0] == "READY=1"
    assert got[1] == "WATCHDOG=1"
    assert got[2].splitlines()[0] == "STOPPING=1"


def test_notify_abstract_namespace() -> None:
    name = f"outboxd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert sdnotify.status("draining", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(4096) == b"STATUS=draining"


def test_notify_without_systemd_is_a_no_op() -> None:
    assert sdnotify.ready({}) is False
    assert sdnotify.watchdog_interval({}) is None


def test_watchdog_interval_respects_the_pid() -> None:
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "junk"}) is None


def _capture(fmt: str) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    logs.setup(fmt, "INFO", stream)  # type: ignore[arg-type]
    return stream, logging.getLogger("outboxd.test")


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:], root.level = handlers, level


def test_json_lines_carry_structured_fields_and_redact_secrets() -> None:
    stream, log = _capture("json")
    log.info("sent %d", 3, extra={"action": "send", "message_id": 42, "password": "hunter2"})
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "sent 3" and entry["level"] == "info"
    assert (entry["action"], entry["message_id"]) == ("send", 42)
    assert entry["password"] == "[redacted]"
    assert "hunter2" not in stream.getvalue()


def test_text_lines_are_readable() -> None:
    stream, log = _capture("text")
    log.warning("retrying", extra={"action": "send", "channel": "email"})
    line = stream.getvalue().strip()
    assert "WARNING" in line and "retrying" in line and "action=send channel=email" in line


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_addresses_are_masked_wherever_a_record_carries_them(fmt: str) -> None:
    stream, log = _capture(fmt)
    fields = {"error": "RCPT bob@example.org refused", "recipient": "+14155552671"}
    log.warning("SMTP %s", "550 5.1.1 <ann@example.com>: no such user", extra=fields)
    logging.getLogger("aiosmtplib").warning("reply quoted carol@example.net")
    try:
        raise ValueError("dave@example.com bounced")
    except ValueError:
        log.exception("send failed for erin%40example.com")
    out = stream.getvalue()
    for whole in ("ann@", "bob@", "carol@", "dave@", "erin%40", "4155552671"):
        assert whole not in out, whole
    for masked in ("a***@example.com", "b***@example.org", "c***@example.net",
                   "d***@example.com", "e***%40example.com", "+14******671"):  # fmt: skip
        assert masked in out, masked
