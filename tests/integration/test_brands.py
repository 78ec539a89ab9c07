"""Brands: each sends as itself (From, Reply-To, SES configuration set and tenant, through
moto's SES server), templates see it, and its unsubscribe links hold for it alone."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import boto3
import pytest
from moto.ses.models import ses_backends

from daemon.main import Daemon
from daemon.tokens import read_token
from tests.integration.aws_fake import ACCOUNT, SENDER, aws_credentials, moto_url
from tests.integration.daemon_helpers import drain, make_settings, statuses

__all__ = ["aws_credentials", "moto_url"]

BRANDS = """
INSERT INTO outbox.brand (key, name, from_address, reply_to, ses_configuration_set,
                          ses_tenant, url, logo_url, colors, postal_address,
                          unsubscribe_base_url)
VALUES ('acme', 'Acme', 'Acme <hi@acme.example>', 'help@acme.example', 'acme-events',
        'acme-tenant', 'https://acme.example', 'https://acme.example/logo.png',
        '{"primary": "#ff0000"}', '1 Acme Road', 'https://mail.acme.example'),
       ('globex', 'Globex', 'Globex <news@globex.example>', NULL, 'globex-events',
        NULL, NULL, NULL, '{}', NULL, NULL)
"""
WELCOME = '{"name": "Ann", "login_url": "https://x.example"}'


async def _enqueue(pool: asyncpg.Pool, recipient: str, brand: str | None, **extra: Any) -> int:
    args = ", ".join(f"{k} => ${i + 4}" for i, k in enumerate(extra))
    message_id: int = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'email', recipient => $1, template => 'welcome', "
        f"context => $2::jsonb, brand => $3{', ' + args if args else ''})",
        recipient, WELCOME, brand, *extra.values(),
    )  # fmt: skip
    return message_id


def _moto_api(moto: str, action: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(f"{moto}/moto-api/recorder/{action}", method=method)
    with urllib.request.urlopen(request) as answer:
        data: bytes = answer.read()
    return data


def _recorded_sends(moto: str) -> list[dict[str, Any]]:
    """SendEmail requests as moto's server received them (its own recorder)."""
    sends = []
    for line in _moto_api(moto, "download-recording").decode().splitlines():
        entry = json.loads(line)
        if entry["url"].endswith("/v2/email/outbound-emails"):
            body = entry["body"]
            sends.append(json.loads(base64.b64decode(body) if entry["body_encoded"] else body))
    return sends


async def test_two_brands_send_as_themselves_through_moto_ses(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # where moto's recorder writes its file
    ses = boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url)
    for identity in ("acme.example", "globex.example"):
        ses.create_email_identity(EmailIdentity=identity)
    await asyncio.to_thread(_moto_api, moto_url, "start-recording", "POST")
    try:
        await _send_as_brands(pool, database_url, tmp_path, moto_url)
    finally:  # the recorder is process-wide: later tests must not write to it
        await asyncio.to_thread(_moto_api, moto_url, "stop-recording", "POST")


