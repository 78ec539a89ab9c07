"""Text as PostgreSQL will store it: the one place that cleans what outboxd writes.

A ``text`` or ``jsonb`` value cannot hold NUL, and UTF-8 cannot encode a lone surrogate
(Python makes those from bytes that were not UTF-8, e.g. a server's reply decoded with
``surrogateescape``). Either makes the whole statement fail, and with it every other row
of a batched write: whatever came from outside goes through :func:`db_text` first.
"""

from __future__ import annotations

from typing import Any

#: Longest free-text value written (an error message, a provider's id).
MAX_TEXT = 4000


def db_text(value: str | None, limit: int | None = MAX_TEXT) -> str | None:
    """``value`` without NUL (shown as U+FFFD) or lone surrogates (U+FFFD), cut to
    ``limit`` characters; None stays None."""
    if value is None:
        return None
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


def db_json(value: Any) -> Any:
    """A JSON-able value with every string in it (keys too) cleaned by :func:`db_text`,
    without a length limit."""
    if isinstance(value, str):
        return db_text(value, None)
    if isinstance(value, dict):
        return {db_text(str(k), None): db_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [db_json(v) for v in value]
    return value
