"""The file provider: writes ``<id>.eml`` (full MIME) and ``<id>.sms.json`` to a directory.

The development default: every message can be opened in a mail client or read as JSON.
Writes are atomic (temporary file, then rename), so a reader never sees half a message.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from daemon.providers import mime
from daemon.providers.base import ProviderBase
from outbox import errors
from outbox.models import Message, Receipt, Rendered

#: A full disk or an exhausted quota.
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _FileProvider(ProviderBase):
    name = "file"
    channel = ""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    async def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def _write(self, name: str, data: bytes) -> None:
        try:
            _write_atomically(self.directory / name, data)
        except OSError as exc:
            reason = f"file provider: cannot write {name}: {exc}"
            if exc.errno in _OUT_OF_SPACE:
                # Every message would fail alike until space returns: an outage, which
                # pauses the channel and uses no attempt, not a fault of this message.
                raise errors.ChannelPaused(reason) from exc
            raise errors.TransientError(reason) from exc


class FileEmailProvider(_FileProvider):
    channel = "email"

    def __init__(self, directory: Path, *, sender: str, reply_to: str | None = None) -> None:
        super().__init__(directory)
        self.sender = sender
        self.reply_to = reply_to

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        data = mime.build_email(
            message, rendered, sender=self.sender, reply_to=self.reply_to, utf8=True
        )
        self._write(f"{message.id}.eml", data)
        return Receipt(self.name, mime.message_id(message, mime.sender_domain(self.sender)))


class FileSmsProvider(_FileProvider):
    channel = "sms"

    async def send(self, message: Message, rendered: Rendered) -> Receipt:
        payload = {
            "id": message.id,
            "to": message.recipient,
            "body": rendered.sms,
            "category": message.category,
            "tags": message.tags,
        }
        self._write(f"{message.id}.sms.json", json.dumps(payload, ensure_ascii=False).encode())
        return Receipt(self.name, f"file-{message.id}")