async def _send_as_brands(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, moto_url: str
) -> None:
    await pool.execute(BRANDS)
    acme = await _enqueue(pool, "ann@example.com", "acme")
    globex = await _enqueue(pool, "bob@example.com", "globex")
    plain = await _enqueue(pool, "cy@example.com", None)
    settings = make_settings(
        database_url, tmp_path,
        email={"provider": "ses", "from": f"Default <{SENDER}>", "reply_to": "desk@acme.example"},
        aws={"endpoint_url": moto_url}, ses={"configuration_set": "default-events"},
    )  # fmt: skip
    await drain(settings, database_url)
    assert {r["status"] for r in (await statuses(pool)).values()} == {"sent"}
    sent = {m.destinations["ToAddresses"][0]: m for m in
            ses_backends[ACCOUNT]["us-east-1"].sent_messages}  # fmt: skip
    assert sent["ann@example.com"].source == "Acme <hi@acme.example>"
    assert sent["bob@example.com"].source == "Globex <news@globex.example>"
    assert sent["cy@example.com"].source == f"Default <{SENDER}>"
    assert "Acme" in sent["ann@example.com"].subject
    recorded = await asyncio.to_thread(_recorded_sends, moto_url)
    requests = {r["Destination"]["ToAddresses"][0]: r for r in recorded}
    assert requests["ann@example.com"]["ConfigurationSetName"] == "acme-events"
    assert requests["ann@example.com"]["TenantName"] == "acme-tenant"
    assert requests["ann@example.com"]["ReplyToAddresses"] == ["help@acme.example"]
    assert requests["bob@example.com"]["ConfigurationSetName"] == "globex-events"
    assert "TenantName" not in requests["bob@example.com"]
    # A brand with its own From does not borrow another sender's Reply-To.
    assert "ReplyToAddresses" not in requests["bob@example.com"]
    assert requests["cy@example.com"]["ConfigurationSetName"] == "default-events"
    assert requests["cy@example.com"]["ReplyToAddresses"] == ["desk@acme.example"]
    assert sorted([acme, globex, plain]) == [acme, globex, plain]


