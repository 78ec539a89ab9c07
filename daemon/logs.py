"""Logging: JSON lines for journald and containers, readable lines for a terminal.

Stable structured fields (action, message_id, provider, channel, category, count, error)
come from ``extra=``; values under secret-looking keys are never written, and no email
address or phone number is written in full, wherever it appears (see :class:`MaskAddresses`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from daemon.addresses import mask_text

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


class MaskAddresses(logging.Filter):
    """Masks addresses in every record the handler writes: the message and its arguments,
    string fields, exception and stack text. Ours are masked where they are logged; this
    catches the others, such as an SMTP server's reply quoting the recipient, or a
    library's own log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: the handler reports it as logging does
            return True
        record.msg, record.args = mask_text(message), None
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, mask_text(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


_PLAIN = logging.Formatter()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
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
    handler.addFilter(MaskAddresses())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter that would drown our own lines at INFO.
    for noisy in ("botocore", "aiobotocore", "aioboto3", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
