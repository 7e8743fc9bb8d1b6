"""The ``invariants`` section: validated before start with the path and column of each problem, then
played through the daemon's own replay path, where a broken mass balance raises an ``invariant`` alert."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from collector.config import ConfigError, load_config
from collector.detection import build_bank
from collector.replay import replay

START = datetime(2026, 1, 15, 8, 0, 0, tzinfo=UTC)
T0 = START.timestamp()
TAGS = [
    {"name": "TK101.LEVEL", "range": [4.0, 6.0]},
    {"name": "FT101.FLOW_IN", "range": [150.0, 350.0]},
    {"name": "FT102.FLOW_OUT", "range": [150.0, 350.0]},
]
BALANCE = {
    "name": "tk101_mass_balance",
    "expression": "(TK101.LEVEL - lag(TK101.LEVEL, 300)) * AREA * 3600 / 300"
    " - avg(FT101.FLOW_IN - FT102.FLOW_OUT, 300)",
    "constants": {"AREA": 50.0},
    "warmup": 300,
}


def write(tmp_path: Path, recording: Path, invariants: list[dict[str, Any]], **extra: Any) -> Path:
    doc = {
        "site": "unit",
        "state_dir": str(tmp_path / "state"),
        "sources": [{"name": "historian", "kind": "replay", "path": str(recording), "tags": TAGS}],
        "alerting": {"pending_s": 5, "clear_s": 30},
        "invariants": invariants,
        **extra,
    }
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def recording(path: Path, n: int = 4800, drift_from: int | None = None) -> Path:
    """A 50 m2 tank whose level follows its metered flows; from ``drift_from`` the level reading drifts
    up 10 cm an hour, under its 5 mm scan-to-scan noise."""
    rng = np.random.default_rng(0)
    inflow = 250 + np.cumsum(rng.standard_normal(n)) * 0.3
    outflow = 250 + rng.standard_normal(n) * 2.0
    level = 5.0 + np.cumsum((inflow - outflow) / 3600.0 / 50.0) + rng.standard_normal(n) * 0.005
    label = np.zeros(n, dtype=int)
    if drift_from is not None:
        level[drift_from:] += np.arange(n - drift_from) * 2.78e-5
        label[drift_from:] = 1
    lines = ["timestamp,TK101.LEVEL,FT101.FLOW_IN,FT102.FLOW_OUT,label"]
    stamps = [(START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S") for i in range(n)]
    lines += [f"{stamps[i]},{level[i]:.5f},{inflow[i]:.3f},{outflow[i]:.3f},{label[i]}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_valid_section_adds_the_invariant_detector_with_its_severity_cap(tmp_path: Path) -> None:
    rec = recording(tmp_path / "r.csv", n=10)
    capped = {**BALANCE, "name": "capped", "severity": "warning"}
    cfg = load_config(write(tmp_path, rec, [BALANCE, capped]))
    bank = build_bank(cfg)
    assert bank.names[-1] == "invariant"
    inv = bank.detectors[-1]
    assert [i.name for i in inv.invariants] == ["tk101_mass_balance", "capped"]
    assert [i.max_score for i in inv.invariants] == [1.0, pytest.approx(0.75 - 1e-4)]
    assert "invariant" not in build_bank(load_config(write(tmp_path, rec, []))).names


@pytest.mark.parametrize(
    ("invariant", "path", "reason"),
    [
        ({"name": "a", "expression": "TK101.LEVEL - FT9.FLOW"}, "invariants[1].expression", "column 15: 'FT9.FLOW'"),
        ({"name": "a", "expression": "avg(TK101.LEVEL 30)"}, "invariants[1].expression", "column 17: expected ','"),
        ({"name": "a", "expression": "TK101.LEVEL * 2 +"}, "invariants[1].expression", "column 18: expected more"),
        (  # refused at load, not a RecursionError in the daemon later
            {"name": "a", "expression": " + ".join(["TK101.LEVEL"] * 170)},
            "invariants[1].expression",
            "longer than 2000 characters",
        ),
        (
            {"name": "a", "expression": "avg(avg(TK101.LEVEL, 3600), 60)"},
            "invariants[1].expression",
            "reads 3658 ticks of history",
        ),
        ({"name": "a", "expression": "TK101.LEVEL", "severity": "page"}, "invariants[1].severity", "warning, critical"),
        ({"name": "tk101_mass_balance", "expression": "TK101.LEVEL"}, "invariants[1].name", "duplicate invariant"),
        (
            {"name": "a", "expression": "TK101.LEVEL", "constants": {"TK101.LEVEL": 1.0}},
            "invariants[1].constants",
            "",
        ),
        ({"name": "a", "expression": "TK101.LEVEL", "window": 3}, "invariants[1].window", "unknown key"),
        ({"name": "a", "expression": "TK101.LEVEL", "h": 0}, "invariants[1].h", "greater than 0"),
    ],
)
def test_each_problem_is_reported_with_its_path(
    tmp_path: Path, invariant: dict[str, Any], path: str, reason: str
) -> None:
    rec = recording(tmp_path / "r.csv", n=10)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, rec, [BALANCE, invariant]))
    problems = caught.value.problems
    assert any(p.startswith(path) and reason in r for p, r in problems), problems


def test_a_drifting_level_raises_an_invariant_alert_through_replay(tmp_path: Path) -> None:
    rec = recording(tmp_path / "drift.csv", drift_from=2400)
    cfg = load_config(write(tmp_path, rec, [BALANCE]))
    out = tmp_path / "out"
    replay(cfg, rec, out, progress=False, labels="label")
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines() if line.strip()]
    firing = [a for a in alerts if a["event"] == "firing" and a["detector"] == "invariant"]
    assert firing, alerts
    assert {a["tag"] for a in firing} <= {"TK101.LEVEL", "FT101.FLOW_IN", "FT102.FLOW_OUT"}
    assert min(a["ts"] for a in firing) >= T0 + 2400, "nothing before the drift"
    assert min(a["ts"] for a in firing) <= T0 + 2400 + 900, "caught within 15 minutes"


def test_check_config_summary_names_the_invariants() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "collector", "check-config", str(root / "config" / "oil.yaml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    cfg = load_config(root / "config" / "oil.yaml")
    names = ", ".join(inv.name for inv in cfg.invariants)
    assert f"  invariants: {len(cfg.invariants)} ({names})" in result.stdout.splitlines()
    assert "tk101_mass_balance" in names
