"""The stack outboxd replaces, measured beside it by ``outboxd bench --compare celery``.

A Celery worker on a Redis broker, written the way such workers usually are, does the
same work as outboxd: for each row of the same backlog it loads the message, renders the
same templates (with outboxd's own renderer, so rendering costs the same on both sides),
builds the email with the standard library's ``EmailMessage``, sends it through a
persistent ``smtplib`` connection to the same SMTP sink, and marks the row sent. The
application side enqueues one task per committed row, as ``transaction.on_commit(...)``
does. Settings are the safe ones people run in production: ``acks_late`` (a task is not
lost with a worker) and no result backend.

This module is both the worker's Celery app (``celery -A daemon.bench.celery_peer worker``,
configured from ``OUTBOXD_BENCH_CELERY_*`` variables) and the driver that starts it.
Celery and the Redis client are not outboxd dependencies: ``pip install celery redis``.
"""

from __future__ import annotations

import asyncio
import email.message
import os
import smtplib
import subprocess
import sys
from typing import Any

import asyncpg

TASK = "outboxd_bench.send_notification"
_BROKER = "OUTBOXD_BENCH_CELERY_BROKER"
_DSN = "OUTBOXD_BENCH_CELERY_DSN"
_SMTP_PORT = "OUTBOXD_BENCH_CELERY_SMTP_PORT"


def _make_app() -> Any:
    import celery  # imported here: the driver must fail clearly when it is missing

    app = celery.Celery("outboxd_bench", broker=os.environ.get(_BROKER, "redis://"))
    app.conf.update(
        task_acks_late=True,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    app.task(name=TASK)(send_notification)
    return app


class _WorkerState:
    """What one worker process keeps between tasks: database and SMTP connections."""

    def __init__(self) -> None:
        import psycopg

        from daemon.delivery.render import Renderer
        from daemon.settings import Settings

        settings = Settings()
        self.renderer = Renderer.from_settings(settings)
        self.db = psycopg.connect(os.environ[_DSN], autocommit=True)
        self.smtp = smtplib.SMTP("127.0.0.1", int(os.environ[_SMTP_PORT]))


_state: _WorkerState | None = None


def send_notification(message_id: int) -> None:
    """The task: load, render, build, send, mark sent."""
    global _state
    if _state is None:
        _state = _WorkerState()
    row = _state.db.execute(
        "SELECT recipient, template, context FROM outbox.message WHERE id = %s", (message_id,)
    ).fetchone()
    if row is None:
        return
    recipient, template, context = row
    rendered = _state.renderer.render(
        channel="email",
        template=template,
        context={**context, "recipient": recipient, "message_id": message_id},
    )
    mail = email.message.EmailMessage()
    mail["From"] = "bench <bench@example.com>"
    mail["To"] = recipient
    mail["Subject"] = rendered.subject
    mail.set_content(rendered.text or "")
    if rendered.html:
        mail.add_alternative(rendered.html, subtype="html")
    _state.smtp.send_message(mail)
    _state.db.execute(
        "UPDATE outbox.message SET status = 'sent', sent_at = now(), provider = 'celery' "
        "WHERE id = %s",
        (message_id,),
    )


if os.environ.get(_BROKER):  # loaded by `celery -A daemon.bench.celery_peer worker`
    app = _make_app()


def _enqueue(app: Any, ids: list[int]) -> None:
    with app.producer_or_acquire() as publisher:
        for message_id in ids:
            app.send_task(TASK, args=[message_id], producer=publisher)


async def drain(dsn: str, *, broker: str, smtp_port: int, processes: int) -> dict[str, Any]:
    """Enqueue a task per pending row, drain them with a Celery worker, time the sends."""
    try:
        import celery  # noqa: F401
        import psycopg  # noqa: F401
        import redis
    except ImportError as exc:
        raise SystemExit(
            f"outboxd bench --compare celery needs Celery and redis-py: pip install celery redis "
            f"({exc})"
        ) from exc
    redis.Redis.from_url(broker).flushdb()  # a broker database of the bench's own
    env = {**os.environ, _BROKER: broker, _DSN: dsn, _SMTP_PORT: str(smtp_port)}
    os.environ[_BROKER] = broker
    producer = _make_app()
    conn = await asyncpg.connect(dsn)
    try:
        due = "FROM outbox.message WHERE status = 'pending' AND not_before <= now()"
        ids = [r["id"] for r in await conn.fetch(f"SELECT id {due} ORDER BY id")]
        await asyncio.to_thread(_enqueue, producer, ids)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "celery", "-A", "daemon.bench.celery_peer", "worker",
            "--pool", "prefork", "--concurrency", str(processes), "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            from daemon.bench import support

            return await support.watch_drain(
                conn,
                len(ids),
                worker,
                await support.CpuMeter.of(conn, worker.pid, side="celery"),
                f"SELECT count(*) {due}",
            )
        finally:
            await support.stop(worker, grace=10)
    finally:
        await conn.close()
