"""The client library installs and imports without the daemon or its dependencies, and the
``outboxd`` script from such an install says how to get the daemon."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daemon.cli import entry

ROOT = Path(__file__).resolve().parents[2]

#: The daemon and what only it needs; an application's install has none of them.
DAEMON_ONLY = (
    "daemon", "aiohttp", "aioboto3", "aiobotocore", "botocore", "aiosmtplib", "pgserver",
    "jinja2", "pydantic", "pydantic_settings", "prometheus_client", "email_validator",
    "phonenumbers", "cryptography",
)  # fmt: skip

# Makes the modules above missing, as in a client-only install.
_BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    """
)


def _python(code: str, *blocked: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER + textwrap.dedent(code), ",".join(blocked)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_every_client_module_imports_without_the_daemon_or_its_dependencies() -> None:
    result = _python(
        """
        import importlib, pkgutil
        import outbox
        for info in pkgutil.walk_packages(outbox.__path__, "outbox."):
            importlib.import_module(info.name)
        loaded = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
        print(" ".join(sorted(name for name in sys.modules if name.startswith("outbox."))))
        assert not loaded, loaded
        """,
        *DAEMON_ONLY,
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert {"outbox.messages", "outbox.store", "outbox.migrations", "outbox.people"} <= imported


def test_the_blocker_does_block() -> None:
    result = _python("import jinja2", *DAEMON_ONLY)
    assert result.returncode == 1 and "No module named 'jinja2'" in result.stderr


def test_the_script_without_the_daemon_says_how_to_install_it_in_one_line() -> None:
    result = _python("from daemon.cli.entry import main; main()", "pydantic", "aiohttp")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "outboxd: the daemon is not installed (missing pydantic); "
        "install it with: pip install 'outboxd[daemon]'\n"
    )


@pytest.mark.parametrize(
    ("installed", "named"),
    [
        (set(), "missing aioboto3, aiohttp, jinja2 and 2 more"),
        ({"aioboto3", "aiohttp", "jinja2"}, "missing pydantic-settings, pgserver)"),
    ],
)
def test_missing_daemon_requirements_are_read_from_the_metadata(
    installed: set[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    requires = [
        "asyncpg>=0.30",
        "aioboto3>=13.0; extra == 'daemon'",
        'aiohttp>=3.9; extra == "daemon"',
        "jinja2>=3.1 ; extra == 'daemon'",
        "pydantic-settings>=2.2; extra == 'daemon'",
        "pgserver>=0.1.4; extra == 'daemon'",
        "celery>=5.3; extra == 'compare'",
        "outboxd[daemon]; extra == 'test'",
    ]
    missing = entry.missing_requirements(requires, installed.__contains__)
    with pytest.raises(SystemExit) as exit_:
        entry._refuse(missing)
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err


def test_the_daemon_extra_is_installed_here() -> None:
    from importlib.metadata import requires

    declared = [r for r in requires("outboxd") or [] if "extra == 'daemon'" in r]
    assert len(declared) >= 10
    assert entry.missing_requirements(declared) == []
