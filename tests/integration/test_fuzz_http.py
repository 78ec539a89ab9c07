"""Generated requests against the webhook and unsubscribe routes of a running daemon:
no input may produce a 5xx, and no invalid input may change any state."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from daemon.main import Daemon
from tests.integration.daemon_helpers import make_settings
from tests.sns_signing import TOPIC, Signer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ses"
SNS_FIELDS = [
    "Type", "MessageId", "TopicArn", "Message", "Timestamp", "Subject",
    "SignatureVersion", "Signature", "SigningCertURL", "SubscribeURL", "Token",
]  # fmt: skip


class Served:
    def __init__(self, daemon: Daemon, signer: Signer, token: str) -> None:
        self.daemon = daemon
        self.signer = signer
        self.token = token

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> int:
        assert self.daemon.http_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.daemon.http_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    signer = Signer.create(tmp_path / "certs")
    config = make_settings(
        database_url, tmp_path, http={"host": "127.0.0.1", "port": 0, "admin_port": 0},
        secret_key="fuzz-key", feedback={"topic_arns": TOPIC, "cert_dir": tmp_path / "certs"},
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


async def _state(database_url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM outbox.event) AS e,"
            " (SELECT count(*) FROM outbox.preference) AS p,"
            " (SELECT count(*) FROM outbox.suppression) AS s"
        )
        return row["e"], row["p"], row["s"]
    finally:
        await conn.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


def _mutated_sns(signer: Signer) -> st.SearchStrategy[bytes]:
    """Genuine signed messages with one field replaced or removed."""
    bounce = (FIXTURES / "event_bounce_permanent.json").read_text()
    genuine = {version: signer.notification(bounce, version=version) for version in "12"}

    def build(field: str, value: Any, drop: bool, version: str) -> bytes:
        fields = dict(genuine[version])
        assume(field in fields if drop else fields.get(field) != value)
        if drop:
            fields.pop(field, None)
        else:
            fields[field] = value
        return json.dumps(fields).encode()

    signed = [f for f in SNS_FIELDS if f not in ("SubscribeURL", "Token")]  # not signed here
    return st.builds(
        build, st.sampled_from(signed), json_values, st.booleans(), st.sampled_from("12")
    )


FUZZ = settings(max_examples=1500, deadline=None)


@pytest.mark.slow
def test_webhook_never_5xx_and_never_changes_state_on_bad_input(
    served: Served, database_url: str
) -> None:
    @FUZZ
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        _webhook_request(served, data)

    one_request()
    assert asyncio.run(_state(database_url)) == (0, 0, 0)


@pytest.mark.slow
def test_unsubscribe_never_5xx_and_never_changes_state_on_bad_tokens(
    served: Served, database_url: str
) -> None:
    @FUZZ
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        _unsubscribe_request(served, data)

    one_request()
    assert asyncio.run(_state(database_url)) == (0, 0, 0)


def _webhook_request(served: Served, data: st.DataObject) -> None:
    body = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.dictionaries(st.sampled_from(SNS_FIELDS), json_values).map(
                lambda d: json.dumps(d).encode()
            ),
            _mutated_sns(served.signer),
        )
    )
    header = data.draw(st.sampled_from([None, "Notification", "SubscriptionConfirmation", "x"]))
    status = served.request(
        "POST", "/webhooks/sns", body, {"x-amz-sns-message-type": header} if header else {}
    )
    assert 400 <= status < 500, status


def _unsubscribe_request(served: Served, data: st.DataObject) -> None:
    token = data.draw(
        st.one_of(
            st.text(max_size=120),
            st.integers(0, len(served.token) - 1)
            .flatmap(
                lambda i: st.characters(codec="ascii").map(
                    lambda c: served.token[:i] + c + served.token[i + 1 :]
                )
            )
            .filter(lambda t: t != served.token),
        )
    )
    method = data.draw(st.sampled_from(["GET", "POST"]))
    form = data.draw(
        st.sampled_from([b"List-Unsubscribe=One-Click", b"action=all", b"action=save&keep=x", b""])
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else {}
    status = served.request(method, "/unsubscribe?token=" + quote(token), form, headers)
    assert status == 400, (token, status)
