"""The systemd units and the Dockerfile say what operations rely on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import metrics
from daemon.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


def _unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for raw in (ROOT / "systemd" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


@pytest.mark.parametrize("name", ["outboxd.service", "outboxd@.service"])
def test_unit_is_a_sandboxed_notify_service(name: str) -> None:
    unit = _unit(name)
    service = {
        k.removeprefix("Service."): v[-1] for k, v in unit.items() if k.startswith("Service.")
    }
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith("outboxd run")
    assert int(service["TimeoutStopSec"]) > WorkerSettings().grace_seconds
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    for option in ("DynamicUser", "NoNewPrivileges", "PrivateTmp", "ProtectHome",
                   "RestrictNamespaces", "MemoryDenyWriteExecute", "LockPersonality"):  # fmt: skip
        assert service[option] == "yes", option
    assert service["ProtectSystem"] == "strict"
    assert "@system-service" in unit["Service.SystemCallFilter"]
    assert service["LoadCredential"].startswith("secret_key:")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_verify_and_score_well(tmp_path: Path) -> None:
    exposures = []
    for name in ("outboxd.service", "outboxd@.service"):
        text = (
            (ROOT / "systemd" / name).read_text().replace("/opt/outboxd/bin/outboxd", "/bin/true")
        )
        target = tmp_path / (name.replace("@", "@test") if "@" in name else name)
        target.write_text(text)
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(target)], capture_output=True, text=True
        )
        problems = [line for line in verify.stderr.splitlines() if str(target) in line]
        assert verify.returncode == 0 and problems == [], verify.stderr
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(target)],
            capture_output=True, text=True,
        )  # fmt: skip
        match = re.search(r"Overall exposure level for .*: ([0-9.]+)", security.stdout)
        assert match, security.stdout[-500:]
        exposures.append(float(match.group(1)))
    assert max(exposures) <= 2.0, exposures


def test_dockerfile_runs_the_daemon_as_non_root_in_exec_form() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["outboxd"\]$', text, re.M)
    assert re.search(r'^CMD \["run"\]$', text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2  # multi-stage
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), source


# The test extras install hadolint into the virtualenv, beside this interpreter.
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint not installed")
def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_only_queries_real_metrics() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana" / "outboxd-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    known = {m.name for m in metrics.REGISTRY.collect()}
    for expr in exprs:
        for name in re.findall(r"\b(outboxd_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|sum|count|total|info)$", "", name)
            assert base in known or name in known, name
