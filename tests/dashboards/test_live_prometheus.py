"""The shipped rules and dashboards against a real Prometheus scraping a real ``plantwatch demo`` under attack.

One Prometheus and one demo serve the whole module (~30 s): the demo plays
sim_plant/scenarios/oil/pump_stop.yaml (the export pump stopped by a forged
command at plant time 60 s) at 10x, Prometheus scrapes and evaluates every
second. Then the simulator (the demo's child) is killed to take every source
down. Only the copy's target, intervals, Alertmanager address and the rules'
``for: Nm`` (to 2 s, so the test need not wait minutes) differ from the shipped files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.dashboards.live import Prometheus, children, cmdline, configure
from tests.dashboards.shipped import DASHBOARD_FILES, queries, substitute, variable_queries

SCENARIO = ROOT / "sim_plant" / "scenarios" / "oil" / "pump_stop.yaml"
SPEED = 10  # the attack starts 6 s after the simulator and holds for 18 s
PLANT = "oil"


@dataclass
class Stack:
    demo: subprocess.Popen[bytes]
    demo_log: Path
    prometheus: Prometheus
    started: float
    timings: dict[str, float] = field(default_factory=dict)

    def log(self) -> str:
        return self.demo_log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("live")
    t0 = time.monotonic()
    metrics_port = free_port()
    log = tmp / "demo.log"
    cmd = [
        sys.executable, "-m", "collector", "demo", "--plant", PLANT, "--scenario", str(SCENARIO),
        "--speed", str(SPEED), "--opcua-port", str(free_port()), "--modbus-port", str(free_port()),
        "--mqtt-port", str(free_port()), "--metrics-port", str(metrics_port), "--state-dir", str(tmp / "state"),
    ]  # fmt: skip
    with log.open("wb") as out:
        demo = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    config = configure(tmp / "prometheus", f"127.0.0.1:{metrics_port}", rule_for="2s")
    prometheus = Prometheus(config, tmp)
    s = Stack(demo, log, prometheus, time.time())
    s.timings["prometheus ready"] = time.monotonic() - t0
    try:
        yield s
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(15)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait(5)
        prometheus.stop()
        s.timings["module total"] = time.monotonic() - t0
        print("\nlive Prometheus timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s.timings.items()))


def firing(prometheus: Prometheus, alert: str, **labels: str) -> bool:
    return any(
        a["state"] == "firing" and all(a["labels"].get(k) == v for k, v in labels.items())
        for a in prometheus.alert_states(alert)
    )


@pytest.fixture(scope="module")
def attacked(stack: Stack) -> Stack:
    """The critical rule reached firing during the forged pump stop."""
    p = stack.prometheus
    p.wait(lambda: p.query('up{job="plantwatch"} == 1'), 30, "first scrape of the demo")
    if stack.demo.poll() is not None:
        pytest.fail(f"demo exited with {stack.demo.returncode}:\n{stack.log()}")
    took = p.wait(lambda: firing(p, "PlantwatchCriticalAlertFiring", plant=PLANT), 60, "critical alert firing")
    stack.timings["critical firing after"] = time.time() - stack.started
    stack.timings["critical wait"] = took
    return stack


@pytest.fixture(scope="module")
def outage(attacked: Stack) -> Stack:
    """The demo's simulator killed: every source it served goes down."""
    sims = [pid for pid in children(attacked.demo.pid) if " sim " in cmdline(pid)]
    assert len(sims) == 1, f"expected the demo's one simulator child, found {sims}"
    os.kill(sims[0], signal.SIGKILL)
    p = attacked.prometheus
    took = p.wait(
        lambda: (
            {a["labels"]["source"] for a in p.alert_states("PlantwatchSourceDown") if a["state"] == "firing"}
            >= {"oil-opcua", "oil-plc", "oil-mqtt"}
        ),
        40,
        "PlantwatchSourceDown firing for all three sources",
    )
    attacked.timings["source down firing after kill"] = took
    return attacked


def test_critical_rule_fires_during_the_attack(attacked: Stack) -> None:
    p = attacked.prometheus
    (alert,) = [a for a in p.alert_states("PlantwatchCriticalAlertFiring") if a["state"] == "firing"]
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["site"] == f"sim-{PLANT}"
    # The description names what fired, read by the rule's own query: the stopped pump is among them.
    assert "P101.RUNNING/limits" in alert["annotations"]["description"]
    # Before the attack the rule's input was scraped at zero: it fired because of the attack, not at start.
    quiet = p.query_range('plantwatch_alerts_firing{severity="critical"} == 0', attacked.started, time.time())
    assert quiet, "no scrape saw zero critical alerts before the attack"


def test_source_down_fires_when_the_simulator_stops(outage: Stack) -> None:
    p = outage.prometheus
    assert p.query('plantwatch_source_up{plant="oil"} == 0')
    # Down sources are not also reported stale: each source gets one alert, the one that says why.
    assert not [a for a in p.alert_states("PlantwatchDataStale") if a["state"] == "firing"]


def label_values(p: Prometheus, query: str, values: dict[str, str], start: float) -> list[str]:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert match, query
    selector, label = substitute(match.group(1), values), match.group(2)
    return sorted(p.api(f"label/{label}/values", **{"match[]": selector, "start": start, "end": time.time()}))


def test_every_dashboard_query_returns_series(outage: Stack) -> None:
    """Each panel target and annotation, variables substituted from the variables' own queries, over the run."""
    p, start = outage.prometheus, outage.started
    t0 = time.monotonic()
    empty: list[str] = []
    checked = 0
    for path in DASHBOARD_FILES:
        values: dict[str, str] = {"datasource": "unused"}
        choices: dict[str, list[str]] = {}
        for name, query in variable_queries(path):
            options = label_values(p, query, values, start)
            assert options, f"{path.name}: variable ${name} has no values: {query}"
            choices[name] = options
            values[name] = options[0]  # plain names: no regex metacharacter to escape
        assert values.get("site") == f"sim-{PLANT}" and values.get("plant") == PLANT
        # The drill-down must work for every tag the variable offers, not only the first.
        for tag in choices.get("tag", [""]):
            for query in queries(path):
                expr = substitute(query.expr, {**values, "tag": tag})
                checked += 1
                if not p.query_range(expr, start, time.time()):
                    empty.append(f"{query.dashboard}: {query.where} (tag={tag}): {expr}")
    outage.timings["dashboard queries"] = time.monotonic() - t0
    outage.timings["queries checked"] = checked
    assert checked > 100
    assert not empty, "queries with no series:\n" + "\n".join(empty)


def test_query_helper_sees_an_empty_result(outage: Stack) -> None:
    """The check can fail: a query for a tag nobody exports returns no series."""
    p = outage.prometheus
    assert p.query_range('plantwatch_tag_value{tag="NO.SUCH.TAG"}', outage.started, time.time()) == []
