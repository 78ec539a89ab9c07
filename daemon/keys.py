"""The HMAC keys that sign links and tokens: OUTBOXD_SECRET_KEY, else a development key."""

from __future__ import annotations

import secrets
from pathlib import Path

from daemon.settings import Settings


def signing_keys(settings: Settings) -> list[bytes]:
    """The configured keys (the first signs, all verify), or a development key kept under
    the data dir when none is configured."""
    if settings.secret_key:
        return [key.get_secret_value().encode() for key in settings.secret_key]
    return [load_or_create_key(settings.data_dir)]


def load_or_create_key(data_dir: Path) -> bytes:
    """A development key persisted under the data dir (used when OUTBOXD_SECRET_KEY is unset)."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32).encode()
    path.touch(mode=0o600)
    path.write_bytes(key)
    return key
