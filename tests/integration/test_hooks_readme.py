"""The README's webhook examples, run exactly as written: the command adds an endpoint, and
the Python and Node verification snippets accept what the daemon really sent and refuse
anything tampered with."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration.daemon_helpers import running, welcome_backlog
from tests.integration.hook_receiver import SECRET, Receiver, receiver
from tests.integration.test_hooks import add_endpoint, hook_settings, wait_delivered
from tests.readme_blocks import block

__all__ = ["receiver"]

SECTION = "Webhooks to your application"
ROOT = Path(__file__).resolve().parents[2]


def test_the_add_command(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env.update(OUTBOXD_DATABASE_URL=database_url, OUTBOXD_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        ["bash", "-c", block(SECTION, "sh", "hooks add")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("endpoint 1: https://app.example.com/outboxd-events\n")
    assert "secret: whsec_" in done.stdout


def _cases(receiver: Receiver) -> list[tuple[bytes, str, bool]]:
    """What the daemon sent (valid), and the same with the body or the signature changed."""
    cases = []
    for got in receiver.received:
        cases.append((got.body, got.signature, True))
        cases.append((got.body.replace(b"}", b" }", 1), got.signature, False))
        cases.append((got.body, got.signature[:-1] + "0" if got.signature[-1] != "0" else
                      got.signature[:-1] + "1", False))  # fmt: skip
    stamp, _, _ = receiver.received[0].signature.partition(",")
    old = receiver.received[0].signature.replace(stamp, "t=1000000000")
    cases.append((receiver.received[0].body, old, False))
    return cases


async def _sent_events(database_url: str, pool: asyncpg.Pool, tmp_path: Path, r: Receiver) -> None:
    await add_endpoint(pool, r.url)
    async with running(hook_settings(database_url, tmp_path), database_url):
        await welcome_backlog(pool, 3)
        await wait_delivered(pool, 3)


async def test_python_verification_snippet(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    await _sent_events(database_url, pool, tmp_path, receiver)
    namespace: dict[str, Any] = {}
    exec(compile(block(SECTION, "python", "verify_outboxd"), "README.md", "exec"), namespace)
    verify = namespace["verify_outboxd"]
    for body, header, expected in _cases(receiver):
        assert verify(SECRET, body, header) is expected, (body, header)
    assert verify("another-secret-0123456789", receiver.received[0].body,
                  receiver.received[0].signature) is False  # fmt: skip


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_node_verification_snippet(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path, receiver: Receiver
) -> None:
    await _sent_events(database_url, pool, tmp_path, receiver)
    module = tmp_path / "verify.js"
    module.write_text(block(SECTION, "js", "verifyOutboxd"), encoding="utf-8")
    cases = _cases(receiver)
    harness = (
        f"const {{ verifyOutboxd }} = require({json.dumps(str(module))});"
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(cases.map(([body, header]) =>"
        f" verifyOutboxd({json.dumps(SECRET)}, Buffer.from(body, 'base64'), header))));"
    )
    stdin = json.dumps([[base64.b64encode(b).decode(), h] for b, h, _ in cases])
    assert json.loads(_node(harness, stdin)) == [expected for _, _, expected in cases]


def _node(script: str, stdin: str) -> str:
    done = subprocess.run(
        ["node", "-e", script], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
