"""What the report says, as plain data: the JSON report is this, the HTML and Markdown render it.

Metric definitions live here once (``METRICS``) and are printed in every format and in docs/scoring.md.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from collector import __version__
from collector.scoring import Scorecard

if TYPE_CHECKING:
    from collector.replay import ReplayResult

MAX_SIGNALS = 8  # attacked signals plotted; the report says how many more there were
MAX_TIMELINE_ROWS = 400  # rows of the timeline table; the SVG timeline shows every transition

# (key, name, definition): the figures of the metric table, in order.
METRICS: list[tuple[str, str, str]] = [
    (
        "detected",
        "attack steps detected",
        "steps with an alert that started firing while the step was active or, with no step active, in its grace "
        "period",
    ),
    (
        "event_recall",
        "event recall",
        "detected steps / all steps",
    ),
    (
        "event_precision",
        "event precision",
        "true alerts / (true + false alerts); an alert is one firing episode of a (detector, tag), true when it "
        "starts in a step window (step + grace), false when it starts on a normal tick outside every window",
    ),
    ("alerts_false", "false alerts", "alerts starting on a tick labelled normal, outside every step window"),
    (
        "false_alerts_per_hour",
        "false alerts per hour",
        "false alerts / hours of normal operation (ticks labelled 0 outside every step window)",
    ),
    (
        "mean_ttd_s",
        "mean time to detect",
        "mean over detected steps of (first alert's start - step start), seconds",
    ),
    (
        "nab_standard",
        "NAB score (standard)",
        "Numenta Anomaly Benchmark score, 0 = never alerting, 100 = alerting at the first tick of every window; "
        "early alerts earn more (scaled sigmoid), false alerts cost 0.11 each, a missed window 1",
    ),
    ("nab_reward_low_fp", "NAB score (reward low FP)", "NAB with false alerts costing 0.22"),
    ("nab_reward_low_fn", "NAB score (reward low FN)", "NAB with a missed window costing 2"),
    (
        "pointwise_precision",
        "point-wise precision",
        "per labelled row, alarm = some alert firing at the row's tick: TP / (TP + FP)",
    ),
    ("pointwise_recall", "point-wise recall", "TP / (TP + FN) over the same rows"),
    ("pointwise_f1", "point-wise F1", "harmonic mean of point-wise precision and recall"),
    ("far_pct", "FAR % (SKAB)", "false alarm rate, FP / (FP + TN) x 100, as the SKAB leaderboard"),
    ("mar_pct", "MAR % (SKAB)", "missed alarm rate, FN / (FN + TP) x 100, as the SKAB leaderboard"),
]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """Seconds for people: 45 s, 12 min 5 s, 3 h 20 min, 4 d 6 h."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 120:
        return f"{sign}{s:g} s"
    if s < 7200:
        return f"{sign}{int(s // 60)} min {int(s % 60)} s"
    if s < 172800:
        return f"{sign}{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{sign}{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def metric_values(card: Scorecard) -> dict[str, float | int | None]:
    ttds = [s.time_to_detect_s for s in card.steps if s.time_to_detect_s is not None]
    pw = card.pointwise or {}
    return {
        "detected": card.detected,
        "event_recall": card.event_recall,
        "event_precision": card.event_precision,
        "alerts_false": card.alerts_false,
        "false_alerts_per_hour": card.false_alerts_per_hour,
        "mean_ttd_s": sum(ttds) / len(ttds) if ttds else None,
        "nab_standard": card.nab["standard"]["score"],
        "nab_reward_low_fp": card.nab["reward_low_fp"]["score"],
        "nab_reward_low_fn": card.nab["reward_low_fn"]["score"],
        "pointwise_precision": pw.get("precision"),
        "pointwise_recall": pw.get("recall"),
        "pointwise_f1": pw.get("f1"),
        "far_pct": 100 * pw["far"] if pw else None,
        "mar_pct": 100 * pw["mar"] if pw else None,
    }


def format_metric(key: str, value: float | int | None, card: Scorecard) -> str:
    if value is None:
        return "n/a"
    if key == "detected":
        return f"{value} of {len(card.steps)}"
    if key == "alerts_false":
        return f"{value} of {card.alerts} alerts" + (
            f" ({card.alerts_unknown} on unlabelled ticks)" * bool(card.alerts_unknown)
        )
    if key == "mean_ttd_s":
        return duration(float(value))
    if key.startswith("nab") or key.endswith("_pct"):
        return f"{value:.1f}"
    if key == "false_alerts_per_hour":
        return f"{value:.2f} (over {card.normal_hours:.2f} h)"
    return f"{value:.3f}"


