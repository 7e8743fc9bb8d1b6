"""Every metric name the dashboards and rules read is one the exporter really writes.

The exporter runs in-process on the shipped demo recording (the same collector
the daemon serves), so renaming a metric in collector/exporters/ fails here,
not on the operators' screens. Recording rule names must be defined by the
shipped recording rules; Prometheus' own series (up, ALERTS) are the only others.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collector.config import load_config
from collector.exporters.prometheus import PlantCollector
from collector.journal import AlertJournal
from collector.runner import Runner
from tests.conftest import demo_config
from tests.dashboards.shipped import (
    DASHBOARD_FILES,
    metric_names,
    queries,
    recording_rule_names,
    rule_expressions,
    variable_queries,
)

PROMETHEUS_OWN = {"up", "ALERTS"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",), "gauge": ("",)}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> CollectorRegistry:
    tmp_path = tmp_path_factory.mktemp("exporter")
    config, _ = demo_config(tmp_path)
    cfg = load_config(config)
    with AlertJournal(tmp_path / "alerts.jsonl") as journal:
        runner = Runner(cfg, journal, realtime=False)
        asyncio.run(runner.run(asyncio.Event(), until_finished=True))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlantCollector(cfg.site, runner.pipeline, runner.queue, runner.receivers, runner.counters))
    return registry


@pytest.fixture(scope="module")
def exported(registry: CollectorRegistry) -> set[str]:
    """Sample names the exporter writes, including families with no sample right now (no errors yet)."""
    names = set()
    for family in registry.collect():
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def used_names() -> dict[str, list[str]]:
    """Metric name -> where it is used, over every dashboard query, variable and rule."""
    used: dict[str, list[str]] = {}
    for path in DASHBOARD_FILES:
        for query in queries(path):
            for name in metric_names(query.expr):
                used.setdefault(name, []).append(f"{query.dashboard}: {query.where}")
        for variable, query in variable_queries(path):
            match = re.fullmatch(r"label_values\((\w+)(?:\{[^}]*\})?,\s*\w+\)", query)
            assert match, f"{path.name}: variable {variable} is not label_values(metric{{...}}, label): {query}"
            used.setdefault(match.group(1), []).append(f"{path.name}: variable {variable}")
    for rule, expr in rule_expressions():
        for name in metric_names(expr):
            used.setdefault(name, []).append(f"rule {rule}")
    return used


def unknown_names(used: dict[str, list[str]], exported: set[str]) -> dict[str, list[str]]:
    recorded = recording_rule_names()
    return {name: where for name, where in used.items() if name not in exported | recorded | PROMETHEUS_OWN}


def test_every_metric_name_used_is_exported(exported: set[str]) -> None:
    used = used_names()
    assert len(used) >= 15
    unknown = unknown_names(used, exported)
    assert not unknown, f"not exported, not recorded: {unknown}"


def test_a_renamed_metric_would_be_caught(exported: set[str]) -> None:
    """The check bites: the exporter without plantwatch_tag_limit leaves the drill-down's limits unknown."""
    unknown = unknown_names(used_names(), exported - {"plantwatch_tag_limit"})
    assert list(unknown) == ["plantwatch_tag_limit"]
    assert any("tag-drilldown.json" in where for where in unknown["plantwatch_tag_limit"])


def test_recording_rules_read_exported_names_only(exported: set[str]) -> None:
    for rule, expr in rule_expressions():
        for name in metric_names(expr):
            assert name in exported or name in PROMETHEUS_OWN, f"rule {rule} reads {name}"


def test_exposition_passes_promtool_and_limits_stay_bounded(registry: CollectorRegistry, tmp_path: Path) -> None:
    text = generate_latest(registry)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    limits = [s for f in registry.collect() if f.name == "plantwatch_tag_limit" for s in f.samples]
    scores = [s for f in registry.collect() if f.name == "plantwatch_anomaly_score" for s in f.samples]
    tags = {s.labels["tag"] for s in scores}
    detectors = {s.labels["detector"] for s in scores}
    assert limits, "the demo's tags have ranges: their limits must be exported"
    per_tag: dict[str, int] = {}
    for sample in limits:
        per_tag[sample.labels["tag"]] = per_tag.get(sample.labels["tag"], 0) + 1
        assert sample.labels["limit"] in {"range_low", "range_high", "alarm_low", "alarm_high"}
    assert set(per_tag) <= tags and max(per_tag.values()) <= min(4, len(detectors))
