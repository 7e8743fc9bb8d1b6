"""The daemon end to end, as an operator meets it: a process, a port, a journal on disk."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from collector.journal import read_journal
from tests.conftest import ROOT, Daemon, demo_config, sample_value

PROMTOOL = shutil.which("promtool")


def firing_count(text: str) -> float:
    return sum(
        sample_value(text, "plantwatch_alert_transitions_total", event="firing", severity=s) or 0.0
        for s in ("warning", "critical")
    )


def journal_records(state_dir: Path) -> list[dict[str, object]]:
    path = state_dir / "alerts.jsonl"
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "journal ends in a torn line"
    return [json.loads(line) for line in raw.splitlines()]


def test_run_exposes_alerts_then_stops_cleanly_on_sigterm(tmp_path: Path, daemons: list[Daemon]) -> None:
    config, doc = demo_config(tmp_path, speed=200.0, loop=False, rebase=True)
    listen = doc["exporter"]["listen"]
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemons.append(daemon)

    # Four firings: the three faults, and the PCA model on the spoofed pressure too.
    text = daemon.wait_for(listen, lambda t: firing_count(t) >= 4, timeout=40)

    # The spoofed discharge pressure fired on the z-score, and the per-(tag, detector) series are there.
    assert sample_value(text, "plantwatch_anomaly_score", tag="PT101.PRESSURE", detector="ewma") is not None
    assert sample_value(text, "plantwatch_alert_state", tag="TT101.TEMP", detector="flatline") is not None
    assert sample_value(text, "plantwatch_source_up", source="tank-farm-historian") is not None
    assert sample_value(text, "plantwatch_build_info", site="demo-tank-farm") == 1.0
    assert (sample_value(text, "plantwatch_ticks_total") or 0) > 900
    # Every metric carries the site label.
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert 'site="demo-tank-farm"' in line, line

    if PROMTOOL is None:
        pytest.fail("promtool is not installed; the README's test command installs it")
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    assert time.monotonic() - started < 5
    log = daemon.log()
    assert "plantwatch stopped" in log

    state = tmp_path / "state"
    records = journal_records(state)
    fired = {(r["tag"], r["detector"]) for r in records if r["event"] == "firing"}
    assert ("PT101.PRESSURE", "ewma") in fired
    assert ("PT101.PRESSURE", "pca") in fired  # it broke its relation to the pump: the model names it
    assert ("TT101.TEMP", "flatline") in fired
    assert ("FT101.FLOW_IN", "stale") in fired
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert (state / "snapshot.npz").exists()


def test_kill9_keeps_journal_whole_and_restart_restores_baseline(tmp_path: Path, daemons: list[Daemon]) -> None:
    config, doc = demo_config(tmp_path, speed=100.0, loop=True, rebase=True)
    doc["pipeline"]["snapshot_interval_s"] = 0.5
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    listen = doc["exporter"]["listen"]
    state = tmp_path / "state"

    first = Daemon(config, tmp_path / "first.log")
    daemons.append(first)
    first.wait_for(listen, lambda t: firing_count(t) >= 2 and (sample_value(t, "plantwatch_snapshots_total") or 0) >= 2)
    first.stop(signal.SIGKILL)
    before = journal_records(state)
    assert before, "the first run journaled nothing"
    with np.load(state / "snapshot.npz") as snap:
        assert snap["ewma.count"].max() > 60

    # A crash in the middle of a write leaves half a line; the next start must cut it.
    with (state / "alerts.jsonl").open("ab") as handle:
        handle.write(b'{"seq": 99999, "event": "fir')

    # Restart in real time: a fresh baseline would need 60 s of warm-up before the z-score scores.
    doc["sources"][0]["speed"] = 1.0
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    second = Daemon(config, tmp_path / "second.log")
    daemons.append(second)
    text = second.wait_for(listen, lambda t: sample_value(t, "plantwatch_state_restored") == 1.0, timeout=20)
    assert sample_value(text, "plantwatch_detector_warm_tags", detector="ewma") == 6.0
    assert second.stop(signal.SIGTERM) == 0
    log = second.log()
    assert "state restored" in log
    assert "torn last line" in log

    after = journal_records(state)
    assert after[: len(before)] == before
    seqs = [r["seq"] for r in after]
    assert seqs == list(range(1, len(after) + 1))


def test_live_daemon_and_replay_give_identical_alerts(tmp_path: Path, daemons: list[Daemon]) -> None:
    config, doc = demo_config(tmp_path, speed=150.0, loop=False, rebase=False)
    # Two relations the demo's faults break, so that alerts carry their detector's reason too.
    doc["invariants"] = [
        {
            "name": "tk101_flow_balance",
            "expression": "(TK101.LEVEL - lag(TK101.LEVEL, 60)) * 3600 / 60 - avg(FT101.FLOW_IN - FT102.FLOW_OUT, 60)",
            "warmup": 300,
        },
        {"name": "p101_speed_vs_pressure", "expression": "PT101.PRESSURE - 0.1 * P101.SPEED", "warmup": 300},
    ]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    listen = doc["exporter"]["listen"]
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemons.append(daemon)
    daemon.wait_for(listen, lambda t: (sample_value(t, "plantwatch_ticks_total") or 0) >= 1800, timeout=60)
    assert daemon.stop() == 0

    out = tmp_path / "replay"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector",
            "replay",
            str(ROOT / "config/recordings/demo_tank_farm.csv"),
            "-c",
            str(config),
            "-o",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr

    def verdicts(records: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [
            (r["event"], r["ts"], r["tag"], r["detector"], r["severity"], r["score"], r.get("reason")) for r in records
        ]

    live = verdicts(journal_records(tmp_path / "state"))
    replayed = verdicts(list(read_journal(out / "alerts.jsonl")))
    assert live, "the live run raised no alert"
    assert any(v[3] == "invariant" and v[6] and "invariant tk101_flow_balance" in v[6] for v in live), live
    assert live == replayed
