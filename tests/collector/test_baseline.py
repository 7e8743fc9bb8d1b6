"""``plantwatch baseline``: versions fitted from real recordings, rolled back, restored by a real daemon."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from collector.audit import AuditTrail, read_audit
from collector.baseline import BaselineStore, restore_active
from collector.cli import main
from collector.config import load_config
from collector.journal import AlertJournal
from collector.runner import Runner
from collector.state import StateStore, read_npz
from tests.conftest import DEMO_RECORDING, ROOT, Daemon, demo_config, sample_value

LEVEL = "TK101.LEVEL"


def shifted_copy(src: Path, dst: Path, column: str, offset: np.ndarray | float) -> Path:
    """``src`` with ``offset`` (a constant or one value per row) added to ``column``."""
    with src.open(newline="") as handle:
        rows = list(csv.reader(handle))
    k = rows[0].index(column)
    add = np.broadcast_to(np.asarray(offset, dtype=float), (len(rows) - 1,))
    for row, extra in zip(rows[1:], add, strict=True):
        row[k] = f"{float(row[k]) + extra:.6f}"
    with dst.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return dst


def baseline(*words: str, config: Path) -> int:
    return main(["baseline", *words, "-c", str(config)])


def audit_events(state: Path, event: str) -> list[dict[str, object]]:
    return [e for e in read_audit(state / "audit.jsonl") if e["event"] == event]


def tag_row(meta: dict[str, object], tag: str) -> int:
    return list(meta["tags"]).index(tag)  # type: ignore[call-overload]


def test_fit_two_versions_roll_back_and_the_daemon_restores_it(
    tmp_path: Path, daemons: list[Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    config, doc = demo_config(tmp_path, speed=10.0, loop=True, rebase=True)
    listen, state = doc["exporter"]["listen"], Path(doc["state_dir"])
    raised = shifted_copy(DEMO_RECORDING, tmp_path / "raised.csv", LEVEL, 0.3)

    assert baseline(str(DEMO_RECORDING), config=config) == 0  # the form: RECORDING alone means fit
    assert baseline("fit", str(raised), "--note", "level raised 30 cm", config=config) == 0
    out = capsys.readouterr().out
    assert "baseline v0002 fitted" in out and "not active" in out
    store = BaselineStore(state)
    assert store.versions() == ["v0001", "v0002"] and store.active() is None
    v1, v2 = store.load("v0001"), store.load("v0002")
    lv1 = float(v1[0]["ewma.mean"][tag_row(v1[1], LEVEL)])
    lv2 = float(v2[0]["ewma.mean"][tag_row(v2[1], LEVEL)])
    assert lv2 - lv1 == pytest.approx(0.3, abs=0.03)  # each version learned its own recording
    sidecar = json.loads((state / "baselines" / "v0002.json").read_text())
    assert sidecar["rows"] == 1800 and sidecar["recording"] == str(raised) and sidecar["note"] == "level raised 30 cm"
    assert len(sidecar["config_hash"]) == 16 and sidecar["per_tag"][LEVEL]["n"] == 1800

    assert baseline("activate", "2", config=config) == 0
    assert baseline("--rollback", "v0001", config=config) == 0
    assert baseline("list", config=config) == 0
    listing = capsys.readouterr().out
    assert "* v0001" in listing and "  v0002" in listing and "rollback" in listing
    pointer = store.active()
    assert pointer is not None and pointer.version == "v0001" and pointer.previous == "v0002"
    changed = audit_events(state, "baseline_changed")
    assert [(e["version"], e["action"]) for e in changed] == [("v0002", "activate"), ("v0001", "rollback")]

    first = Daemon(config, tmp_path / "first.log")
    daemons.append(first)
    first.wait_for(listen, lambda t: sample_value(t, "plantwatch_state_restored") == 1.0, timeout=30)
    text = first.wait_for(listen, lambda t: (sample_value(t, "plantwatch_ticks_total") or 0) >= 5, timeout=30)
    # Warm at once: the detectors start from the baseline's 1800 learned samples, not from zero.
    assert sample_value(text, "plantwatch_detector_warm_tags", detector="ewma") == 6.0
    assert sample_value(text, "plantwatch_baseline_info", version="v0001") == 1.0
    restored = audit_events(state, "baseline_restored")
    assert restored[-1]["version"] == "v0001" and restored[-1]["activation"] == pointer.activation
    assert restored[-1]["over_snapshot"] is False and restored[-1]["tags_matched"] == 8
    # An engineer activates v0002 while the daemon runs; its shutdown snapshot is newer, yet v0002 must win.
    assert baseline("activate", "v0002", config=config) == 0
    assert first.stop(signal.SIGTERM) == 0
    assert "baseline restored" in first.log()
    arrays, meta = read_npz(state / "snapshot.npz")
    assert meta["baseline_activation"] == pointer.activation
    live = float(arrays["ewma.mean"][tag_row(meta, LEVEL)])
    assert abs(live - lv1) < abs(live - lv2), (live, lv1, lv2)
    assert arrays["ewma.count"][tag_row(meta, LEVEL)] > 1500  # the fit's samples plus a few live ones

    second = Daemon(config, tmp_path / "second.log")
    daemons.append(second)
    text = second.wait_for(listen, lambda t: sample_value(t, "plantwatch_state_restored") == 1.0, timeout=30)
    assert sample_value(text, "plantwatch_baseline_info", version="v0002") == 1.0
    assert second.stop(signal.SIGTERM) == 0
    last = audit_events(state, "baseline_restored")[-1]
    assert last["version"] == "v0002" and last["over_snapshot"] is True
    assert last["activation"] == store.active().activation  # type: ignore[union-attr]


def test_a_snapshot_grown_from_the_active_baseline_resumes_and_tags_match_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, doc = demo_config(tmp_path)
    state = Path(doc["state_dir"])
    kept = [t for t in doc["sources"][0]["tags"] if t["name"] != "TT101.TEMP"]
    fewer = dict(doc, sources=[dict(doc["sources"][0], tags=kept)])
    fewer_config = tmp_path / "fewer.yaml"
    fewer_config.write_text(yaml.safe_dump(fewer, sort_keys=False))
    assert baseline("fit", str(DEMO_RECORDING), "--activate", config=fewer_config) == 0
    assert baseline("show", "1", config=config) == 0
    assert "1 of 8 tags are not in the baseline and start cold" in capsys.readouterr().out
    cfg = load_config(config)

    def start() -> tuple[Runner, dict[str, object] | None]:
        with AlertJournal(state / "alerts.jsonl") as journal, AuditTrail(state / "audit.jsonl") as audit:
            runner = Runner(cfg, journal, realtime=False, store=StateStore(state))
            runner.restore()
            return runner, restore_active(runner, state, audit)

    runner, applied = start()
    assert applied is not None and applied["version"] == "v0001" and applied["tags_matched"] == 7
    counts = dict(zip(runner.pipeline.tag_names, runner.pipeline.bank.state()["ewma.count"], strict=True))
    assert counts["TT101.TEMP"] == 0 and counts[LEVEL] > 1000  # the tag the baseline lacks starts cold
    # What follows the last moment (last sample seen, value held since) is not taken from a recording long past.
    fitted = BaselineStore(state).load("v0001")[0]
    assert np.isfinite(fitted["stale.last_seen"]).all() and np.isfinite(fitted["flatline.held_since"]).any()
    assert np.isnan(runner.pipeline.bank.state()["stale.last_seen"]).all()
    assert np.isnan(runner.pipeline.bank.state()["flatline.held_since"]).all()
    runner.snapshot()  # what the daemon writes while it runs on

    again, applied = start()
    assert applied is None  # the snapshot grew from this activation: it resumes, live learning goes on
    assert again.restored_meta is not None

    assert baseline("rollback", "1", config=config) == 0  # rolling back, even to the same version, is meant
    _, applied = start()
    assert applied is not None and applied["over_snapshot"] is True

    # A damaged version is refused at start, in the log and the audit trail; the snapshot stands.
    assert baseline("rollback", "1", config=config) == 0
    npz = state / "baselines" / "v0001.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    again, applied = start()
    assert applied is None and again.restored_meta is not None
    refused = audit_events(state, "baseline_refused")
    assert refused and refused[-1]["version"] == "v0001" and "unreadable" in str(refused[-1]["error"])


def test_a_slow_ramp_in_the_fitting_recording_shows_before_activation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load((ROOT / "config" / "oil.yaml").read_text())
    doc["state_dir"] = str(tmp_path / "state")
    config = tmp_path / "oil.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    clean = tmp_path / "clean.csv"
    subprocess.run(
        [sys.executable, "-m", "sim_plant.record", "--plant", "oil", "--steps", "2400", "--seed", "4", str(clean)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    # The attacker's ramp: discharge pressure creeps up 0.4 bar over 40 minutes, 1.7e-4 bar per scan.
    ramp = np.linspace(0.0, 0.4, 2400)
    ramped = shifted_copy(clean, tmp_path / "ramped.csv", "PT102.DISCHARGE", ramp)

    assert baseline("fit", str(clean), "--activate", config=config) == 0
    clean_out = capsys.readouterr().out
    assert baseline("fit", str(ramped), config=config) == 0
    fit_out = capsys.readouterr().out
    assert "not active" in fit_out
    assert baseline("show", "v0002", config=config) == 0
    shown = capsys.readouterr().out

    def line(text: str, tag: str) -> list[str]:
        return next(row.split() for row in text.splitlines() if row.strip().startswith(tag + " "))

    ramped_line, clean_line = line(shown, "PT102.DISCHARGE"), line(clean_out, "PT102.DISCHARGE")
    assert "DRIFT:" in ramped_line and "DRIFT:" not in clean_line
    # A least-squares trend is additive: the ramped trend is the plant's own plus exactly the injected 0.4 bar.
    assert float(ramped_line[7]) - float(clean_line[7]) == pytest.approx(0.4, abs=0.01)
    assert "MOVED:" in ramped_line  # and the learned mean followed it, against the active clean version
    assert float(ramped_line[1]) - float(clean_line[1]) > 0.2
    assert "PT102.DISCHARGE" in shown.split("drift steadily")[1]
    pointer = BaselineStore(tmp_path / "state").active()
    assert pointer is not None and pointer.version == "v0001"  # fitting never activated the ramped one


def test_errors_exit_2_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, doc = demo_config(tmp_path)
    assert baseline("fit", str(DEMO_RECORDING), config=config) == 0
    capsys.readouterr()

    assert baseline("rollback", "v0007", config=config) == 2
    assert "no baseline v0007" in capsys.readouterr().err
    assert baseline("show", "latest", config=config) == 2
    assert "'latest' is not a baseline version" in capsys.readouterr().err
    assert baseline("fit", str(tmp_path / "missing.csv"), config=config) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    partial = tmp_path / "partial.csv"
    partial.write_text("timestamp,TK101.LEVEL\n2026-01-15T08:00:00,5.0\n")
    assert baseline("fit", str(partial), config=config) == 2
    assert "no column for tag(s)" in capsys.readouterr().err
    assert baseline("list", "extra", config=config) == 2
    assert "takes nothing" in capsys.readouterr().err

    other = tmp_path / "other-site.yaml"
    other.write_text(yaml.safe_dump({**doc, "site": "another-terminal"}, sort_keys=False))
    assert baseline("activate", "1", config=other) == 2
    assert "config mismatch" in capsys.readouterr().err
    assert BaselineStore(Path(doc["state_dir"])).active() is None  # nothing was activated