async def test_templates_see_the_brand_and_links_carry_it(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    templates = tmp_path / "templates" / "promo"
    templates.mkdir(parents=True)
    (templates / "subject.j2").write_text("News from {{ brand.name }}")
    (templates / "text.j2").write_text(
        "{{ brand.name }} {{ brand.logo_url }} {{ brand.colors.primary | default('-') }} "
        "{{ brand.address }} {{ unsubscribe_url }}"
    )
    await pool.execute(BRANDS)
    ids = {}
    for brand in ("acme", None):
        ids[brand] = await pool.fetchval(
            "SELECT outbox.enqueue(channel => 'email', recipient => 'ann@example.com', "
            "template => 'promo', category => 'marketing', brand => $1)",
            brand,
        )
    settings = make_settings(
        database_url, tmp_path, templates_dir=tmp_path / "templates",
        public_url="https://outbox.example", secret_key="k1", brand_name="Default Co",
    )  # fmt: skip
    await drain(settings, database_url)
    branded = _mail(tmp_path / "outgoing" / f"{ids['acme']}.eml")
    assert str(branded["From"]) == "Acme <hi@acme.example>"
    assert str(branded["Reply-To"]) == "help@acme.example"
    assert str(branded["Subject"]) == "News from Acme"
    body = branded.get_content()
    assert "Acme https://acme.example/logo.png #ff0000 1 Acme Road" in body
    link = re.search(r"https://\S+", body.split("1 Acme Road", 1)[1])
    assert link is not None and link[0].startswith("https://mail.acme.example/unsubscribe?")
    token = urlsplit(link[0]).query.removeprefix("token=")
    claim = read_token([b"k1"], token)
    assert (claim.recipient, claim.category, claim.brand) == (
        "ann@example.com",
        "marketing",
        "acme",
    )
    plain = _mail(tmp_path / "outgoing" / f"{ids[None]}.eml")
    assert str(plain["Subject"]) == "News from Default Co"
    assert "https://outbox.example/unsubscribe?" in plain.get_content()
    plain_link = re.search(r"https://outbox\.example/\S+", plain.get_content())
    assert plain_link is not None
    plain_claim = read_token([b"k1"], urlsplit(plain_link[0]).query.removeprefix("token="))
    assert plain_claim.brand is None


def _mail(path: Path) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


async def test_a_brand_opt_out_holds_for_that_brand_and_bounces_for_all(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await pool.execute(BRANDS)
    first = await _enqueue(pool, "ann@example.com", "acme", category="marketing")
    settings = make_settings(
        database_url, tmp_path, http={"host": "127.0.0.1", "port": 0, "admin_port": 0},
        public_url="https://outbox.example", secret_key="k1", hooks={"enabled": False},
    )  # fmt: skip
    await pool.execute(  # never posted to: the webhook lane is off here
        "INSERT INTO outbox.webhook_endpoint (url, secret, events) "
        "VALUES ('https://hooks.example.com/h', 'whsec_0123456789abcdef', "
        "ARRAY['recipient.unsubscribed'])"
    )
    daemon = Daemon(settings, dsn=database_url)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.started.wait(), 30)
        for _ in range(600):
            if (await statuses(pool))[first]["status"] == "sent":
                break
            await asyncio.sleep(0.05)
        mail = _mail(tmp_path / "outgoing" / f"{first}.eml")
        link = re.search(r"<(https://[^>]+)>", str(mail["List-Unsubscribe"]))
        assert link is not None and link[1].startswith("https://mail.acme.example/")
        local = f"http://127.0.0.1:{daemon.http_port}/unsubscribe?{urlsplit(link[1]).query}"
        async with aiohttp.ClientSession() as session:
            async with session.post(local, data={"List-Unsubscribe": "One-Click"}) as answer:
                assert (answer.status, await answer.text()) == (200, "unsubscribed\n")
            async with session.get(local) as page:
                assert page.status == 200 and "marketing" in await page.text()
    finally:
        daemon.request_stop()
        await task
    assert await pool.fetchval("SELECT count(*) FROM outbox.preference") == 0  # not global
    [event] = await pool.fetch("SELECT type, data FROM outbox.webhook_delivery")
    assert event["type"] == "recipient.unsubscribed"
    assert json.loads(event["data"]) == {
        "channel": "email", "recipient": "ann@example.com", "category": "marketing",
        "brand": "acme", "status": "unsubscribed",
    }  # fmt: skip
    later = {
        "acme marketing": await _enqueue(pool, "ANN@example.com", "acme", category="marketing"),
        "acme transactional": await _enqueue(pool, "ann@example.com", "acme"),
        "globex marketing": await _enqueue(pool, "ann@example.com", "globex", category="marketing"),
        "no brand marketing": await _enqueue(pool, "ann@example.com", None, category="marketing"),
    }
    await drain(settings.model_copy(update={"http": settings.http.model_copy(
        update={"enabled": False})}), database_url)  # fmt: skip
    rows = await statuses(pool)
    assert {k: rows[i]["status"] for k, i in later.items()} == {
        "acme marketing": "suppressed",
        "acme transactional": "sent",
        "globex marketing": "sent",
        "no brand marketing": "sent",
    }
    assert "opted out of brand 'acme'" in rows[later["acme marketing"]]["last_error"]
    # A hard bounce is global: every brand's mail to the address stops.
    await pool.execute(
        "INSERT INTO outbox.suppression (channel, recipient, reason) "
        "VALUES ('email', 'ann@example.com', 'bounce')"
    )
    bounced = [await _enqueue(pool, "ann@example.com", b, category="marketing")
               for b in ("acme", "globex")]  # fmt: skip
    await drain(settings.model_copy(update={"http": settings.http.model_copy(
        update={"enabled": False})}), database_url)  # fmt: skip
    rows = await statuses(pool)
    assert [rows[i]["status"] for i in bounced] == ["suppressed", "suppressed"]


async def test_unknown_brands_are_refused_and_a_deleted_one_never_sends_as_another(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="no brand 'nope'"):
        await _enqueue(pool, "ann@example.com", "nope")
    await pool.execute("INSERT INTO outbox.recipient (key, email) VALUES ('u1', 'u@example.com')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="no brand 'nope'"):
        await pool.fetchval(
            "SELECT outbox.notify(recipient_key => 'u1', template => 'welcome', brand => 'nope')"
        )
    await pool.execute(BRANDS)
    await pool.execute("UPDATE outbox.recipient SET brand = 'globex' WHERE key = 'u1'")
    await pool.fetchval(
        "SELECT outbox.notify(recipient_key => 'u1', template => 'welcome', context => $1::jsonb,"
        " channels => ARRAY['email'])",
        WELCOME,
    )
    doomed = await _enqueue(pool, "ann@example.com", "acme")
    await pool.execute("DELETE FROM outbox.brand WHERE key = 'acme'")
    settings = make_settings(database_url, tmp_path, worker={"max_attempts": 2})
    await drain(settings, database_url)
    rows = await statuses(pool)
    assert rows[doomed]["status"] == "failed"
    assert "unknown brand 'acme'" in rows[doomed]["last_error"]
    [person_row] = [r for r in rows.values() if r["recipient_key"] == "u1"]
    assert (person_row["status"], person_row["brand"]) == ("sent", "globex")
    mail = _mail(tmp_path / "outgoing" / f"{person_row['id']}.eml")
    assert str(mail["From"]) == "Globex <news@globex.example>"


async def test_the_python_client_takes_a_brand(pool: asyncpg.Pool) -> None:
    from outbox import NewMessage, enqueue, enqueue_many, notify

    await pool.execute(BRANDS)
    await pool.execute("INSERT INTO outbox.recipient (key, email) VALUES ('u1', 'u@example.com')")
    async with pool.acquire() as conn:
        one = await enqueue(conn, channel="email", recipient="a@example.com",
                            template="welcome", brand="acme")  # fmt: skip
        many = await enqueue_many(conn, [
            NewMessage("email", "b@example.com", "welcome", brand="globex"),
            NewMessage("email", "c@example.com", "welcome"),
        ])  # fmt: skip
        notified = await notify(conn, recipient_key="u1", template="welcome", brand="globex",
                                channels=["email"])  # fmt: skip
        with pytest.raises(asyncpg.PostgresError, match="no brand 'nope'"):
            await enqueue_many(conn, [NewMessage("email", "d@example.com", "welcome",
                                                 brand="nope")])  # fmt: skip
    brands = dict(await pool.fetch("SELECT id, brand FROM outbox.message"))
    assert [brands[one], brands[many[0]], brands[many[1]]] == ["acme", "globex", None]
    assert (
        await pool.fetchval("SELECT brand FROM outbox.message WHERE notification_id = $1", notified)
        == "globex"
    )


async def test_the_readme_example(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> None:
    from tests.readme_blocks import block

    await pool.execute(block("Brands", "sql"))
    await drain(make_settings(database_url, tmp_path), database_url)
    [row] = (await statuses(pool)).values()
    assert (row["status"], row["brand"]) == ("sent", "acme")
    mail = _mail(tmp_path / "outgoing" / f"{row['id']}.eml")
    assert str(mail["From"]) == "Acme <hello@acme.example>"
    assert str(mail["Reply-To"]) == "support@acme.example"
    assert "Welcome to Acme" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert '<img src="https://acme.example/logo.png" alt="Acme"' in html  # the layout's logo


async def test_a_digest_keeps_its_items_brand(pool: asyncpg.Pool) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.integration.test_digests import flusher

    await pool.execute(BRANDS)
    await pool.execute(
        "INSERT INTO outbox.recipient (key, email, brand) VALUES ('u1', 'u@example.com', 'acme')"
    )
    start = datetime(2030, 1, 1, 12, tzinfo=UTC)
    for title in ("a", "b"):
        await pool.fetchval(
            "SELECT outbox.notify(recipient_key => 'u1', template => 'comment', "
            "context => jsonb_build_object('title', $1::text), category => 'social', "
            "channels => ARRAY['email'], not_before => $2, digest_key => 'post', "
            "digest_window => interval '10 minutes')",
            title, start,
        )  # fmt: skip
    counts = await flusher(pool).flush_due(as_of=start + timedelta(minutes=10))
    assert counts.digests == 1
    assert (
        await pool.fetchval(
            "SELECT brand FROM outbox.message WHERE template LIKE '%digest' AND status = 'pending'"
        )
        == "acme"
    )
