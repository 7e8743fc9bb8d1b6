"""``plantwatch demo``: the simulator and the daemon together, over all three protocols, no external server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim_plant.configs import CONFIG_DIR, Ports, render
from sim_plant.plants import PLANTS
from tests.conftest import ROOT, Daemon, free_port, sample_value


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_shipped_plant_configs_are_current(plant: str) -> None:
    """config/<plant>.yaml is generated from the catalog; regenerate with `python -m sim_plant.configs`."""
    assert (CONFIG_DIR / f"{plant}.yaml").read_text() == render(plant)


class Demo(Daemon):
    def __init__(self, plant: str, ports: Ports, state: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "demo", "--plant", plant, "--speed", "5", "--state-dir", str(state),
             "--opcua-port", str(ports.opcua), "--modbus-port", str(ports.modbus), "--mqtt-port", str(ports.mqtt),
             "--metrics-port", str(ports.metrics)],
            stdout=self._log, stderr=self._log, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_demo_shows_live_values_from_all_three_protocols(plant: str, tmp_path: Path, daemons: list[Daemon]) -> None:
    ports = Ports(free_port(), free_port(), free_port(), free_port())
    demo = Demo(plant, ports, tmp_path / "state", tmp_path / "demo.log")
    daemons.append(demo)
    listen = f"127.0.0.1:{ports.metrics}"
    kinds = ("opcua", "modbus", "mqtt")
    tags = PLANTS[plant].TAGS

    def all_live(text: str) -> bool:
        up = all(sample_value(text, "plantwatch_source_up", kind=k) == 1.0 for k in kinds)
        values = all(sample_value(text, "plantwatch_tag_value", tag=t.name) is not None for t in tags)
        return up and values and (sample_value(text, "plantwatch_ticks_total") or 0) >= 5

    text = demo.wait_for(listen, all_live, timeout=60)
    for spec in tags:
        value = sample_value(text, "plantwatch_tag_value", tag=spec.name)
        assert value is not None
        span = spec.hi - spec.lo
        assert spec.lo - span <= value <= spec.hi + span, (spec.name, value)
        assert sample_value(text, "plantwatch_anomaly_score", tag=spec.name, detector="limits") is not None
    for kind in kinds:
        assert not any(
            sample_value(text, "plantwatch_source_errors_total", kind=kind, error=e)
            for e in ("unknown_tag", "malformed", "security", "auth")
        )
    check = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"], input=text,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    assert demo.stop(signal.SIGTERM, timeout=20) == 0, demo.log()
    log = demo.log()
    assert "write attempts by clients: 0 (none)" in log  # the simulator's own count: plantwatch never wrote
    assert (tmp_path / "state" / "snapshot.npz").exists()


class ScenarioDemo(Daemon):
    """``plantwatch demo --scenario``: the plant is the scenario's, no --plant given."""

    def __init__(self, scenario: Path, ports: Ports, state: Path, log: Path, speed: float, lead_in: float) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "demo", "--scenario", str(scenario), "--speed", str(speed),
             "--lead-in", str(lead_in),
             "--state-dir", str(state), "--opcua-port", str(ports.opcua), "--modbus-port", str(ports.modbus),
             "--mqtt-port", str(ports.mqtt), "--metrics-port", str(ports.metrics)],
            stdout=self._log, stderr=self._log, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip


def test_demo_plays_pump_stop_until_a_critical_alert_fires_on_metrics(tmp_path: Path, daemons: list[Daemon]) -> None:
    """The tester's live exercise: the shipped pump_stop scenario, sped up, reaches a critical alert on /metrics."""
    from sim_plant.scenarios import SCENARIO_DIR

    ports = Ports(free_port(), free_port(), free_port(), free_port())
    scenario = SCENARIO_DIR / "oil" / "pump_stop.yaml"
    demo = ScenarioDemo(scenario, ports, tmp_path / "state", tmp_path / "demo.log", speed=10, lead_in=20)
    daemons.append(demo)
    listen = f"127.0.0.1:{ports.metrics}"

    def pump_alarm(text: str) -> bool:
        critical = sample_value(text, "plantwatch_alerts_firing", severity="critical") or 0
        state = sample_value(text, "plantwatch_alert_state", tag="P101.RUNNING", detector="limits")
        return critical >= 1 and state == 2  # 2: firing

    began = time.monotonic()
    text = demo.wait_for(listen, pump_alarm, timeout=90)
    took = time.monotonic() - began
    # Served from plant time 0: the stop is injected at 60 s plus the 20 s lead-in, 8 s of wall time at speed 10.
    assert sample_value(text, "plantwatch_tag_value", tag="P101.RUNNING") == 0.0
    assert demo.stop(signal.SIGTERM, timeout=20) == 0, demo.log()
    log = demo.log()
    assert "attack start stop_p101 actuator P101.RUNNING t=80" in log, log[-3000:]
    assert "write attempts by clients: 0 (none)" in log
    print(f"critical alert on /metrics {took:.1f} s after the demo started")


def test_demo_refuses_a_plant_that_disagrees_with_the_scenario(tmp_path: Path) -> None:
    from sim_plant.scenarios import SCENARIO_DIR

    done = subprocess.run(
        [sys.executable, "-m", "collector", "demo", "--plant", "chemical", "--scenario",
         str(SCENARIO_DIR / "oil" / "pump_stop.yaml"), "--state-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "disagrees" in done.stderr
    alone = [sys.executable, "-m", "collector", "demo", "--lead-in", "30", "--state-dir", str(tmp_path)]
    done = subprocess.run(alone, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "--lead-in delays a scenario's steps" in done.stderr
