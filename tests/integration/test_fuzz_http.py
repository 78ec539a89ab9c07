"""Generated requests against every route of both servers (as docs/openapi.yaml lists them)
of a running daemon: methods, paths, query strings, headers, framings and bodies, raw on
the wire. No request may get a 5xx, and none of them (each lacks a genuine signature or
token) may change any state.

The CI run sends OUTBOXD_FUZZ_REQUESTS requests (default 600); the full run is

    OUTBOXD_FUZZ_REQUESTS=10000 .venv/bin/pytest -q -s tests/integration/test_fuzz_http.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from daemon.main import Daemon
from tests.integration.daemon_helpers import make_settings
from tests.sns_signing import TOPIC, Signer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "ses"
REQUESTS = int(os.environ.get("OUTBOXD_FUZZ_REQUESTS", "600"))
SIGNED_FIELDS = [
    "Type", "MessageId", "TopicArn", "Message", "Timestamp", "Subject",
    "SignatureVersion", "Signature", "SigningCertURL",
]  # fmt: skip


@dataclass(frozen=True)
class Route:
    server: str  # "public" or "admin"
    method: str
    path: str


def spec_routes() -> list[Route]:
    """Every (server, method, path) docs/openapi.yaml describes."""
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    default = [s["description"] for s in spec["servers"]]
    routes = []
    for path, item in spec["paths"].items():
        servers = [s["description"] for s in item.get("servers", [])] or default
        for method in item.keys() - {"servers", "parameters"}:
            routes.extend(Route(server, method.upper(), path) for server in servers)
    return sorted(routes, key=lambda r: (r.server, r.path, r.method))


ROUTES = spec_routes()


@dataclass
class Served:
    daemon: Daemon
    signer: Signer
    token: str
    statuses: Counter[int] = field(default_factory=Counter)

    def port(self, server: str) -> int:
        port = self.daemon.http_port if server == "public" else self.daemon.admin_port
        assert port is not None
        return port

    def send(self, server: str, raw: bytes) -> list[int]:
        """Send ``raw``; the status codes of every response read back (100s included)."""
        with socket.create_connection(("127.0.0.1", self.port(server)), timeout=10) as conn:
            # The server may answer and close before it has taken the whole body.
            with contextlib.suppress(OSError):
                conn.sendall(raw)
            chunks = []
            try:
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
        codes = [int(c) for c in re.findall(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ", b"".join(chunks))]
        self.statuses.update(codes[-1:] or [0])
        return codes


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    signer = Signer.create(tmp_path / "certs")
    config = make_settings(
        database_url, tmp_path, secret_key="fuzz-key",
        http={"host": "127.0.0.1", "port": 0, "admin_port": 0, "body_timeout": 0.5},
        feedback={"topic_arns": TOPIC, "cert_dir": tmp_path / "certs"},
        console={"token": "fuzz-console-token-0123"},
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    daemon_box: list[Daemon] = []
    started = threading.Event()

    def host() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            daemon = Daemon(config, dsn=database_url)
            daemon_box.append(daemon)
            task = asyncio.create_task(daemon.run())
            await daemon.started.wait()
            started.set()
            await task

        loop.run_until_complete(main())

    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    assert started.wait(30)
    daemon = daemon_box[0]
    token = daemon.links.url("email", "victim@example.com", "news").split("token=")[1]  # type: ignore[attr-defined]
    try:
        yield Served(daemon, signer, token)
    finally:
        loop.call_soon_threadsafe(daemon.request_stop)
        thread.join(30)
        loop.close()


async def _state(database_url: str) -> dict[str, Any]:
    """Everything a request could change."""
    conn = await asyncpg.connect(database_url)
    try:
        return {
            table: [tuple(r) for r in await conn.fetch(query)]
            for table, query in {
                "event": "SELECT id FROM outbox.event",
                "preference": "SELECT * FROM outbox.preference ORDER BY 1, 2, 3",
                "suppression": "SELECT channel, recipient, reason FROM outbox.suppression",
                "message": "SELECT id, status FROM outbox.message ORDER BY id",
            }.items()
        }
    finally:
        await conn.close()


async def _a_sent_message(database_url: str) -> None:
    """A message a forged bounce would mark bounced (and whose recipient it would suppress)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox.message (channel, recipient, template, status, sent_at,"
            " provider_message_id) VALUES ('email', 'ann@example.com', 'welcome', 'sent', now(),"
            " '0100018c-ses-message-id-000001')"
        )
    finally:
        await conn.close()


