"""Rows that used to retry forever or stop the daemon: odd replies, odd addresses, odd
headers. Real PostgreSQL, a real SMTP server, the real daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
from aiosmtpd.controller import Controller

from tests.integration.aws_fake import free_port
from tests.integration.daemon_helpers import drain, make_settings, statuses
from tests.integration.enqueue_helpers import enqueue_one

CONTEXT = {"name": "Ann", "login_url": "https://x.example"}


class _Relay:
    """Refuses mail for ``odd@`` with a reply carrying NUL and bytes that are not UTF-8;
    takes everything else (SMTPUTF8 only when asked to offer it)."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | bytes:
        if envelope.rcpt_tos[0].startswith("odd@"):
            return b"451 4.3.0 queue \x00 full \xff\xfe try later"
        self.accepted.append((envelope.rcpt_tos[0], envelope.original_content))
        return "250 OK"


def _serve(relay: _Relay, *, smtputf8: bool) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(
        relay, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8
    )  # fmt: skip
    controller.start()
    return controller, port


async def test_a_reply_with_nul_and_invalid_utf8_is_written_and_delivery_goes_on(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # Before: the batched result write failed on the NUL for ever, and nothing else was
    # claimed or written again.
    relay = _Relay()
    controller, port = _serve(relay, smtputf8=False)
    try:
        odd = await enqueue_one(pool, channel="email", recipient="odd@example.com",
                                template="welcome", context=CONTEXT)  # fmt: skip
        others = [
            await enqueue_one(
                pool,
                channel="email",
                recipient=f"u{i}@example.com",
                template="welcome",
                context=CONTEXT,
            )
            for i in range(5)
        ]
        settings = make_settings(
            database_url, tmp_path, email={"provider": "smtp"},
            smtp={"host": "127.0.0.1", "port": port}, worker={"max_attempts": 2},
        )  # fmt: skip
        await asyncio.wait_for(drain(settings, database_url), 60)
    finally:
        controller.stop()
    rows = await statuses(pool)
    assert {rows[i]["status"] for i in others} == {"sent"}
    assert rows[odd]["status"] == "failed"
    error = rows[odd]["last_error"]
    assert "queue" in error and "full" in error and "\x00" not in error
    error.encode("utf-8")  # no lone surrogates either


async def test_idn_and_utf8_recipients_and_long_headers_are_decided_on_the_first_attempt(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    # Before: each of these failed while building the message, as a transient error,
    # and was retried until its attempts ran out.
    relay = _Relay()
    controller, port = _serve(relay, smtputf8=False)
    ids: dict[str, int] = {}
    try:
        for name, recipient in [
            ("idn", "ann@bücher.example"),
            ("utf8", "jörg@example.com"),
            ("plain", "ann@example.com"),
        ]:
            ids[name] = await enqueue_one(pool, channel="email", recipient=recipient,
                                          template="welcome", context=CONTEXT)  # fmt: skip
        settings = make_settings(
            database_url, tmp_path, email={"provider": "smtp"},
            smtp={"host": "127.0.0.1", "port": port},
        )  # fmt: skip
        await asyncio.wait_for(drain(settings, database_url), 60)
    finally:
        controller.stop()
    rows = await statuses(pool)
    assert (rows[ids["idn"]]["status"], rows[ids["idn"]]["attempts"]) == ("sent", 1)
    assert ("ann@xn--bcher-kva.example",) in {(r,) for r, _ in relay.accepted}
    assert (rows[ids["utf8"]]["status"], rows[ids["utf8"]]["attempts"]) == ("failed", 1)
    assert "SMTPUTF8" in rows[ids["utf8"]]["last_error"]
    assert rows[ids["plain"]]["status"] == "sent"


async def test_a_utf8_mailbox_goes_out_through_a_server_that_offers_smtputf8(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    relay = _Relay()
    controller, port = _serve(relay, smtputf8=True)
    try:
        message_id = await enqueue_one(pool, channel="email", recipient="jörg@example.com",
                                       template="welcome", context=CONTEXT)  # fmt: skip
        settings = make_settings(
            database_url, tmp_path, email={"provider": "smtp"},
            smtp={"host": "127.0.0.1", "port": port},
        )  # fmt: skip
        await asyncio.wait_for(drain(settings, database_url), 60)
    finally:
        controller.stop()
    rows = await statuses(pool)
    assert (rows[message_id]["status"], rows[message_id]["attempts"]) == ("sent", 1), rows[
        message_id
    ]["last_error"]
    [(recipient, content)] = relay.accepted
    assert recipient == "jörg@example.com"
    assert "To: jörg@example.com".encode() in content


async def test_a_header_too_long_for_a_line_fails_on_the_first_attempt(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    templates = tmp_path / "templates" / "long"
    templates.mkdir(parents=True)
    (templates / "subject.j2").write_text("{{ 'x' * 1200 }}")
    (templates / "text.j2").write_text("hello")
    relay = _Relay()
    controller, port = _serve(relay, smtputf8=False)
    try:
        message_id = await enqueue_one(pool, channel="email", recipient="ann@example.com",
                                       template="long", context={})  # fmt: skip
        settings = make_settings(
            database_url, tmp_path, email={"provider": "smtp"},
            smtp={"host": "127.0.0.1", "port": port}, templates_dir=tmp_path / "templates",
        )  # fmt: skip
        await asyncio.wait_for(drain(settings, database_url), 60)
    finally:
        controller.stop()
    row = (await statuses(pool))[message_id]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "998" in row["last_error"]
