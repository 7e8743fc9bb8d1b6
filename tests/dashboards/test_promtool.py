"""The shipped Prometheus and Alertmanager files pass their own tools: promtool and amtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.dashboards.shipped import ALERTMANAGER, PROMETHEUS, RULE_TESTS, RULES, alert_names
from tests.dashboards.tls_files import make_tls_files


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_check_rules() -> None:
    result = run("promtool", "check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULES)


def test_check_config() -> None:
    result = run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_tls_config_with_its_files_present(tmp_path: Path) -> None:
    """The https variant names certificate files; promtool wants them present, so they are made beside a copy."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    files = make_tls_files(tmp_path / "certs")
    folder = copy / "plantwatch-tls"
    folder.mkdir()
    shutil.copy(files.server.cert, folder / "ca.pem")
    shutil.copy(files.client.cert, folder / "prometheus.pem")
    shutil.copy(files.client.key, folder / "prometheus-key.pem")
    (folder / "password").write_text("s3cret\n")
    result = run("promtool", "check", "config", "prometheus-tls.yml", cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    result = run("promtool", "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    text = "".join(path.read_text() for path in RULE_TESTS)
    for alert in alert_names():
        cases = text.count(f"alertname: {alert}\n")
        assert cases >= 2, f"{alert} needs a firing and a quiet case in {RULE_TESTS}, has {cases}"
        assert f"alertname: {alert}\n        exp_alerts: []" in text, f"{alert} has no quiet case"
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels" in text, f"{alert} has no firing case"


def test_rule_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    """The unit tests bite: a threshold moved in a copy of the rules fails them."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    alerts = copy / "rules" / "plantwatch-alerts.yml"
    alerts.write_text(alerts.read_text().replace("plantwatch_source_up == 0", "plantwatch_source_up == 2"))
    result = run("promtool", "test", "rules", *(str(copy / "tests" / p.name) for p in RULE_TESTS))
    assert result.returncode != 0
    assert "PlantwatchSourceDown" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "labels, receiver", [("severity=critical", "control-room-pager"), ("severity=warning", "instrumentation-tickets")]
)
def test_alertmanager_routes_by_severity(labels: str, receiver: str) -> None:
    check = run("amtool", "check-config", str(ALERTMANAGER))
    assert check.returncode == 0, check.stdout + check.stderr
    route = run(
        "amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", "alertname=PlantwatchSourceDown", labels
    )
    assert route.returncode == 0, route.stderr
    assert route.stdout.strip() == receiver
