"""Detection figures of a replayed run against its attack steps; definitions in docs/scoring.md.

An *alert* here is one firing episode of a (detector, tag) pair: what the journal records and
what an operator is paged for. A step's *window* is its active span plus a grace period, because
an attack on the physics shows in other tags a little after it, and an alert fires only after
``pending_s``. An alert is *true* when it starts firing inside some window, *false* when it starts
on a tick labelled normal outside every window, and *unknown* (neither) on an unlabelled tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from collector.alerts import Transition
from collector.scoring.truth import AttackStep

# NAB's application profiles (Lavin & Ahmad 2015): weights of a true positive, a false positive and a
# missed window. "standard" is the one the NAB scoreboard and SKAB's changepoint table quote.
NAB_PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_fp": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_fn": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}


@dataclass(frozen=True)
class Alert:
    """One firing episode of a (detector, tag): from its ``firing`` to its ``resolved`` transition."""

    tag: str
    detector: str
    start: float
    end: float  # inf when still firing at the end of the recording
    severity: str
    peak: float


@dataclass
class StepScore:
    step: AttackStep
    detected: bool
    time_to_detect_s: float | None  # first alert's start minus the step's start
    first_alert: Alert | None
    after_end: bool  # caught only in the grace period, once the step was over (often by the plant's recovery)
    detectors: list[str]  # that fired in the step's window
    tags: list[str]
    alerts: int
    # Missed, but an alert put down to an earlier step was still firing on this step's target when it began
    # ("detector on tag"): the operator was already alarmed there, and no new alert could fire.
    already_alarmed: list[str] = field(default_factory=list)


@dataclass
class Scorecard:
    tick_s: float
    grace_s: float
    score_from: float | None  # ticks before this were training, not scored
    steps: list[StepScore]
    alerts: int
    alerts_true: int
    alerts_false: int
    alerts_unknown: int
    event_precision: float | None
    event_recall: float | None
    normal_hours: float
    false_alerts_per_hour: float | None
    labelled: int  # labelled points scored point-wise (rows of the ground truth, or ticks)
    pointwise_unit: str  # "row" or "tick"
    pointwise: dict[str, float] | None
    nab: dict[str, dict[str, float | None]]
    false_alerts: list[Alert] = field(default_factory=list)

    @property
    def detected(self) -> int:
        return sum(s.detected for s in self.steps)

    def as_dict(self) -> dict[str, object]:
        doc = asdict(self)
        doc["false_alerts"] = doc["false_alerts"][:200]
        doc["detected"] = self.detected
        if self.pointwise:
            doc["skab"] = {
                "f1": self.pointwise["f1"],
                "far_pct": 100 * self.pointwise["far"],
                "mar_pct": 100 * self.pointwise["mar"],
            }
        return _finite(doc)


def _finite(value: object) -> object:
    """JSON has no inf or NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def alert_episodes(transitions: Iterable[Transition]) -> list[Alert]:
    """Firing episodes from the journal's transitions (in journal order), sorted by start."""
    open_: dict[tuple[str, str], tuple[float, str, float]] = {}
    out: list[Alert] = []
    for t in transitions:
        key = (t.detector, t.tag)
        if t.event == "firing":
            open_[key] = (t.ts, t.severity, t.peak)
        elif t.event == "escalated" and key in open_:
            start, _, peak = open_[key]
            open_[key] = (start, t.severity, max(peak, t.peak))
        elif t.event == "resolved" and key in open_:
            start, severity, peak = open_.pop(key)
            out.append(Alert(t.tag, t.detector, start, t.ts, severity, max(peak, t.peak)))
    out.extend(Alert(tag, det, start, math.inf, sev, peak) for (det, tag), (start, sev, peak) in open_.items())
    return sorted(out, key=lambda a: (a.start, a.tag, a.detector))


def _windows(steps: Sequence[AttackStep], grace_s: float) -> np.ndarray:
    return np.array([(s.start, s.end + grace_s) for s in steps], dtype=np.float64).reshape(-1, 2)


def _starts(alerts: Sequence[Alert]) -> np.ndarray:
    return np.array([a.start for a in alerts], dtype=np.float64)


def attribute(steps: Sequence[AttackStep], alerts: Sequence[Alert], grace_s: float) -> np.ndarray:
    """(alerts, steps) bool: which steps each alert is put down to.

    An alert starting while steps are active belongs to those steps; otherwise to the steps in
    whose grace period it starts. So a later step's alert is never credited to an earlier step's grace.
    """
    starts = _starts(alerts)[:, None]
    begin = np.array([s.start for s in steps], dtype=np.float64)[None, :]
    end = np.array([s.end for s in steps], dtype=np.float64)[None, :]
    active = (starts >= begin) & (starts < end)
    grace = (starts >= end) & (starts < end + grace_s)
    return active | (grace & ~active.any(axis=1, keepdims=True))


