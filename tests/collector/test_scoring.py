"""Scoring by hand-made cases: ground truth, alert episodes, per-step detection, event figures and NAB."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from collector.alerts import Transition
from collector.scoring import (
    NAB_PROFILES,
    Alert,
    AttackStep,
    alert_episodes,
    classify_alerts,
    nab_score,
    normal_hours,
    pointwise,
    score_run,
    score_steps,
    steps_from_labels,
    tick_labels,
)
from collector.scoring.metrics import scaled_sigmoid
from collector.scoring.truth import LabelsError, from_labels_csv


def tr(
    event: str, ts: float, tag: str = "TK101.LEVEL", detector: str = "ewma", severity: str = "warning"
) -> Transition:
    return Transition(event, ts, tag, detector, severity, 0.6, 0.7, ts)


def alert(start: float, end: float = math.inf, tag: str = "TK101.LEVEL", detector: str = "ewma") -> Alert:
    return Alert(tag, detector, start, end, "warning", 0.7)


# -- ground truth ---------------------------------------------------------------------------------


def test_label_runs_split_on_a_change_of_label_and_ignore_unknown() -> None:
    ts = np.arange(12.0) * 10  # rows every 10 s, ticks of 10 s
    label = np.array([0, 1, 1, 0, 2, 2, 1, 0, -999, -999, 1, np.nan])
    steps = steps_from_labels(ts, label, 10.0)
    assert [(s.id, s.start, s.end, s.kind) for s in steps] == [
        ("event 1", 10.0, 30.0, ""),
        ("event 2", 40.0, 60.0, "label 2"),
        ("event 3", 60.0, 70.0, ""),
        ("event 4", 100.0, 110.0, ""),
    ]


def test_attack_column_gives_overlapping_steps_by_id_and_repeats_get_a_suffix() -> None:
    ts = np.arange(8.0)
    attack = ["", "bias", "bias+dos", "dos", "", "bias", "", ""]
    label = np.array([0, 1, 1, 1, 0, 1, 0, 0.0])
    steps = steps_from_labels(ts, label, 1.0, attack)
    assert [(s.id, s.start, s.end) for s in steps] == [("bias", 1.0, 3.0), ("dos", 2.0, 4.0), ("bias#2", 5.0, 6.0)]


def test_steps_are_tick_aligned() -> None:
    ts = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    steps = steps_from_labels(ts, np.array([0, 0, 1, 1, 1, 0.0]), 2.0)
    assert [(s.start, s.end) for s in steps] == [(2.0, 6.0)]


def test_tick_labels_keep_the_last_row_of_each_tick_and_nan_where_no_row() -> None:
    row_ts = np.array([0.0, 0.5, 1.0, 3.2])
    row_label = np.array([0.0, 1.0, 0.0, 1.0])
    assert np.array_equal(
        tick_labels(row_ts, row_label, np.arange(5.0), 1.0), [1, 0, np.nan, 1, np.nan], equal_nan=True
    )


def test_labels_csv_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "labels.csv"
    good.write_text(
        "timestamp,label,attack\n2026-01-15T00:00:00,0,\n2026-01-15T00:00:01,1,spoof\n2026-01-15T00:00:02,0,\n"
    )
    truth = from_labels_csv(good, 1.0)
    assert [(s.id, s.duration_s) for s in truth.steps] == [("spoof", 1.0)]
    assert truth.steps[0].start == np.datetime64("2026-01-15T00:00:01").astype("datetime64[s]").astype(float)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,flag\n1,0\n")
    with pytest.raises(LabelsError, match="no 'timestamp' column"):
        from_labels_csv(bad, 1.0)
    bad.write_text("timestamp,label\nyesterday,0\n")
    with pytest.raises(LabelsError, match="epoch seconds or ISO 8601"):
        from_labels_csv(bad, 1.0)


# -- alerts ---------------------------------------------------------------------------------------


def test_alert_episodes_pair_firing_with_resolved_per_detector_and_tag() -> None:
    episodes = alert_episodes(
        [
            tr("firing", 10, "A"),
            tr("firing", 12, "B", "rate"),
            tr("escalated", 15, "A", severity="critical"),
            tr("resolved", 30, "A"),
            tr("firing", 40, "A"),
        ]
    )
    assert [(a.tag, a.detector, a.start, a.end, a.severity) for a in episodes] == [
        ("A", "ewma", 10, 30, "critical"),
        ("B", "rate", 12, math.inf, "warning"),
        ("A", "ewma", 40, math.inf, "warning"),
    ]


def test_a_step_is_detected_by_the_first_alert_in_its_window_only() -> None:
    steps = [AttackStep("bias", 100, 200), AttackStep("freeze", 500, 600), AttackStep("dos", 1000, 1100)]
    alerts = [
        alert(90),  # before the step: not a detection, even if still firing during it
        alert(130, tag="PT101.PRESSURE", detector="limits"),
        alert(120, tag="FT101.FLOW_IN"),
        alert(650),  # inside the grace of 60 s after "freeze"
        alert(1161),  # just past the grace of "dos"
    ]
    result = score_steps(steps, alerts, grace_s=60)
    assert [(s.step.id, s.detected, s.time_to_detect_s, s.after_end) for s in result] == [
        ("bias", True, 20, False),
        ("freeze", True, 150, True),
        ("dos", False, None, False),
    ]
    assert result[0].first_alert is not None and result[0].first_alert.tag == "FT101.FLOW_IN"
    assert result[0].detectors == ["ewma", "limits"] and result[0].tags == ["FT101.FLOW_IN", "PT101.PRESSURE"]
    assert result[2].detectors == [] and result[2].alerts == 0


def test_alerts_are_true_false_or_unknown() -> None:
    steps = [AttackStep("bias", 100, 200)]
    ticks = np.arange(0.0, 400.0)
    label = np.zeros(400)
    label[100:200] = 1
    label[300:] = -999  # unlabelled, as in BATADAL
    alerts = [alert(50), alert(150), alert(259), alert(260), alert(310)]
    verdict = classify_alerts(alerts, steps, 60.0, ticks, label)
    assert verdict.tolist() == [0, 1, 1, 0, -1]


def test_normal_hours_leave_out_windows_and_unlabelled_ticks() -> None:
    ticks = np.arange(0.0, 7200.0, 10.0)  # two hours of 10 s ticks
    label = np.zeros(len(ticks))
    label[:36] = np.nan  # first 6 minutes unknown
    steps = [AttackStep("x", 3600, 3900)]  # 5 minutes, plus 1 minute grace
    assert normal_hours(ticks, label, steps, 60.0, 10.0) == pytest.approx(2 - 0.1 - 0.1)


# -- figures --------------------------------------------------------------------------------------


def test_pointwise_counts_and_skab_rates() -> None:
    alarm = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    label = np.array([1, 0, 1, 0, 1, np.nan, -999, 0])
    known, p = pointwise(alarm, label)
    assert known == 6 and p is not None
    assert (p["tp"], p["fp"], p["fn"], p["tn"]) == (2, 1, 1, 2)
    assert p["precision"] == pytest.approx(2 / 3) and p["recall"] == pytest.approx(2 / 3)
    assert p["far"] == pytest.approx(1 / 3) and p["mar"] == pytest.approx(1 / 3)


def test_nab_scaled_sigmoid_and_scores_by_hand() -> None:
    assert float(scaled_sigmoid(-1.0)) == pytest.approx(0.98661, abs=1e-5)
    assert float(scaled_sigmoid(0.0)) == 0.0
    assert float(scaled_sigmoid(3.5)) == -1.0
    win = np.array([[100.0, 200.0], [500.0, 600.0]])
    perfect = NAB_PROFILES["standard"]["tp"] * float(scaled_sigmoid(-1.0))
    # first window caught at its middle, second missed, one false alert before any window, one 50 s after the first
    r = nab_score(win, np.array([10.0, 150.0, 160.0, 250.0]))
    raw = float(scaled_sigmoid(-0.5)) - 1.0 + 0.11 * (-1.0) + 0.11 * float(scaled_sigmoid(0.5))
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["raw"] == pytest.approx(raw)
    assert r["score"] == pytest.approx(100 * (raw + 2) / (2 * perfect + 2))
    low_fn = nab_score(win, np.array([150.0]), NAB_PROFILES["reward_low_fn"])
    assert low_fn["raw"] == pytest.approx(float(scaled_sigmoid(-0.5)) - 2.0)
    assert nab_score(np.empty((0, 2)), np.array([1.0]))["score"] is None


def test_score_run_puts_it_together_and_leaves_out_training() -> None:
    ticks = np.arange(0.0, 3600.0)
    label = np.zeros(3600)
    label[1000:1100] = 1
    label[2000:2100] = 1
    steps = [AttackStep("a", 1000, 1100), AttackStep("b", 2000, 2100)]
    alerts = [alert(30), alert(1010, 1130), alert(3000, 3010)]
    alarm = np.zeros(3600, dtype=bool)
    alarm[30:40] = alarm[1010:1130] = alarm[3000:3010] = True
    card = score_run(steps, alerts, ticks, label, alarm, tick_s=1.0, grace_s=60.0)
    assert card.detected == 1 and card.event_recall == 0.5
    assert (card.alerts, card.alerts_true, card.alerts_false) == (3, 1, 2)
    assert card.event_precision == pytest.approx(1 / 3)
    hours = (3600 - 2 * 160) / 3600
    assert card.normal_hours == pytest.approx(hours)
    assert card.false_alerts_per_hour == pytest.approx(2 / hours)
    assert card.pointwise is not None and card.pointwise["tp"] == 90
    trained = score_run(steps, alerts, ticks, label, alarm, tick_s=1.0, grace_s=60.0, score_from=400.0)
    assert trained.alerts == 2 and trained.alerts_false == 1 and trained.labelled == 3200
    doc = card.as_dict()
    assert doc["detected"] == 1 and doc["skab"]["far_pct"] == pytest.approx(100 * card.pointwise["far"])
    assert doc["false_alerts"][0]["end"] is None and doc["false_alerts"][1]["end"] == 3010.0  # inf is null in JSON
    assert doc["steps"][1]["time_to_detect_s"] is None


def test_docstring_examples_hold() -> None:
    import doctest

    import collector.scoring.metrics
    import collector.scoring.truth

    for module in (collector.scoring.metrics, collector.scoring.truth):
        failed, tried = doctest.testmod(module)
        assert failed == 0 and tried > 0


def test_an_alert_during_a_later_step_is_not_credited_to_an_earlier_steps_grace() -> None:
    steps = [AttackStep("freeze", 100, 200), AttackStep("silence", 300, 360), AttackStep("spoof", 330, 400)]
    alerts = [alert(250, tag="TT101.TEMP"), alert(320, tag="FT101.FLOW_IN"), alert(340, tag="PT101.PRESSURE")]
    result = score_steps(steps, alerts, grace_s=300)
    assert [s.tags for s in result] == [["TT101.TEMP"], ["FT101.FLOW_IN", "PT101.PRESSURE"], ["PT101.PRESSURE"]]
    assert [s.time_to_detect_s for s in result] == [150, 20, 10]
    assert result[0].after_end and not result[1].after_end


def test_a_missed_step_says_when_an_earlier_steps_alert_was_still_up_on_its_target() -> None:
    """A drift that reverses while the drift's alert still fires: no new alert can fire, and the
    step stays missed, but the operator reading the report learns they were already alarmed there."""
    steps = [
        AttackStep("drift_up", 900, 2700, target="TK101.LEVEL"),
        AttackStep("drift_back", 2700, 4500, target="TK101.LEVEL"),
        AttackStep("pump", 6000, 6100, target="P101.RUNNING"),
    ]
    alerts = [alert(1100, 3000, detector="invariant"), alert(1200, 1300, tag="FT101.FLOW_IN")]
    result = score_steps(steps, alerts, grace_s=300)
    assert [s.detected for s in result] == [True, False, False]
    assert result[1].already_alarmed == ["invariant on TK101.LEVEL"]  # the flow alert had ended, other tag anyway
    assert result[0].already_alarmed == [] and result[2].already_alarmed == []  # nothing was up on the pump
