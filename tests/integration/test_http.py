"""The HTTP service of a running daemon: health, metrics, SNS webhook, unsubscribe."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

from daemon.main import Daemon
from tests.integration.daemon_helpers import Recorder, make_settings, statuses
from tests.integration.enqueue_helpers import enqueue_one
from tests.sns_signing import TOPIC, Signer, body
from tests.unit.test_tokens import legacy_token

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ses"


class Running:
    def __init__(self, daemon: Daemon, recorder: Recorder, signer: Signer, outgoing: Path) -> None:
        self.daemon = daemon
        self.recorder = recorder
        self.signer = signer
        self.outgoing = outgoing

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.admin_port}"


@pytest.fixture
async def running(database_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    signer = Signer.create(tmp_path / "certs")
    settings = make_settings(
        database_url,
        tmp_path,
        http={"host": "127.0.0.1", "port": 0, "admin_port": 0},
        public_url="https://mail.acme.example",
        secret_key="test-key-1",
        feedback={"topic_arns": TOPIC, "cert_dir": tmp_path / "certs"},
    )
    daemon = Daemon(settings, dsn=database_url)
    recorder = Recorder()
    daemon.completion_listeners.append(recorder)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.started.wait(), 30)
    try:
        yield Running(daemon, recorder, signer, tmp_path / "outgoing")
    finally:
        daemon.request_stop()
        await task


async def _post(url: str, data: bytes | dict[str, Any], **headers: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers) as response,
    ):
        return response.status, await response.text()


async def _get(url: str) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text(), dict(response.headers)


async def test_health_readiness_and_metrics(running: Running) -> None:
    status, text, _ = await _get(running.url + "/healthz")
    assert (status, text) == (200, "ok\n")
    status, text, _ = await _get(running.url + "/readyz")
    assert (status, text) == (200, "ready\n")
    status, text, _ = await _get(running.admin_url + "/readyz")
    assert (status, text) == (200, "ready\n")
    status, text, headers = await _get(running.admin_url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "outboxd_build_info{" in text and 'outboxd_http_connections{server="admin"}' in text


async def test_the_public_port_tells_nothing_about_the_daemon(running: Running) -> None:
    running.daemon.lanes["email"].pause("refused the login of 'mailer' at smtp.acme.example")
    status, text, _ = await _get(running.url + "/readyz")
    assert (status, text) == (503, "not ready\n")
    status, text, _ = await _get(running.admin_url + "/readyz")
    assert status == 503 and "refused the login of 'mailer' at smtp.acme.example" in text
    status, text, _ = await _get(running.url + "/metrics")
    assert status == 404 and running.daemon.worker_id not in text


async def test_readiness_reports_stopping(running: Running) -> None:
    running.daemon.stopping.set()
    status, text, _ = await _get(running.admin_url + "/readyz")
    assert status == 503 and "stopping" in text
    status, text, _ = await _get(running.url + "/readyz")
    assert (status, text) == (503, "not ready\n")


async def _sent_email(pool: asyncpg.Pool, running: Running, **kwargs: Any) -> int:
    message_id = await enqueue_one(
        pool,
        channel="email",
        template=kwargs.pop("template", "welcome"),
        context=kwargs.pop("context", {"name": "Ann", "login_url": "https://x.example"}),
        **kwargs,
    )
    await running.recorder.wait_for(len(running.recorder.completions) + 1, within=10)
    return message_id


async def test_bounce_suppresses_and_the_next_send_is_suppressed(
    pool: asyncpg.Pool, running: Running
) -> None:
    first = await _sent_email(pool, running, recipient="ann@example.com")
    await pool.execute(
        "UPDATE outbox.message SET provider_message_id = '0100018c-ses-message-id-000001'"
    )
    bounce = (FIXTURES / "notification_bounce_permanent.json").read_text()
    fields = running.signer.notification(bounce)
    status, text = await _post(
        running.url + "/webhooks/sns", body(fields), **{"x-amz-sns-message-type": "Notification"}
    )
    assert (status, text) == (200, "recorded 1 event(s)\n")
    # SNS retries deliver the same MessageId: nothing new is recorded.
    status, text = await _post(running.url + "/webhooks/sns", body(fields))
    assert (status, text) == (200, "recorded 0 event(s)\n")
    second = await _sent_email(pool, running, recipient="Ann@Example.com")
    rows = await statuses(pool)
    assert rows[first]["status"] == "bounced"
    assert rows[second]["status"] == "suppressed"
    assert rows[second]["last_error"] == "recipient suppressed (bounce)"
    assert not (running.outgoing / f"{second}.eml").exists()


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda f: {**f, "Message": f["Message"] + " "}, 403),
        (lambda f: {**f, "TopicArn": "arn:aws:sns:us-east-1:1:other"}, 403),
        (
            lambda f: {**f, "SigningCertURL": "https://evil.test/SimpleNotificationService-1.pem"},
            403,
        ),
        (lambda f: {k: v for k, v in f.items() if k != "Signature"}, 400),
        (lambda f: {"notificationType": "Bounce"}, 400),
    ],
)
async def test_bad_webhook_requests_change_nothing(
    pool: asyncpg.Pool, running: Running, mutate: Any, status: int
) -> None:
    fields = running.signer.notification((FIXTURES / "event_delivery.json").read_text())
    code, _ = await _post(running.url + "/webhooks/sns", body(mutate(fields)))
    assert code == status
    assert await pool.fetchval("SELECT count(*) FROM outbox.event") == 0


async def test_oversized_webhook_body_is_refused(running: Running) -> None:
    code, _ = await _post(running.url + "/webhooks/sns", b"x" * (300 * 1024))
    assert code == 413


async def test_signed_non_ses_message_is_a_bad_request(running: Running) -> None:
    fields = running.signer.notification({"hello": "world"})
    code, text = await _post(running.url + "/webhooks/sns", body(fields))
    assert code == 400 and "not an SES event" in text


async def test_subscription_confirmation_with_a_foreign_url_is_refused(running: Running) -> None:
    fields = running.signer.subscription(
        subscribe_url="https://169.254.169.254/?Action=ConfirmSubscription"
    )
    code, _ = await _post(running.url + "/webhooks/sns", body(fields))
    assert code == 400


def _unsubscribe_url(eml: Path) -> str:
    mail = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    header = str(mail["List-Unsubscribe"])
    assert str(mail["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    match = re.search(r"<(https://[^>]+)>", header)
    assert match is not None, header
    return match.group(1)


async def test_one_click_unsubscribe_loop(pool: asyncpg.Pool, running: Running) -> None:
    context = {"name": "Bo", "balance": 2.5, "currency": "EUR", "top_up_url": "https://x.example"}
    first = await _sent_email(
        pool, running, recipient="bo@example.com", template="billing/low_balance",
        context=context, category="billing_alerts",
    )  # fmt: skip
    link = _unsubscribe_url(running.outgoing / f"{first}.eml")
    assert link.startswith("https://mail.acme.example/unsubscribe?token=")
    local = running.url + "/unsubscribe?" + urlsplit(link).query
    # GET shows a page and changes nothing (mail scanners prefetch links).
    status, page, _ = await _get(local)
    assert status == 200 and "billing_alerts" in page and "b***@example.com" in page
    assert await pool.fetchval("SELECT count(*) FROM outbox.preference") == 0
    # RFC 8058 one-click POST.
    status, text = await _post(local, {"List-Unsubscribe": "One-Click"})
    assert (status, text) == (200, "unsubscribed\n")
    marketing = await _sent_email(
        pool, running, recipient="bo@example.com", template="billing/low_balance",
        context=context, category="billing_alerts",
    )  # fmt: skip
    receipt = await _sent_email(pool, running, recipient="bo@example.com")
    rows = await statuses(pool)
    assert rows[marketing]["status"] == "suppressed"
    assert "opted out" in rows[marketing]["last_error"]
    assert rows[receipt]["status"] == "sent"  # transactional mail still arrives
    # Transactional mail carries no unsubscribe header.
    transactional = email.message_from_bytes((running.outgoing / f"{receipt}.eml").read_bytes())
    assert transactional["List-Unsubscribe"] is None


async def test_one_click_accepts_multipart(pool: asyncpg.Pool, running: Running) -> None:
    context = {"name": "Cy", "balance": 1, "currency": "EUR", "top_up_url": "https://x.example"}
    first = await _sent_email(
        pool, running, recipient="cy@example.com", template="billing/low_balance",
        context=context, category="news",
    )  # fmt: skip
    query = urlsplit(_unsubscribe_url(running.outgoing / f"{first}.eml")).query
    form = aiohttp.FormData()
    form.add_field("List-Unsubscribe", "One-Click")
    form._is_multipart = True  # what mail providers send for RFC 8058 may be multipart
    async with (
        aiohttp.ClientSession() as session,
        session.post(running.url + "/unsubscribe?" + query, data=form) as response,
    ):
        assert response.status == 200
    prefs = await pool.fetch("SELECT category, opted_out FROM outbox.preference")
    assert [(r["category"], r["opted_out"]) for r in prefs] == [("news", True)]


@pytest.mark.parametrize("query", ["", "token=", "token=abc.def", "token=" + "a" * 5000])
async def test_bad_unsubscribe_tokens_are_refused(
    pool: asyncpg.Pool, running: Running, query: str
) -> None:
    status, _, _ = await _get(running.url + "/unsubscribe?" + query)
    assert status == 400
    code, _ = await _post(running.url + "/unsubscribe?" + query, {"List-Unsubscribe": "One-Click"})
    assert code == 400
    assert await pool.fetchval("SELECT count(*) FROM outbox.preference") == 0


async def test_preference_page_actions(pool: asyncpg.Pool, running: Running) -> None:
    links = running.daemon.links
    assert hasattr(links, "url")
    url = links.url("email", "dee@example.com", "news")  # type: ignore[attr-defined]
    local = running.url + "/unsubscribe?" + urlsplit(url).query
    status, page = await _post(local, {"action": "unsubscribe"})
    assert status == 200 and "You are unsubscribed" in page
    status, page = await _post(local, {"action": "resubscribe"})
    assert status == 200 and "Welcome back" in page
    status, page = await _post(local, {"action": "save"})  # nothing kept: opts out of all
    assert status == 200 and "Preferences saved" in page
    status, page = await _post(local, [("action", "save"), ("action", "all")])  # type: ignore[arg-type]
    assert status == 200 and "everything optional" in page
    reason = await pool.fetchval("SELECT reason FROM outbox.suppression")
    assert reason == "unsubscribe"
    assert parse_qs(urlsplit(url).query)["token"]


async def test_deeply_nested_json_is_a_bad_request(pool: asyncpg.Pool, running: Running) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    code, _ = await _post(running.url + "/webhooks/sns", f'{{"Type": {deep}}}'.encode())
    assert code == 400
    signed = running.signer.notification('{"eventType": "Send", "mail": ' + deep + "}")
    code, text = await _post(running.url + "/webhooks/sns", body(signed))
    assert code == 400 and "nested" in text
    assert await pool.fetchval("SELECT count(*) FROM outbox.event") == 0


async def test_one_bounce_counts_once_whatever_envelope_it_comes_in(
    pool: asyncpg.Pool, running: Running
) -> None:
    await _sent_email(pool, running, recipient="ann@example.com")
    await pool.execute(
        "UPDATE outbox.message SET provider_message_id = '0100018c-ses-message-id-000001'"
    )
    bounce = (FIXTURES / "notification_bounce_transient.json").read_text()
    # SNS signs each delivery anew: the same SES event under two MessageIds (two topics,
    # or a replay) is still one event.
    for expected in ("recorded 1 event(s)\n", "recorded 0 event(s)\n"):
        fields = running.signer.notification(bounce)
        status, text = await _post(running.url + "/webhooks/sns", body(fields))
        assert (status, text) == (200, expected)
    assert await pool.fetchval("SELECT count(*) FROM outbox.event") == 1


async def test_a_signed_bounce_for_an_address_we_never_wrote_to_suppresses_nobody(
    pool: asyncpg.Pool, running: Running
) -> None:
    bounce = (FIXTURES / "notification_bounce_permanent.json").read_text()
    status, text = await _post(
        running.url + "/webhooks/sns", body(running.signer.notification(bounce))
    )
    assert (status, text) == (200, "recorded 1 event(s)\n")
    assert await pool.fetchval("SELECT count(*) FROM outbox.suppression") == 0
    assert await pool.fetchval("SELECT message_id FROM outbox.event") is None


def _local_unsubscribe_url(running: Running, recipient: str, category: str = "news") -> str:
    url = running.daemon.links.url("email", recipient, category)  # type: ignore[attr-defined]
    return running.url + "/unsubscribe?" + urlsplit(url).query


async def _raw_post(url: str, data: bytes, content_type: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers={"Content-Type": content_type}) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n'
         b'--b\r\nContent-Disposition: form-data; name="keep"; filename="x.txt"\r\n'
         b"Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n",
         "multipart/form-data; boundary=b", 400),
        (b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded; charset=bogus-9", 415),
        (b"action=save&keep=%FF", "application/x-www-form-urlencoded", 400),
        (b'--b\r\nContent-Disposition: form-data; name="action"\r\nContent-Type: text/plain; '
         b'charset=no-such\r\n\r\nsave\r\n--b--\r\n', "multipart/form-data; boundary=b", 415),
        (b"List-Unsubscribe=One-Click", "multipart/form-data", 400),
        (b"List-Unsubscribe=One-Click", "multipart/form-data; boundary=", 400),
        (b"{}", "application/json", 415),
        (b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded; charset=\"", 415),
    ],
)  # fmt: skip
async def test_unreadable_unsubscribe_forms_are_4xx_and_change_nothing(
    pool: asyncpg.Pool, running: Running, data: bytes, content_type: str, status: int
) -> None:
    url = _local_unsubscribe_url(running, "fay@example.com")
    code, _ = await _raw_post(url, data, content_type)
    assert code == status
    assert await pool.fetchval("SELECT count(*) FROM outbox.preference") == 0


async def test_pages_cannot_be_framed_sniffed_or_cached(running: Running) -> None:
    url = _local_unsubscribe_url(running, "gus@example.com")
    for target in (url, running.url + "/unsubscribe?token=bogus"):
        _, _, headers = await _get(target)
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "script-src" not in policy and "unsafe-inline" not in policy
    _, _, headers = await _get(running.url + "/healthz")
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_unsubscribe_links_do_not_show_the_address(
    pool: asyncpg.Pool, running: Running
) -> None:
    context = {"name": "Hal", "balance": 1, "currency": "EUR", "top_up_url": "https://x.example"}
    sent = await _sent_email(
        pool, running, recipient="hal.jordan@example.com", template="billing/low_balance",
        context=context, category="news",
    )  # fmt: skip
    link = _unsubscribe_url(running.outgoing / f"{sent}.eml")
    token = parse_qs(urlsplit(link).query)["token"][0]
    padded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"hal" not in padded.lower() and "hal" not in link.lower()
    status, page, _ = await _get(running.url + "/unsubscribe?" + urlsplit(link).query)
    assert status == 200 and "h***@example.com" in page


async def test_links_of_the_earlier_format_work_through_the_rotation_period(
    pool: asyncpg.Pool, running: Running
) -> None:
    now = int(time.time())
    fresh = legacy_token(b"test-key-1", "email", "ivy@example.com", "news", now - 86400)
    stale = legacy_token(b"test-key-1", "email", "ivy@example.com", "news", now - 91 * 86400)
    status, _ = await _post(
        f"{running.url}/unsubscribe?token={stale}", {"List-Unsubscribe": "One-Click"}
    )
    assert status == 400
    assert await pool.fetchval("SELECT count(*) FROM outbox.preference") == 0
    status, text = await _post(
        f"{running.url}/unsubscribe?token={fresh}", {"List-Unsubscribe": "One-Click"}
    )
    assert (status, text) == (200, "unsubscribed\n")
    assert await pool.fetchval("SELECT recipient FROM outbox.preference") == "ivy@example.com"
