"""A runaway template against a real ``outboxd run``: the process stays responsive, the
row fails for good with a reason, the others are sent, SIGTERM stops it."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from tests.integration.enqueue_helpers import enqueue_one
from tests.integration.test_faults_smtp import _get, daemon_env, http_env, start_daemon, wait_ready


@pytest.mark.slow
async def test_a_runaway_template_fails_alone_and_the_process_stays_responsive(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    for name, text in [
        ("runaway", "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}"
                    "{% endfor %}"),
        ("huge_range", "{% for i in range(10**8) %}x{% endfor %}"),
        ("hello", "Hello {{ name }}"),
    ]:  # fmt: skip
        (templates / name).mkdir(parents=True)
        (templates / name / "subject.j2").write_text("Hi")
        (templates / name / "text.j2").write_text(text)
    env, admin = http_env(daemon_env(database_url, tmp_path, 1))
    env.update(
        OUTBOXD_EMAIL__PROVIDER="file", OUTBOXD_TEMPLATES_DIR=str(templates),
        OUTBOXD_WORKER__RENDER_TIMEOUT="1", OUTBOXD_WORKER__GRACE_SECONDS="5",
    )  # fmt: skip
    runaway = [
        await enqueue_one(
            pool, channel="email", recipient=f"r{i}@example.com", template="runaway", context={}
        )
        for i in range(2)
    ]
    huge = await enqueue_one(pool, channel="email", recipient="h@example.com",
                             template="huge_range", context={})  # fmt: skip
    hello = [
        await enqueue_one(
            pool,
            channel="email",
            recipient=f"u{i}@example.com",
            template="hello",
            context={"name": "Ann"},
        )
        for i in range(20)
    ]
    proc = start_daemon(env, tmp_path / "daemon.log")
    try:
        await wait_ready(admin, proc)
        # While the runaways render: /healthz answers at once, every time.
        slowest = 0.0
        deadline = time.monotonic() + 30
        while True:
            started = time.monotonic()
            assert (await _get(admin, "/healthz"))[0] == 200
            slowest = max(slowest, time.monotonic() - started)
            rows = await pool.fetch("SELECT id, status, attempts, last_error FROM outbox.message")
            by_id = {r["id"]: r for r in rows}
            if all(by_id[i]["status"] == "failed" for i in runaway) and all(
                by_id[i]["status"] == "sent" for i in hello
            ):
                break
            assert time.monotonic() < deadline, {i: by_id[i]["status"] for i in runaway}
            await asyncio.sleep(0.1)
        assert slowest < 1.0, slowest
        # One attempt each, and the reason says what happened.
        for i in runaway:
            assert by_id[i]["attempts"] == 1
            assert "longer than its 1s budget" in by_id[i]["last_error"]
        assert by_id[huge]["status"] == "failed"
        assert "Range too big" in by_id[huge]["last_error"]
        # SIGTERM is heard at once, even with a runaway still rendering.
        await enqueue_one(pool, channel="email", recipient="r9@example.com",
                          template="runaway", context={})  # fmt: skip
        await asyncio.sleep(0.5)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        assert time.monotonic() - stopped_at < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