def attacked_tags(result: ReplayResult, limit: int = MAX_SIGNALS) -> tuple[list[str], int]:
    """Tags worth plotting, most telling first: step targets, the tags that caught each step, the
    tags of false alerts; with no ground truth, the most alerted tags. Returns (chosen, candidates)."""
    names = set(result.trace.tag_names)
    order: list[str] = []

    def add(tag: str) -> None:
        if tag in names and tag not in order:
            order.append(tag)

    if result.truth is not None:
        for step in result.truth.steps:
            add(step.target)
    card = result.scorecard
    if card is not None:
        for s in card.steps:
            if s.first_alert is not None:
                add(s.first_alert.tag)
        for s in card.steps:
            for tag in s.tags:
                add(tag)
        for a in card.false_alerts:
            add(a.tag)
    if not order:
        counts = Counter(t.tag for t in result.trace.transitions if t.event == "firing")
        for tag, _ in counts.most_common():
            add(tag)
    return order[:limit], len(order)


def build(result: ReplayResult, recording_label: str | None = None) -> dict[str, Any]:
    """The report as data (this is report.json)."""
    trace, card, truth, summary = result.trace, result.scorecard, result.truth, result.summary
    t0 = float(trace.ticks[0]) if len(trace.ticks) else 0.0
    t1 = float(trace.ticks[-1]) + trace.tick_s if len(trace.ticks) else 1.0
    doc: dict[str, Any] = {
        "plantwatch": __version__,
        "recording": recording_label or summary.recording,
        "labels": summary.labels,
        "scenario": truth.scenario if truth is not None else {},
        "first_tick": iso(t0),
        "last_tick": iso(t1 - trace.tick_s),
        "span_s": t1 - t0,
        "tick_s": trace.tick_s,
        "ticks": len(trace.ticks),
        "tags": len(trace.tag_names),
        "transitions": summary.transitions,
    }
    if card is not None:
        values = metric_values(card)
        reasons = {(t.detector, t.tag, t.ts): t.reason for t in trace.transitions if t.event == "firing" and t.reason}
        doc["grace_s"] = card.grace_s
        doc["scored_from"] = iso(card.score_from) if card.score_from is not None else None
        doc["metrics"] = [
            {"key": k, "name": n, "value": values[k], "shown": format_metric(k, values[k], card), "definition": d}
            for k, n, d in METRICS
        ]
        doc["steps"] = [
            {
                "id": s.step.id,
                "kind": s.step.kind,
                "target": s.step.target,
                "description": s.step.description,
                "start": iso(s.step.start),
                "start_elapsed_s": s.step.start - t0,
                "duration_s": s.step.duration_s,
                "detected": s.detected,
                "after_end": s.after_end,
                "already_alarmed": s.already_alarmed,
                "time_to_detect_s": s.time_to_detect_s,
                "first_alert": None
                if s.first_alert is None
                else f"{s.first_alert.detector} on {s.first_alert.tag} ({s.first_alert.severity})",
                "first_alert_reason": None if s.first_alert is None else reasons.get(_alert_key(s.first_alert)),
                "detectors": s.detectors,
                "tags": s.tags,
                "alerts": s.alerts,
            }
            for s in card.steps
        ]
    chosen, candidates = attacked_tags(result)
    doc["signals"] = chosen
    doc["signals_not_plotted"] = max(0, candidates - len(chosen))
    doc["timeline"] = timeline_rows(result, t0)
    return doc


def _alert_key(alert: Any) -> tuple[str, str, float]:
    """An alert episode's firing transition, as (detector, tag, tick)."""
    return (alert.detector, alert.tag, alert.start)


def timeline_rows(result: ReplayResult, t0: float) -> list[dict[str, Any]]:
    """Attack steps starting and ending, and alert transitions, in time order (for the debrief)."""
    rows: list[tuple[float, int, dict[str, Any]]] = []
    card = result.scorecard
    if result.truth is not None:
        for step in result.truth.steps:
            what = " ".join(x for x in (step.kind, step.target and f"on {step.target}") if x)
            rows.append((step.start, 0, {"event": "step starts", "what": f"{step.id} {what}".strip()}))
            rows.append((step.end, 1, {"event": "step ends", "what": step.id}))
    true_windows = [] if card is None else [(s.step.start, s.step.end + card.grace_s) for s in card.steps]
    for t in result.trace.transitions:
        verdict = ""
        if card is not None and t.event == "firing":
            verdict = "true" if any(a <= t.ts < b for a, b in true_windows) else "not in a step"
        rows.append(
            (
                t.ts,
                2,
                {
                    "event": f"alert {t.event}",
                    "what": f"{t.detector} on {t.tag} ({t.severity}, score {t.score:.2f})"
                    + (f": {t.reason}" if t.reason else ""),
                    "verdict": verdict,
                },
            )
        )
    rows.sort(key=lambda r: (r[0], r[1]))
    return [{"time": iso(ts), "elapsed_s": ts - t0, **row} for ts, _, row in rows]