def score_steps(steps: Sequence[AttackStep], alerts: Sequence[Alert], grace_s: float) -> list[StepScore]:
    """Per step: detected when an alert put down to it (see :func:`attribute`) starts in
    ``[start, end + grace)``; the first such alert times it."""
    owner = attribute(steps, alerts, grace_s)
    out = []
    for j, step in enumerate(steps):
        hits = [alerts[i] for i in np.flatnonzero(owner[:, j])]
        first = min(hits, key=lambda a: a.start) if hits else None
        earlier = owner[:, :j].any(axis=1) if j else np.zeros(len(alerts), dtype=bool)
        carried = (
            []
            if first is not None
            else sorted(
                f"{a.detector} on {a.tag}"
                for a, own in zip(alerts, earlier, strict=True)
                if own and a.tag == step.target and a.start < step.start < a.end
            )
        )
        out.append(
            StepScore(
                step=step,
                detected=first is not None,
                time_to_detect_s=None if first is None else first.start - step.start,
                first_alert=first,
                after_end=first is not None and first.start >= step.end,
                detectors=sorted({a.detector for a in hits}),
                tags=sorted({a.tag for a in hits}),
                alerts=len(hits),
                already_alarmed=carried,
            )
        )
    return out


def _label_at(times: np.ndarray, ticks: np.ndarray, tick_label: np.ndarray) -> np.ndarray:
    """The label of the tick each time falls in (NaN outside the recorded ticks)."""
    if not len(ticks):
        return np.full(len(times), np.nan)
    pos = np.searchsorted(ticks, times, side="right") - 1
    ok = pos >= 0
    out = np.full(len(times), np.nan)
    out[ok] = tick_label[pos[ok]]
    return out


def classify_alerts(
    alerts: Sequence[Alert],
    steps: Sequence[AttackStep],
    grace_s: float,
    ticks: np.ndarray | None = None,
    tick_label: np.ndarray | None = None,
) -> np.ndarray:
    """Per alert: 1 true (starts in a step window), 0 false (starts on a normal tick), -1 unknown label."""
    starts = _starts(alerts)
    win = _windows(steps, grace_s)
    inside = ((starts[:, None] >= win[None, :, 0]) & (starts[:, None] < win[None, :, 1])).any(axis=1)
    verdict = np.where(inside, 1, 0).astype(np.int8)
    if ticks is not None and tick_label is not None:
        label = _label_at(starts, ticks, tick_label)
        unknown = ~np.isfinite(label) | (label < 0)
        verdict[~inside & unknown] = -1
    return verdict


def normal_hours(
    ticks: np.ndarray, tick_label: np.ndarray, steps: Sequence[AttackStep], grace_s: float, tick_s: float
) -> float:
    """Hours of known-normal operation: ticks labelled 0 outside every step window."""
    win = _windows(steps, grace_s)
    normal = tick_label == 0
    if len(win):
        lo = np.searchsorted(ticks, win[:, 0], side="left")
        hi = np.searchsorted(ticks, win[:, 1], side="left")
        cover = np.zeros(len(ticks) + 1, dtype=np.int64)
        np.add.at(cover, lo, 1)
        np.add.at(cover, hi, -1)
        normal &= np.cumsum(cover)[:-1] == 0
    return float(np.count_nonzero(normal)) * tick_s / 3600.0


