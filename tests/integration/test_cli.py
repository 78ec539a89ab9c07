"""The command line as operators use it, in real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest

from outbox import NewMessage, enqueue_many
from tests.integration.aws_fake import free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(OUTBOXD_DATA_DIR=str(tmp_path / "data"), OUTBOXD_LOG_FORMAT="text")
    env.update(extra)
    return env


def outboxd(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_render_prints_the_parts(tmp_path: Path) -> None:
    context = '{"name": "Ann", "login_url": "https://x.example"}'
    result = outboxd(_env(tmp_path), "render", "welcome", "--context", context, "--locale", "fr")
    assert result.returncode == 0, result.stderr
    assert "Subject: Bienvenue chez outboxd, Ann !" in result.stdout
    assert "--- html ---" in result.stdout


def test_render_reports_a_missing_variable(tmp_path: Path) -> None:
    result = outboxd(_env(tmp_path), "render", "welcome")
    assert result.returncode == 1
    assert "'name' is undefined" in result.stderr


async def test_check_passes_then_catches_a_missing_template(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=database_url)
    ok = outboxd(env, "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all checks passed" in ok.stdout
    async with pool.acquire() as conn:
        await enqueue_many(conn, [NewMessage("email", "a@example.com", "no/such_template")])
    bad = outboxd(env, "check")
    assert bad.returncode == 1
    assert "FAIL  template 'no/such_template'" in bad.stdout


def test_check_catches_a_bad_dsn(tmp_path: Path) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    result = outboxd(env, "check")
    assert result.returncode == 1
    assert "FAIL  database connection" in result.stdout


async def test_check_catches_a_missing_schema(postgres_admin_dsn: str, tmp_path: Path) -> None:
    from tests.conftest import with_database

    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS outboxd_empty")
        await admin.execute("CREATE DATABASE outboxd_empty")
    finally:
        await admin.close()
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=with_database(postgres_admin_dsn, "outboxd_empty"))
    result = outboxd(env, "check")
    assert result.returncode == 1
    assert "FAIL  schema: the outbox schema does not exist" in result.stdout


def test_check_catches_a_bad_smtp_host(database_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=database_url, OUTBOXD_EMAIL__PROVIDER="smtp",
               OUTBOXD_SMTP__HOST="127.0.0.1", OUTBOXD_SMTP__PORT=str(free_port()))  # fmt: skip
    result = outboxd(env, "check")
    assert result.returncode == 1
    assert "FAIL  SMTP server" in result.stdout


async def test_enqueue_stats_requeue_purge(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=database_url)
    args = ["--channel", "email", "--to", "ann@example.com", "--template", "welcome"]
    result = outboxd(env, "enqueue", *args, "--context", '{"name": "Ann"}', "--priority", "2")
    assert result.returncode == 0, result.stderr
    message_id = int(result.stdout)
    await pool.execute(
        "UPDATE outbox.message SET status = 'failed', last_error = 'x' WHERE id = $1", message_id
    )
    stats = json.loads(outboxd(env, "stats", "--json").stdout)
    assert stats["channels"]["email"]["depth"]["failed"]["total"] == 1
    text = outboxd(env, "stats").stdout
    assert "failed" in text and "p2=1" in text
    requeued = outboxd(env, "requeue", "--status", "failed")
    assert requeued.stdout.strip() == "requeued 1 message(s)"
    row = await pool.fetchrow(
        "SELECT status, attempts FROM outbox.message WHERE id = $1", message_id
    )
    assert (row["status"], row["attempts"]) == ("pending", 0)
    await pool.execute(
        "UPDATE outbox.message SET status = 'sent', updated_at = now() - interval '40 days'"
    )
    purged = outboxd(env, "purge", "--older-than", "30")
    assert purged.stdout.strip() == "purged 1 message(s) and 0 event(s)"


def test_enqueue_rejects_bad_json(tmp_path: Path) -> None:
    result = outboxd(_env(tmp_path), "enqueue", "--channel", "email", "--to", "a@b.c",
                     "--template", "t", "--context", "{nope")  # fmt: skip
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


def _wait_for_line(path: Path, starts: str, proc: subprocess.Popen[str], within: float) -> str:
    """The first line of ``path`` that starts with ``starts``, once the process wrote it."""
    deadline = time.monotonic() + within
    while True:
        for line in path.read_text().splitlines():
            if line.startswith(starts):
                return line
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


@pytest.mark.slow
def test_run_with_no_configuration_says_where_to_connect_and_where_files_go() -> None:
    # Not under pytest's basetemp: the embedded server runs as another user, and another
    # pytest session starting meanwhile makes /tmp/pytest-of-<user> private again.
    with tempfile.TemporaryDirectory(prefix="outboxd-embedded-run-") as directory:
        _run_on_the_embedded_default(Path(directory))


def _run_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env["OUTBOXD_HTTP__PORT"] = str(free_port())
    env["OUTBOXD_HTTP__ADMIN_PORT"] = "0"  # any free port: this test does not read it
    workdir = tmp_path / "app"
    workdir.mkdir()
    console = tmp_path / "console.txt"
    with console.open("w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run"], cwd=workdir, env=env,
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        connect = _wait_for_line(console, "outboxd: applications connect with ", proc, 60)
        folder = _wait_for_line(console, "outboxd: email and sms messages are written to", proc, 5)
        _wait_for_line(console, '{"ts"', proc, 60)  # the daemon's own log: it is running
        dsn = connect.removeprefix("outboxd: applications connect with ")
        outgoing = Path(folder.rsplit(" ", 1)[1])
        assert outgoing == workdir.resolve() / ".outboxd" / "outgoing"
        # An application connects with what was printed, and the message lands there.
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT outbox.enqueue(channel => 'email', recipient => 'ann@example.com',"
                " template => 'welcome',"
                ' context => \'{"name": "Ann", "login_url": "https://x.example"}\'::jsonb)'
            ).fetchone()
        assert row is not None
        eml = outgoing / f"{row[0]}.eml"
        deadline = time.monotonic() + 60
        while not eml.exists():
            assert time.monotonic() < deadline, "the message never arrived"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    output = console.read_text()
    assert proc.returncode == 0, output
    assert output.count("applications connect with") == 1
    # The embedded server's start-up chatter is in its log file, not on the console.
    assert "initdb" not in output and "pg_ctl" not in output and "XDG_RUNTIME_DIR" not in output
    assert all(line.startswith(("outboxd: ", '{"ts"')) for line in output.splitlines()), output
    started = (workdir / ".outboxd" / "embedded-postgres.log").read_text()
    assert "initdb" in started and "server started" in started


async def test_requeue_filters_and_dry_run(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=database_url)
    async with pool.acquire() as conn:
        await enqueue_many(conn, [NewMessage("email", f"u{i}@example.com", "t") for i in range(4)])
    await pool.execute(
        """UPDATE outbox.message SET status = 'failed',
                  last_error = CASE WHEN id % 2 = 0 THEN 'SMTP 451 later' ELSE 'SMTP 550 gone' END,
                  updated_at = CASE WHEN id = 4 THEN now() - interval '3 days' ELSE now() END"""
    )
    dry = outboxd(env, "requeue", "--status", "failed", "--error", "%451%", "--dry-run")
    assert dry.stdout.strip() == "2 message(s) match; nothing changed (dry run)"
    assert await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status='pending'") == 0
    since = "2000-01-01T00:00:00+00:00"
    recent = outboxd(env, "requeue", "--status", "failed", "--error", "%451%", "--since", since,
                     "--until", "2999-01-01T00:00:00+00:00")  # fmt: skip
    assert recent.stdout.strip() == "requeued 2 message(s)"
    by_id = outboxd(env, "requeue", "--id", "1")
    assert by_id.stdout.strip() == "requeued 1 message(s)"
    left = await pool.fetchval("SELECT count(*) FROM outbox.message WHERE status='failed'")
    assert left == 1


@pytest.mark.slow
@pytest.mark.parametrize("processes", ["1", "2"])
def test_bench_measures_every_phase_in_a_throwaway_database(
    postgres_admin_dsn: str, tmp_path: Path, processes: str
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    result = outboxd(
        env, "bench", "--messages", "400", "--processes", processes, "--latency-seconds", "1",
        "--rate", "50", "--extra-pending", "100", "--json", timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["floor"]["rows"] == 400 and report["floor"]["rate"] > 0
    assert report["drain"]["sent"] == 400 and report["drain"]["rate"] > 0
    assert report["drain"]["cpu_us"]["outboxd"] > 0
    assert report["latency"]["count"] == 50
    assert 0 < report["latency"]["p50_ms"] <= report["latency"]["p99_ms"]


@pytest.mark.slow
def test_bench_smtp_against_the_minimal_sink_in_rounds(
    postgres_admin_dsn: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    result = outboxd(
        env, "bench", "--provider", "smtp", "--messages", "200", "--rounds", "2",
        "--skip", "latency", "--skip", "notify", "--json", timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["smtp_sink"] == "minimal"
    assert report["drain"]["sent"] == 200 and report["drain"]["cpu_us"]["outboxd"] > 0
    assert len(report["floor_ratios"]) == 2 and report["floor_ratio"] > 0


@pytest.mark.slow
def test_bench_smtp_against_postfix_smtp_sink(postgres_admin_dsn: str, tmp_path: Path) -> None:
    from daemon.bench.support import postfix_smtp_sink

    if postfix_smtp_sink() is None:
        pytest.skip("Postfix's smtp-sink is not installed (Debian package postfix)")
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=postgres_admin_dsn, OUTBOXD_LOG_LEVEL="WARNING")
    result = outboxd(
        env, "bench", "--provider", "smtp", "--smtp-sink", "postfix", "--messages", "200",
        "--skip", "latency", "--skip", "notify", "--skip", "floor", "--json", timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["smtp_sink"] == "postfix"
    assert report["drain"]["sent"] == 200


async def test_requeue_of_a_missing_id_is_a_clear_error(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    pending = await pool.fetchval(
        "SELECT outbox.enqueue(channel => 'email', recipient => 'a@example.com',"
        " template => 'welcome')"
    )
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=database_url)
    result = outboxd(env, "requeue", "--id", "999999", "--id", str(pending))
    assert result.returncode == 1
    assert result.stdout.strip() == "requeued 0 message(s)"
    assert result.stderr.splitlines() == [
        "outboxd: not requeued: message 999999: no such message",
        f"outboxd: not requeued: message {pending}: it is pending; "
        "only failed, expired, cancelled, suppressed can be requeued",
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["purge", "--older-than", "-3"], "argument --older-than: must be greater than 0, got -3"),
        (["purge", "--older-than", "soon"], "argument --older-than: not a number: 'soon'"),
        (["requeue", "--id", "0"], "argument --id: must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path: Path, args: list[str], expected: str) -> None:
    result = outboxd(_env(tmp_path), *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(expected)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("OUTBOXD_TEMPLATES_DIR", "no-such-dir", "invalid setting OUTBOXD_TEMPLATES_DIR: no such"),
        ("OUTBOXD_EMAIL__FROM", "hello", "invalid setting OUTBOXD_EMAIL__FROM: must be an email"),
        ("OUTBOXD_EMAIL__PROVDER", "ses", "unknown setting OUTBOXD_EMAIL__PROVDER (did you mean"),
    ],
)
def test_check_refuses_bad_settings_in_one_line(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    result = outboxd(_env(tmp_path, **{name: value}), "check")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"outboxd: {expected}")


async def test_check_renders_a_persons_rows_with_the_person(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from outbox import notify, upsert_recipient

    templates = tmp_path / "templates" / "hello"
    templates.mkdir(parents=True)
    (templates / "subject.j2").write_text("Hi {{ person.attrs.first_name }}")
    (templates / "inapp.j2").write_text("{{ person.key }}")
    async with pool.acquire() as conn:
        await upsert_recipient(conn, "u1", attrs={"first_name": "Ann"})
        await notify(conn, recipient_key="u1", template="hello", channels=["inapp"])
    env = _env(tmp_path, OUTBOXD_DATABASE_URL=database_url,
               OUTBOXD_TEMPLATES_DIR=str(tmp_path / "templates"))  # fmt: skip
    result = outboxd(env, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "template 'hello' (inapp, 1 pending)" in result.stdout


def test_render_prints_an_inapp_item(tmp_path: Path) -> None:
    context = '{"name": "Ann", "login_url": "https://x.example"}'
    result = outboxd(_env(tmp_path), "render", "welcome", "--context", context,
                     "--channel", "inapp")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Title: Welcome to outboxd, Ann!\n\nYour outboxd account")
