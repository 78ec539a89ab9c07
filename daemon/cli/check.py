"""``outboxd check``: validates what the daemon needs before it runs.

Each check prints one line (ok / FAIL with the reason); the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import asyncpg

from daemon import db
from daemon.delivery.render import Renderer
from daemon.settings import EmailProviderName, Settings, SmsProviderName
from outbox import errors
from outbox.store import Store

_TIMEOUT = 10.0


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = 0

    def ok(self, what: str, detail: str = "") -> None:
        print(f"ok    {what}{': ' + detail if detail else ''}", file=self.out)

    def fail(self, what: str, reason: str) -> None:
        self.failed += 1
        print(f"FAIL  {what}: {reason}", file=self.out)

    async def check(self, what: str, probe: Callable[[], Awaitable[str]]) -> bool:
        try:
            async with asyncio.timeout(_TIMEOUT):
                detail = await probe()
        except Exception as exc:  # every failure is reported, none stops the other checks
            self.fail(what, _reason(exc))
            return False
        self.ok(what, detail)
        return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {_TIMEOUT:g}s"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, errors.OutboxError) else f"{type(exc).__name__}: {text}"


async def run(settings: Settings, out: TextIO = sys.stdout) -> int:
    report = Report(out)
    report.ok("configuration")
    renderer = Renderer.from_settings(settings)
    report.ok("templates directory", str(settings.templates_path))

    try:
        dsn, embedded = db.resolve_dsn(settings)
    except Exception as exc:
        report.fail("database", _reason(exc))
        return 1
    pool: asyncpg.Pool | None = None

    async def connect() -> str:
        nonlocal pool
        pool = await db.create_pool(
            dsn,
            min_size=1,
            max_size=2,
            timeout=_TIMEOUT,
            transaction_pooling=settings.transaction_pooling,
        )
        version = await pool.fetchval("SHOW server_version")
        return f"PostgreSQL {version}" + (" (embedded)" if embedded else "")

    if await report.check("database connection", connect):
        assert pool is not None
        try:
            await _check_schema_and_templates(report, pool, renderer)
        finally:
            await pool.close()

    await _check_providers(report, settings)
    print(
        ("all checks passed" if not report.failed else f"{report.failed} check(s) failed"), file=out
    )
    return 1 if report.failed else 0


async def _check_schema_and_templates(
    report: Report, pool: asyncpg.Pool, renderer: Renderer
) -> None:
    async def schema() -> str:
        current, expected = await db.schema_status(pool)
        if current is None:
            raise errors.SchemaError("the outbox schema does not exist: run `outboxd migrate`")
        if current != expected:
            raise errors.SchemaError(
                f"schema is at version {current}, this outboxd needs {expected}: "
                "run `outboxd migrate`"
            )
        return f"version {current}"

    if not await report.check("schema", schema):
        return
    store = Store(pool)
    rows = await store.pending_templates(200)
    if not rows:
        report.ok("templates of pending messages", "none pending")
    for row in rows:
        locale = f", locale {row['locale']}" if row["locale"] else ""
        what = f"template {row['template']!r} ({row['channel']}{locale}, {row['n']} pending)"
        await report.check(what, functools.partial(_render_sample, store, renderer, row))


async def _render_sample(store: Store, renderer: Renderer, row: Any) -> str:
    sample = await store.message(row["sample_id"])
    if sample is None:
        return "sent meanwhile"
    from outbox.models import Message

    message = Message.from_record({**dict(sample), "suppressed_reason": None})
    context = {
        **message.context,
        "recipient": message.recipient,
        "message_id": message.id,
        "unsubscribe_url": "https://example.invalid/unsubscribe",
    }
    if message.recipient_key is not None:  # a person's row: templates see the person
        [message] = await store.with_people([message])
        if message.person is None:
            return f"not rendered: {message.suppressed_reason}"
        context.update(person=message.person, preferences_url="https://example.invalid/p")
    renderer.render(
        channel=message.channel,
        template=message.template,
        context=context,
        locale=message.locale or (message.person or {}).get("locale"),
    )
    return f"renders (checked with message {message.id})"


async def _check_providers(report: Report, settings: Settings) -> None:
    if settings.email.provider == EmailProviderName.SMTP:
        await report.check("SMTP server", lambda: _probe_smtp(settings))
    if settings.email.provider == EmailProviderName.SES:
        await report.check("SES account", lambda: _probe_ses(settings))
    if settings.sms.provider == SmsProviderName.SNS:
        await report.check("SNS SMS", lambda: _probe_sns(settings))
    if settings.email.provider == EmailProviderName.FILE or settings.sms.provider == "file":
        report.ok("file provider", str(settings.file_dir.resolve()))


async def _probe_smtp(settings: Settings) -> str:
    import aiosmtplib

    smtp = settings.smtp
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        timeout=min(smtp.timeout, _TIMEOUT),
        use_tls=smtp.tls == "tls",
        start_tls=smtp.tls == "starttls",
        validate_certs=smtp.validate_certs,
    )
    await client.connect()
    try:
        if smtp.username and smtp.password:
            await client.login(smtp.username, smtp.password.get_secret_value())
        code, _ = await client.noop()
    finally:
        client.close()
    return f"{smtp.host}:{smtp.port} answers ({code})"


async def _probe_ses(settings: Settings) -> str:
    from daemon.providers.ses import SesProvider

    provider = SesProvider(settings.aws, settings.ses, sender=settings.email.sender, reply_to=None)
    async with provider:
        rate = await provider.max_send_rate()
    return f"credentials work, max send rate {rate if rate is not None else 'unknown'}/s"


async def _probe_sns(settings: Settings) -> str:
    from daemon.providers import aws

    async with aws.client("sns", settings.aws) as client:
        attributes = await client.get_sms_attributes()
    sms_type = attributes.get("attributes", {}).get("DefaultSMSType", "default")
    return f"credentials work (DefaultSMSType {sms_type})"


def register(commands: Any) -> None:
    check = commands.add_parser(
        "check", help="check configuration, database, schema, templates and providers"
    )
    check.set_defaults(handler=cmd_check)


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run(settings))
