"""Alerts that say why: a broken relation is named in the journal, alerts.csv and the report, and the
journal lines written before reasons existed still load, replay and restore as they did."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from collector.alerts import FIRING, OK, AlertBook, Transition
from collector.config import load_config
from collector.journal import AlertJournal, read_journal
from collector.replay import replay
from collector.runner import Runner
from collector.state import StateStore
from sim_plant.record import record_scenario
from sim_plant.scenarios import load_scenario
from tests.conftest import ROOT, demo_config


def test_a_broken_mass_balance_is_named_in_the_journal_the_csv_and_the_report(tmp_path: Path) -> None:
    """The level transmitter reads 0.4 m high: the tank's mass balance breaks, and its alerts say so."""
    recording = record_scenario(load_scenario(ROOT / "sim_plant/scenarios/oil/level_bias.yaml"), tmp_path / "rec.csv")
    out = tmp_path / "run"
    replay(load_config(ROOT / "config/oil.yaml"), recording, out, progress=False, report=tmp_path / "report")

    journal = list(read_journal(out / "alerts.jsonl"))
    on_flow = [r for r in journal if r["detector"] == "invariant" and r["tag"] == "FT101.FLOW_IN"]
    assert on_flow and on_flow[0]["event"] == "firing", "the inflow meter is blamed through the balance"
    reason = str(on_flow[0]["reason"])
    assert reason.startswith("invariant tk101_mass_balance: residual ") and " sd (CUSUM " in reason
    assert "lic101_tracking" not in reason, "FT101.FLOW_IN is in the balance only"
    on_level = next(r for r in journal if r["detector"] == "invariant" and r["tag"] == "TK101.LEVEL")
    assert "invariant tk101_mass_balance" in str(on_level["reason"]) and "lic101_tracking" in str(on_level["reason"])
    assert all("reason" not in r for r in journal if r["event"] == "resolved"), "a resolution needs no reason"

    rows = {int(r["seq"]): r for r in csv.DictReader((out / "alerts.csv").open())}
    assert rows[int(on_flow[0]["seq"])]["reason"] == reason  # type: ignore[call-overload]
    assert len(rows) == len(journal)

    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    said = [r["what"] for r in doc["timeline"] if r["event"] == "alert firing" and "FT101.FLOW_IN" in r["what"]]
    assert any(w.startswith("invariant on FT101.FLOW_IN") and w.endswith(reason) for w in said), said
    assert reason in (tmp_path / "report" / "report.md").read_text()


def old_and_new_records() -> list[dict[str, object]]:
    """Lines as plantwatch wrote them before reasons existed, then one with a reason."""
    return [
        {"event": "firing", "ts": 100.0, "tag": "TK101.LEVEL", "detector": "ewma", "severity": "warning",
         "score": 0.61, "peak": 0.63, "since": 95.0},
        {"event": "firing", "ts": 101.0, "tag": "FT101.FLOW_IN", "detector": "limits", "severity": "critical",
         "score": 0.75, "peak": 0.75, "since": 96.0},
        {"event": "resolved", "ts": 150.0, "tag": "FT101.FLOW_IN", "detector": "limits", "severity": "critical",
         "score": 0.2, "peak": 0.75, "since": 96.0},
        {"event": "escalated", "ts": 160.0, "tag": "TK101.LEVEL", "detector": "ewma", "severity": "critical",
         "score": 0.8, "peak": 0.8, "since": 95.0, "reason": "z-score 9.1 against a learned mean"},
    ]  # fmt: skip


def test_old_journal_lines_read_compare_and_apply_as_before(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    records = old_and_new_records()
    with AlertJournal(path) as journal:
        journal.append(records)
    read = [{k: v for k, v in r.items() if k not in ("seq", "written")} for r in read_journal(path)]
    assert read == records
    assert [Transition(**r).as_record() for r in read] == records, "no reason, no key: old lines compare equal"  # type: ignore[arg-type]
    with AlertJournal(path) as journal:  # reopened: the sequence goes on
        assert journal.seq == 4
    book = AlertBook(["limits", "ewma"], ["TK101.LEVEL", "FT101.FLOW_IN"], [("warning", 0.5), ("critical", 0.75)],
                     0.1, 5.0, 30.0)  # fmt: skip
    assert book.apply_journal(read_journal(path)) == 4
    assert book.state[1, 0] == FIRING and book.severity_names[book.severity[1, 0]] == "critical"
    assert book.state[0, 1] == OK


def test_restart_replays_old_and_new_journal_lines_after_the_snapshot(tmp_path: Path) -> None:
    """A snapshot, then journal lines of both kinds written after it: the restart brings the machines up to them."""
    config, _ = demo_config(tmp_path)
    cfg = load_config(config)
    store = StateStore(cfg.state_dir)
    journal_path = cfg.state_dir / "alerts.jsonl"
    with AlertJournal(journal_path) as journal:
        first = Runner(cfg, journal, realtime=False, store=store)
        first.snapshot()  # at journal seq 0
        journal.append(old_and_new_records())
    with AlertJournal(journal_path) as journal:
        second = Runner(cfg, journal, realtime=False, store=store)
        assert second.restore()
        alerts = second.pipeline.alerts
        d, t = alerts.detectors.index("ewma"), alerts.tags.index("TK101.LEVEL")
        assert alerts.state[d, t] == FIRING
        assert alerts.severity_names[alerts.severity[d, t]] == "critical"
        assert np.count_nonzero(alerts.state == FIRING) == 1, "the limits alert resolved after the snapshot"


def test_an_explain_that_fails_costs_the_reason_not_the_alert(tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A detector's bug in ``explain`` is logged once; the alerts are the same, without the reason."""
    from detectors.invariants import InvariantDetector

    def broken(self, row, tags, scores, names):  # type: ignore[no-untyped-def]
        raise ValueError("a bug in explain")

    recording = record_scenario(load_scenario(ROOT / "sim_plant/scenarios/oil/level_bias.yaml"), tmp_path / "rec.csv")
    cfg = load_config(ROOT / "config/oil.yaml")
    replay(cfg, recording, tmp_path / "good", progress=False)
    monkeypatch.setattr(InvariantDetector, "explain", broken)
    replay(cfg, recording, tmp_path / "bad", progress=False)
    good = [
        {k: v for k, v in r.items() if k not in ("written", "reason")}
        for r in read_journal(tmp_path / "good" / "alerts.jsonl")
    ]
    assert any(r["detector"] == "invariant" for r in good)
    bad = list(read_journal(tmp_path / "bad" / "alerts.jsonl"))
    assert [{k: v for k, v in r.items() if k != "written"} for r in bad] == good
    assert sum("could not explain" in r.getMessage() for r in caplog.records) == 1
