"""HTML form bodies (urlencoded or multipart), read strictly: text fields only, UTF-8 only.

aiohttp's own ``request.post()`` spools file fields to disk and decodes any charset a
client names; a form here is a few short fields, so anything else is refused with a 4xx.
"""

from __future__ import annotations

import email.parser
import email.policy
from email.message import EmailMessage
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict

MAX_FIELDS = 100
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_PARSER = email.parser.BytesParser(policy=email.policy.HTTP)


class FormRejected(Exception):
    """A form we do not read: ``status`` is 400, 413 or 415, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_form(request: web.Request) -> MultiDict[str]:
    """The form's fields, or :class:`FormRejected`. The body size is bounded by the app's
    ``client_max_size``."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise FormRejected(413, "form too large") from exc
    head = _content_type(request.headers.get("Content-Type", ""))
    kind = head.get_content_type() if "Content-Type" in request.headers else ""
    if kind in ("", "application/x-www-form-urlencoded"):
        _check_charset(head.get_content_charset())
        return _urlencoded(body)
    if kind == "multipart/form-data":
        return _multipart(request.headers["Content-Type"], body)
    raise FormRejected(415, "expected an urlencoded or multipart form")


def _content_type(value: str) -> EmailMessage:
    head = EmailMessage()
    try:
        head["Content-Type"] = value
    except Exception as exc:  # the header parser's failures are many; all mean 400
        raise FormRejected(400, "unreadable Content-Type") from exc
    return head


def _check_charset(charset: str | None) -> None:
    if charset is not None and charset.lower() not in _UTF8:
        raise FormRejected(415, "forms must be UTF-8")


def _urlencoded(body: bytes) -> MultiDict[str]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as exc:  # UnicodeDecodeError included
        raise FormRejected(400, "unreadable form") from exc
    return MultiDict(pairs)


def _multipart(content_type: str, body: bytes) -> MultiDict[str]:
    try:
        message = _PARSER.parsebytes(
            b"Content-Type: " + content_type.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body
        )
        parts = list(message.iter_parts()) if message.is_multipart() else None
    except Exception as exc:  # as above: any failure to parse is the sender's
        raise FormRejected(400, "unreadable multipart form") from exc
    if parts is None or message.defects:
        raise FormRejected(400, "unreadable multipart form")
    if len(parts) > MAX_FIELDS:
        raise FormRejected(400, "too many form fields")
    fields: MultiDict[str] = MultiDict()
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if part.get_content_disposition() != "form-data" or not isinstance(name, str):
            raise FormRejected(400, "multipart part without a form-data name")
        if part.get_filename() is not None:
            raise FormRejected(400, "file fields are not accepted")
        _check_charset(part.get_content_charset())
        payload = part.get_payload(decode=True)
        try:
            value = payload.decode("utf-8") if isinstance(payload, bytes) else ""
        except UnicodeDecodeError as exc:
            raise FormRejected(400, "form field is not UTF-8") from exc
        fields.add(name, value)
    return fields
