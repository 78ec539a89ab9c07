"""The file provider on a full disk: a real (tiny) filesystem runs out of space."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration.daemon_helpers import make_settings, running, statuses, welcome_backlog


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (mounting needs root: skipped otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


async def test_a_full_disk_pauses_the_channel_and_uses_no_attempt(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, tiny_disk: Path
) -> None:
    # Before: each message burnt its attempts against the full disk and failed for good.
    outgoing = tiny_disk / "outgoing"
    outgoing.mkdir()
    filler = _fill(tiny_disk)
    await welcome_backlog(pool, 10)
    settings = make_settings(
        database_url, tmp_path, file={"dir": outgoing},
        worker={"max_attempts": 2, "pause_seconds": 2.0},
    )  # fmt: skip
    async with running(settings, database_url) as (daemon, recorder):
        await recorder.wait_for(3, within=20)  # the first refusal and probes
        assert "No space left on device" in daemon.paused.get("email", ""), daemon.paused
        rows = await statuses(pool)
        waiting = {(r["status"], r["attempts"]) for r in rows.values()}
        assert waiting <= {("pending", 0), ("sending", 1)}, waiting  # a probe may be out
        filler.unlink()  # space comes back: the next probe goes through, the rest follow
        async with asyncio.timeout(20):
            while sum(c.status == "sent" for c in recorder.completions) < 10:
                recorder.changed.clear()
                await recorder.changed.wait()
        assert not daemon.paused
    rows = await statuses(pool)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("sent", 1)}
    assert len(list(outgoing.glob("*.eml"))) == 10
