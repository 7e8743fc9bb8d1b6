"""A real Prometheus on loopback, configured from a copy of the shipped dashboards/prometheus/ folder.

Only the target, the intervals and the Alertmanager address are substituted in
the copy (plus, where a test says so, the rules' ``for`` durations), so the
rules and scrape settings under test are the shipped ones.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.dashboards.shipped import PROMETHEUS

PROMETHEUS_BIN = "/usr/bin/prometheus"


def configure(
    directory: Path, target: str, *, config: str = "prometheus.yml", interval_s: int = 1, rule_for: str | None = None
) -> Path:
    """Copy dashboards/prometheus/ to ``directory`` and point the copy of ``config`` at ``target``."""
    shutil.copytree(PROMETHEUS, directory, dirs_exist_ok=True)
    path = directory / config
    text = path.read_text()
    text = re.sub(r"(scrape_interval|evaluation_interval): \S+", rf"\1: {interval_s}s", text)
    text = text.replace('targets: ["127.0.0.1:9108"]', f'targets: ["{target}"]')
    # No Alertmanager in the tests: a closed loopback port, never a real one that might be listening on 9093.
    text = text.replace('targets: ["127.0.0.1:9093"]', f'targets: ["127.0.0.1:{free_port()}"]')
    assert target in text
    path.write_text(text)
    if rule_for is not None:
        for rules in (directory / "rules").glob("*.yml"):
            rules.write_text(re.sub(r"for: \d+m", f"for: {rule_for}", rules.read_text()))
    return path


class Prometheus:
    """``prometheus`` in a subprocess with its own storage; queried through its HTTP API."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=self._log,
            cwd=config.parent,
        )
        self.wait(lambda: self._get("/-/ready") is not None, 30, "Prometheus ready")

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.read()
        except OSError:
            return None

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{path} {params}: HTTP {exc.code}: {exc.read().decode(errors='replace')}")
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def alert_states(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def wait(self, predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
        """Poll ``predicate`` every 0.25 s; returns the seconds it took, fails with the log otherwise."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            if predicate():
                return time.monotonic() - start
            time.sleep(0.25)
        pytest.fail(f"{what}: not within {timeout} s\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def children(pid: int) -> list[int]:
    """Direct children of a process we started, from /proc (no psutil needed)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(c) for c in task.read_text().split()]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