# What requests are made of.

text = st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_text = st.text(latin1, max_size=60)
header_names = st.sampled_from([
    "Content-Type", "Content-Encoding", "Transfer-Encoding", "Expect", "Accept", "Cookie",
    "Authorization", "X-Forwarded-For", "Range", "If-None-Match", "Upgrade", "Origin",
    "x-amz-sns-message-type", "Accept-Encoding", "Content-Language",
]) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)  # fmt: skip
content_types = st.sampled_from([
    "application/json", "text/plain; charset=UTF-8", "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1", "multipart/form-data; boundary=b",
    "multipart/form-data", "multipart/form-data; boundary=\"", "text/html; charset=bogus",
    "application/octet-stream", "*/*",
]) | header_text  # fmt: skip


def _signed_bounce(signer: Signer) -> dict[str, Any]:
    return signer.notification((FIXTURES / "notification_bounce_permanent.json").read_text())


@st.composite
def forged_sns(draw: st.DrawFn, signer: Signer) -> bytes:
    """A genuine signed notification with a signed field changed, added or removed: never
    genuine any more."""
    fields = dict(_signed_bounce(signer))
    name = draw(st.sampled_from(SIGNED_FIELDS))
    if draw(st.booleans()) and name in fields:
        del fields[name]
    else:
        value = draw(json_values | st.sampled_from([
            "Notification", "SubscriptionConfirmation", "2", "1",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
            "2020-01-01T00:00:00.000Z", TOPIC + "x",
        ]))  # fmt: skip
        assume(fields.get(name) != value)
        fields[name] = value
    if draw(st.booleans()):
        fields[draw(st.text(max_size=12))] = draw(json_values)
    return json.dumps(fields).encode()


def nested(depth: int) -> bytes:
    return b'{"Type": "Notification", "Message": ' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def forms(draw: st.DrawFn) -> bytes:
    pairs = draw(st.lists(st.tuples(
        st.sampled_from(["List-Unsubscribe", "action", "keep"]) | text,
        st.sampled_from(["One-Click", "all", "save", "resubscribe", "unsubscribe"]) | text,
    ), max_size=5))  # fmt: skip
    if draw(st.booleans()):
        return "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()
    parts = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="' + k.encode("utf-8", "replace")
        + (b'"; filename="f.txt' if draw(st.booleans()) else b"")
        + b'"\r\nContent-Type: text/plain; charset='
        + draw(st.sampled_from([b"utf-8", b"koi8-r", b"nope"]))
        + b"\r\n\r\n" + v.encode() + b"\r\n"
        for k, v in pairs
    )  # fmt: skip
    return parts + draw(st.sampled_from([b"--b--\r\n", b"", b"--b"]))


