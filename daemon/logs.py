"""Logging: JSON lines for journald and containers, readable lines for a terminal.

Stable structured fields (action, message_id, provider, channel, category, count, error)
come from ``extra=``; values under secret-looking keys are never written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

FIELDS = ("action", "message_id", "provider", "channel", "category", "recipient", "count", "error")
_SECRET_KEYS = ("password", "secret", "token", "authorization", "credential")
_STANDARD = set(vars(logging.makeLogRecord({})))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_") or key in ("message", "asctime"):
            continue
        extras[key] = "[redacted]" if any(s in key.lower() for s in _SECRET_KEYS) else value
    return extras


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def use_json(fmt: Literal["auto", "text", "json"], stream: TextIO) -> bool:
    if fmt != "auto":
        return fmt == "json"
    under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    return under_systemd or not stream.isatty()


def setup(
    fmt: Literal["auto", "text", "json"] = "auto", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Configure the root logger once, at start-up."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json(fmt, stream) else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter that would drown our own lines at INFO.
    for noisy in ("botocore", "aiobotocore", "aioboto3", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
