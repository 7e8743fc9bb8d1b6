"""Ground truth: when each attack step was active, from whatever the tester has.

Three sources, one shape (:class:`GroundTruth`: the labelled rows and the attack steps):

- a label column of the recording itself (``label`` in simulator recordings, ``anomaly`` in SKAB,
  ``ATT_FLAG`` in BATADAL), with the simulator's ``attack`` column naming the active steps;
- a separate CSV, ``timestamp,label[,attack]``;
- a scenario YAML, its step times counted from the recording's first row.

A label is known when it is 0 (normal) or positive (attack); NaN and negative values (BATADAL's
-999) are unknown and neither rewarded nor punished. Steps are maximal runs of rows with the same
positive label, or, with an ``attack`` column, of rows naming the same step id (steps may overlap).
Times are tick-aligned, as the alerts are: a step covers the ticks of its first to its last row.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class LabelsError(ValueError):
    """Ground truth that cannot be read as asked; says what and where."""


@dataclass(frozen=True)
class AttackStep:
    """One attack step (or one labelled anomaly): active over ticks ``[start, end)``."""

    id: str
    start: float
    end: float
    kind: str = ""
    target: str = ""
    description: str = ""

    @property
    def duration_s(self) -> float:
        return self.end - self.start


@dataclass
class GroundTruth:
    source: str  # what the truth came from, for the report
    ts: np.ndarray  # (rows,) row times, seconds since the epoch
    label: np.ndarray  # (rows,) 0 normal, > 0 attack, NaN or < 0 unknown
    steps: list[AttackStep]
    scenario: dict[str, Any] = field(default_factory=dict)  # name, description, stealth when known

    def tick_labels(self, ticks: np.ndarray, tick_s: float) -> np.ndarray:
        return tick_labels(self.ts, self.label, ticks, tick_s)


def _floor(ts: np.ndarray | float, tick_s: float) -> np.ndarray:
    return np.floor(np.asarray(ts, dtype=np.float64) / tick_s) * tick_s


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row indices of each maximal run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


def steps_from_labels(
    ts: np.ndarray, label: np.ndarray, tick_s: float, attack: list[str] | None = None
) -> list[AttackStep]:
    """Attack steps from labelled rows: runs of one positive label, or of one step id in ``attack``.

    >>> ts = np.arange(10.0)
    >>> [(s.id, s.start, s.end) for s in steps_from_labels(ts, np.array([0, 1, 1, 0, 2, 2, 1, 0, 0, 0.0]), 1.0)]
    [('event 1', 1.0, 3.0), ('event 2', 4.0, 6.0), ('event 3', 6.0, 7.0)]
    """
    ticks = _floor(ts, tick_s)
    found: list[AttackStep] = []
    if attack is not None:
        active = [frozenset(p for p in cell.strip().split("+") if p) for cell in attack]
        for step_id in sorted(set().union(*active)) if active else []:
            mask = np.fromiter((step_id in cell for cell in active), dtype=bool, count=len(active))
            for n, (a, b) in enumerate(_runs(mask)):
                name = step_id if n == 0 else f"{step_id}#{n + 1}"
                found.append(AttackStep(name, float(ticks[a]), float(ticks[b]) + tick_s))
        return sorted(found, key=lambda s: (s.start, s.id))
    value = np.where(np.isfinite(label), label, 0.0)
    positive = value > 0
    change = np.concatenate([[True], value[1:] != value[:-1]])
    starts = np.flatnonzero(positive & change)
    ends = np.flatnonzero(positive & np.concatenate([value[1:] != value[:-1], [True]]))
    for n, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        kind = "" if value[a] == 1 else f"label {value[a]:g}"
        found.append(AttackStep(f"event {n + 1}", float(ticks[a]), float(ticks[b]) + tick_s, kind=kind))
    return found


def tick_labels(row_ts: np.ndarray, row_label: np.ndarray, ticks: np.ndarray, tick_s: float) -> np.ndarray:
    """Per tick, the label of its last labelled row (as the frame assembler keeps the last sample); NaN if none."""
    out = np.full(len(ticks), np.nan)
    known = np.isfinite(row_label)
    if not known.any() or not len(ticks):
        return out
    row_tick = np.floor(row_ts[known] / tick_s).astype(np.int64)
    labels = row_label[known]
    rev_ticks, first = np.unique(row_tick[::-1], return_index=True)  # the last row of each tick
    last_label = labels[::-1][first]
    want = np.floor(np.asarray(ticks) / tick_s + 1e-9).astype(np.int64)
    pos = np.clip(np.searchsorted(rev_ticks, want), 0, len(rev_ticks) - 1)
    hit = rev_ticks[pos] == want
    out[hit] = last_label[pos[hit]]
    return out


def read_text_column(path: Path, separator: str, header: bool, column: str) -> list[str]:
    """One text column of a delimited file, row by row as the recording reader counts rows."""
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        if separator == "whitespace":
            rows = (line.split() for line in handle)
        else:
            rows = csv.reader(handle, delimiter=separator)
        names: list[str] | None = None
        out: list[str] = []
        for row in rows:
            if not row or all(not c.strip() for c in row):
                continue
            if names is None:
                names = [c.strip() for c in row] if header else [str(i + 1) for i in range(len(row))]
                if column not in names:
                    raise LabelsError(f"{path}: no column {column!r}")
                index = names.index(column)
                if header:
                    continue
            out.append(row[index].strip() if index < len(row) else "")
        return out


def _parse_times(raw: list[str], path: Path) -> np.ndarray:
    cells = np.array([c.strip() for c in raw], dtype=str)
    try:
        return cells.astype(np.float64)  # epoch seconds
    except ValueError:
        pass
    try:
        return cells.astype("datetime64[us]").astype(np.int64).astype(np.float64) / 1e6  # ISO 8601, UTC
    except ValueError:
        raise LabelsError(f"{path}: timestamps must be epoch seconds or ISO 8601 (UTC)") from None


def from_labels_csv(path: Path, tick_s: float) -> GroundTruth:
    """``timestamp,label[,attack]`` rows (header required; timestamps ISO 8601 UTC or epoch seconds)."""
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        rows = [r for r in csv.reader(handle) if r and any(c.strip() for c in r)]
    if not rows:
        raise LabelsError(f"{path}: empty labels file")
    names = [c.strip() for c in rows[0]]
    for need in ("timestamp", "label"):
        if need not in names:
            raise LabelsError(f"{path}: no {need!r} column (a labels file is timestamp,label[,attack])")
    body = rows[1:]
    if any(len(r) != len(names) for r in body):
        bad = next(i for i, r in enumerate(body) if len(r) != len(names))
        raise LabelsError(f"{path}: line {bad + 2} has {len(body[bad])} fields, the header has {len(names)}")
    ts = _parse_times([r[names.index("timestamp")] for r in body], path)
    try:
        label = np.array([float(r[names.index("label")] or "nan") for r in body])
    except ValueError:
        raise LabelsError(f"{path}: a label is not a number") from None
    attack = [r[names.index("attack")] for r in body] if "attack" in names else None
    order = np.argsort(ts, kind="stable")
    ts, label = ts[order], label[order]
    if attack is not None:
        attack = [attack[i] for i in order]
    return GroundTruth(f"labels file {path}", ts, label, steps_from_labels(ts, label, tick_s, attack))


def from_scenario(path: Path, recording_ts: np.ndarray, tick_s: float) -> GroundTruth:
    """A scenario's steps, its time 0 at the recording's first row; rows inside a step are labelled 1."""
    try:
        from sim_plant.scenarios import load_scenario
    except ImportError as exc:
        raise LabelsError(f"{path}: scenario files need sim_plant.scenarios ({exc})") from None
    try:
        scenario = load_scenario(path)
    except Exception as exc:  # the loader's own error names the file, the step and the field
        raise LabelsError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    if not len(recording_ts):
        raise LabelsError(f"{path}: the recording has no rows to align the scenario to")
    t0 = float(recording_ts[0])
    last_end = float(_floor(recording_ts[-1], tick_s)) + tick_s
    steps = []
    label = np.zeros(len(recording_ts))
    for step in scenario.steps:
        start = float(_floor(t0 + float(step.start_s), tick_s))
        end = min(last_end, float(_floor(t0 + float(step.start_s) + float(step.duration_s), tick_s)))
        if end <= start:
            continue  # after the recording ended
        label[(recording_ts >= start) & (recording_ts < end)] = 1.0
        steps.append(
            AttackStep(
                str(step.id), start, end, str(step.kind), str(step.target), str(getattr(step, "description", ""))
            )
        )
    info = {k: str(getattr(scenario, k, "")) for k in ("name", "description", "stealth", "plant")}
    return GroundTruth(f"scenario {path}", recording_ts, label, sorted(steps, key=lambda s: (s.start, s.id)), info)


def is_unknown(label: float) -> bool:
    return math.isnan(label) or label < 0
