"""The exporter through its public surface: a registry, and a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collector.config import load_config
from collector.exporters.prometheus import MetricsServer, PlantCollector
from collector.journal import AlertJournal
from collector.runner import Runner
from tests.conftest import ROOT, demo_config


def replayed_registry(tmp_path: Path, per_tag_values: bool) -> CollectorRegistry:
    config, _ = demo_config(tmp_path)
    cfg = load_config(config)
    with AlertJournal(tmp_path / "alerts.jsonl") as journal:
        runner = Runner(cfg, journal, realtime=False)
        asyncio.run(runner.run(asyncio.Event(), until_finished=True))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        PlantCollector(
            cfg.site, runner.pipeline, runner.queue, runner.receivers, runner.counters, per_tag_values=per_tag_values
        )
    )
    return registry


def test_collector_reads_the_pipeline_at_scrape_time(tmp_path: Path) -> None:
    registry = replayed_registry(tmp_path, per_tag_values=True)
    site = "demo-tank-farm"
    assert registry.get_sample_value("plantwatch_ticks_total", {"site": site}) == 1800
    assert registry.get_sample_value(
        "plantwatch_tag_value", {"site": site, "source": "tank-farm-historian", "tag": "P101.RUNNING", "unit": ""}
    ) == pytest.approx(1.0)
    fired = registry.get_sample_value(
        "plantwatch_alert_transitions_total", {"site": site, "event": "firing", "severity": "critical"}
    )
    assert fired and fired >= 1
    # The silent flow meter came back: the journal saw it resolve, and its state is ok again.
    assert (
        registry.get_sample_value("plantwatch_alert_state", {"site": site, "tag": "FT101.FLOW_IN", "detector": "stale"})
        == 0.0
    )
    assert registry.get_sample_value("plantwatch_pipeline_latency_seconds_count", {"site": site}) == 1800
    assert registry.get_sample_value("plantwatch_samples_dropped_total", {"site": site, "reason": "late"}) == 0


def test_per_tag_values_can_be_switched_off(tmp_path: Path) -> None:
    registry = replayed_registry(tmp_path, per_tag_values=False)
    names = {m.name for m in registry.collect()}
    assert "plantwatch_tag_value" not in names and "plantwatch_tag_quality" not in names
    assert "plantwatch_anomaly_score" in names


def test_http_server_basic_auth_and_health(tmp_path: Path) -> None:
    registry = replayed_registry(tmp_path, per_tag_values=False)
    server = MetricsServer(registry, "127.0.0.1", 0, credentials=("prometheus", "s3cret"))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/metrics", timeout=2)
        assert denied.value.code == 401
        token = base64.b64encode(b"prometheus:s3cret").decode()
        request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=2) as r:
            assert b"plantwatch_ticks_total" in r.read()
    finally:
        server.stop()


def test_run_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: x\nstate_dir: s\nsources: []\nexporter: {listen: '0.0.0.0'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "collector", "run", "-c", str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert result.returncode == 2
    assert "exporter.listen: must be host:port" in result.stderr
    assert "sources: List should have at least 1 item" in result.stderr
    assert not (tmp_path / "s").exists()
