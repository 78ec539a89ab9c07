"""Finding Postfix's smtp-sink for ``outboxd bench --smtp-sink postfix``."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.bench import support


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_sink_on_path_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _executable(tmp_path / "smtp-sink")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert support.postfix_smtp_sink() == sink


def test_debian_12_puts_the_sink_in_sbin_off_an_ordinary_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Debian 12's postfix installs /usr/sbin/smtp-sink; a user's PATH often lacks /usr/sbin.
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    sink = _executable(sbin / "smtp-sink")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(support, "POSTFIX_SMTP_SINK_DIRS", (sbin, tmp_path / "lib"))
    assert support.postfix_smtp_sink() == sink


def test_no_sink_is_none_and_the_bench_says_which_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(support, "POSTFIX_SMTP_SINK_DIRS", (tmp_path / "sbin",))
    assert support.postfix_smtp_sink() is None
    with pytest.raises(RuntimeError, match=r"Debian package postfix"), support.smtp_sink("postfix"):
        pass
