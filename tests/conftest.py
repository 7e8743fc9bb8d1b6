"""Shared fixtures: real daemons on loopback ports, real scrapes, the shipped demo config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
DEMO_RECORDING = ROOT / "config" / "recordings" / "demo_tank_farm.csv"
DATASETS = ROOT.parent / "shared" / "datasets"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(tmp_path: Path, **source_options: Any) -> tuple[Path, dict[str, Any]]:
    """The shipped demo config, moved to tmp_path with its own state dir and port."""
    doc = yaml.safe_load(DEMO_CONFIG.read_text())
    doc["state_dir"] = str(tmp_path / "state")
    doc["exporter"]["listen"] = f"127.0.0.1:{free_port()}"
    doc["sources"][0]["path"] = str(DEMO_RECORDING)
    doc["sources"][0].update(source_options)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, doc


def scrape(listen: str, timeout: float = 2.0) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=timeout) as response:
        return response.read().decode()


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample called ``name`` whose labels include ``labels``."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


class Daemon:
    """``plantwatch run`` in a subprocess, with its stderr in a file for the assertions."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log_path = log
        self._log = log.open("ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "-c", str(config)],
            stdout=self._log,
            stderr=self._log,
            cwd=ROOT,
            env=env,
        )

    def wait_for(self, listen: str, predicate, timeout: float = 30.0) -> str:  # type: ignore[no-untyped-def]
        """Scrape until ``predicate(text)`` holds; fail with the daemon's log otherwise."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                last = scrape(listen)
                if predicate(last):
                    return last
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"condition not met within {timeout} s; last scrape:\n{last[:3000]}\nlog:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons started by a test; any still running at the end are killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(5)