def pointwise(alarm: np.ndarray, label: np.ndarray) -> tuple[int, dict[str, float] | None]:
    """Point-wise agreement of alarms with labels; a label is known when it is 0 or positive.

    FAR = FP / (FP + TN) and MAR = FN / (FN + TP) are the SKAB leaderboard's false and missed alarm rates.
    """
    known = np.isfinite(label) & (label >= 0)
    if not known.any():
        return 0, None
    a, y = alarm[known], label[known] > 0
    tp = int(np.sum(a & y))
    fp = int(np.sum(a & ~y))
    fn = int(np.sum(~a & y))
    tn = int(np.sum(~a & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    far = fp / (fp + tn) if fp + tn else 0.0
    mar = fn / (fn + tp) if fn + tp else 0.0
    return int(known.sum()), {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "far": far,
        "mar": mar,
    }


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's scaled sigmoid: +0.987 at a window's left edge, 0 at its right edge, towards -1 after it."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 3.0))) - 1.0)


def nab_score(
    windows: np.ndarray, detections: np.ndarray, profile: dict[str, float] = NAB_PROFILES["standard"]
) -> dict[str, float | None]:
    """NAB score of detection times against windows ``[(start, end), ...]``.

    Each window earns ``A_tp * sigma(y)`` for its first detection, ``y = -(end - t) / (end - start)``,
    or ``-A_fn`` if it has none; later detections inside a window count for nothing. A detection
    outside every window costs ``A_fp * sigma(y)`` with ``y`` its distance past the previous window's
    end in window lengths, or ``-A_fp`` before the first window. Normalised as NAB does:
    ``100 * (raw - null) / (perfect - null)``, null = never detecting, perfect = detecting every window
    at its first tick.

    >>> round(nab_score(np.array([[10.0, 20.0]]), np.array([10.0]))["score"], 1)
    100.0
    >>> nab_score(np.array([[10.0, 20.0]]), np.array([]))["score"]
    0.0
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    det = np.sort(np.asarray(detections, dtype=np.float64))
    if not len(windows):
        return {"score": None, "raw": None, "tp": 0, "fp": len(det), "fn": 0}
    length = np.maximum(windows[:, 1] - windows[:, 0], 1e-9)
    raw = 0.0
    tp = fn = 0
    for (a, b), width in zip(windows, length, strict=True):
        i = int(np.searchsorted(det, a, side="left"))
        if i < len(det) and det[i] < b:
            raw += profile["tp"] * float(scaled_sigmoid(-(b - det[i]) / width))
            tp += 1
        else:
            raw -= profile["fn"]
            fn += 1
    inside = ((det[:, None] >= windows[None, :, 0]) & (det[:, None] < windows[None, :, 1])).any(axis=1)
    outside = det[~inside]
    order = np.argsort(windows[:, 1])
    ends, widths = windows[order, 1], length[order]
    prev = np.searchsorted(ends, outside, side="right") - 1
    cost = np.where(prev >= 0, scaled_sigmoid((outside - ends[prev]) / widths[np.maximum(prev, 0)]), -1.0)
    raw += profile["fp"] * float(cost.sum())
    perfect = profile["tp"] * float(scaled_sigmoid(-1.0)) * len(windows)
    null = -profile["fn"] * len(windows)
    return {"score": 100.0 * (raw - null) / (perfect - null), "raw": raw, "tp": tp, "fp": len(outside), "fn": fn}


def score_run(
    steps: Sequence[AttackStep],
    alerts: Sequence[Alert],
    ticks: np.ndarray,
    tick_label: np.ndarray,
    alarm: np.ndarray,
    *,
    tick_s: float,
    grace_s: float,
    score_from: float | None = None,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> Scorecard:
    """Every figure of a run. ``alarm`` is per tick "some alert is firing"; ticks before ``score_from``
    (a training span) are left out, with the alerts that started and the steps that ended there.

    Point-wise figures are per labelled row of ``rows`` (row times, row labels) when given, each row
    taking the alarm of its tick, as the datasets' leaderboards count rows; else per tick.
    """
    if rows is not None:
        row_ts, row_label = rows
        row_alarm = _label_at(np.asarray(row_ts, dtype=np.float64), ticks, alarm.astype(np.float64)) == 1.0
        keep_rows = row_ts >= score_from if score_from is not None else np.ones(len(row_ts), dtype=bool)
        labelled, pw = pointwise(row_alarm[keep_rows], np.asarray(row_label)[keep_rows])
    if score_from is not None:
        keep = ticks >= score_from
        ticks, tick_label, alarm = ticks[keep], tick_label[keep], alarm[keep]
        alerts = [a for a in alerts if a.start >= score_from]
        steps = [s for s in steps if s.end > score_from]
    per_step = score_steps(steps, alerts, grace_s)
    verdict = classify_alerts(alerts, steps, grace_s, ticks, tick_label)
    n_true, n_false = int(np.sum(verdict == 1)), int(np.sum(verdict == 0))
    hours = normal_hours(ticks, tick_label, steps, grace_s, tick_s)
    if rows is None:
        labelled, pw = pointwise(alarm, tick_label)
    known = verdict >= 0
    detections = _starts(alerts)[known]
    win = _windows(steps, grace_s)
    return Scorecard(
        tick_s=tick_s,
        grace_s=grace_s,
        score_from=score_from,
        steps=per_step,
        alerts=len(alerts),
        alerts_true=n_true,
        alerts_false=n_false,
        alerts_unknown=int(np.sum(verdict < 0)),
        event_precision=n_true / (n_true + n_false) if n_true + n_false else None,
        event_recall=sum(s.detected for s in per_step) / len(per_step) if per_step else None,
        normal_hours=hours,
        false_alerts_per_hour=n_false / hours if hours > 0 else None,
        labelled=labelled,
        pointwise_unit="tick" if rows is None else "row",
        pointwise=pw,
        nab={name: nab_score(win, detections, weights) for name, weights in NAB_PROFILES.items()},
        false_alerts=[a for a, v in zip(alerts, verdict, strict=True) if v == 0],
    )