@st.composite
def tokens(draw: st.DrawFn, genuine: str) -> str:
    """Anything but the genuine token: one character changed, cut short, or made up."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        at = draw(st.integers(0, len(genuine) - 1))
        changed = genuine[:at] + draw(st.characters(codec="ascii")) + genuine[at + 1 :]
    elif choice == 1:
        changed = genuine[: draw(st.integers(0, len(genuine) - 1))]
    elif choice == 2:
        changed = draw(st.text(max_size=200))
    else:
        changed = draw(st.from_regex(r"[A-Za-z0-9_-]{1,120}\.[A-Za-z0-9_-]{1,40}", fullmatch=True))
    assume(changed != genuine)
    return changed


@st.composite
def requests(draw: st.DrawFn, served: Served) -> tuple[str, bytes, bool]:
    """A request for one of the servers, and whether its framing is sound (bytes past the
    declared length make the server close with data unread: a reset, where the answer
    may be lost)."""
    route = draw(st.sampled_from(ROUTES))
    method = route.method if draw(st.integers(0, 4)) else draw(st.sampled_from(
        ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "BREW"]))  # fmt: skip
    path = route.path if draw(st.integers(0, 5)) else draw(st.sampled_from([
        route.path + "/", "/" + route.path, route.path + "%00", route.path.upper(), "/nowhere",
        route.path + "/" + "x" * 3000, "/..%2f..%2fetc/passwd", "*",
    ]))  # fmt: skip
    query: list[tuple[str, str]] = draw(st.lists(st.tuples(text, text), max_size=3))
    if route.path == "/unsubscribe" and draw(st.integers(0, 5)):
        query.insert(0, ("token", draw(tokens(served.token))))
    target = path + ("?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query) if query else "")
    if not draw(st.integers(0, 20)):
        target += draw(st.sampled_from(["&%zz", "?token=%ff%fe", "#frag"]))
    if route.path == "/webhooks/sns":
        envelopes = st.dictionaries(st.sampled_from(SIGNED_FIELDS), json_values)
        oddities = [nested(100), nested(20_000), b"{" * 5000, b"\xff\xfe{}", b"x" * 300_000]
        body = draw(st.one_of(
            forged_sns(served.signer), st.binary(max_size=300),
            envelopes.map(lambda d: json.dumps(d).encode()), st.sampled_from(oddities),
        ))  # fmt: skip
    elif route.path == "/unsubscribe":
        body = draw(forms() | st.binary(max_size=200))
    else:
        body = draw(st.binary(max_size=64))
    headers = draw(st.lists(st.tuples(header_names, header_text), max_size=4))
    if draw(st.booleans()):
        headers.append(("Content-Type", draw(content_types)))
    framing = draw(st.integers(0, 99))
    sound = framing < 92
    if framing < 80 or (method in ("GET", "HEAD") and not body):
        headers.append(("Content-Length", str(len(body))))
        payload = body
    elif framing < 95:  # chunked, sometimes cut short or malformed
        headers.append(("Transfer-Encoding", "chunked"))
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        if framing >= 92:
            payload = draw(st.sampled_from([b"zz\r\n", b"5\r\nab", payload[:-2] + b"x"]))
    elif framing < 98:
        headers.append(("Content-Length", str(max(0, len(body) - 3))))
        payload = body
    else:  # promises more than it sends: the body deadline answers 408
        headers.append(("Content-Length", str(len(body) + 100)))
        payload = body
    head = f"{method} {target} HTTP/1.1\r\nHost: outboxd\r\nConnection: close\r\n".encode()
    head += b"".join(n.encode() + b": " + v.encode("latin-1") + b"\r\n" for n, v in headers)
    return route.server, head + b"\r\n" + payload, sound


@pytest.mark.slow
def test_every_route_survives_generated_requests(served: Served, database_url: str) -> None:
    asyncio.run(_a_sent_message(database_url))
    before = asyncio.run(_state(database_url))

    @settings(
        max_examples=REQUESTS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
    )  # fmt: skip
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        server, raw, sound = data.draw(requests(served))
        codes = served.send(server, raw)
        assert codes or not sound, raw[:300]  # an answer, not a dropped connection
        assert all(code < 500 for code in codes), (codes, raw[:300])

    one_request()
    assert asyncio.run(_state(database_url)) == before
    print(
        f"\n{served.statuses.total()} requests, by status: {dict(sorted(served.statuses.items()))}"
    )
    assert served.statuses.total() >= REQUESTS
