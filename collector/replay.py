"""``plantwatch replay``: a recording through the daemon's own pipeline, as fast as it goes.

The config's tags and detectors are used as they are; its sources are
replaced by one replay source reading RECORDING (format options from the
command line, else from the config's first replay source). Outputs in DIR:

- ``scores.csv``: per tick, the label (if any), the number of alerts firing,
  the worst score, and every (tag, detector) score;
- ``alerts.csv`` and ``alerts.jsonl``: the alert transitions, as the daemon journals them, each firing
  or escalation with its detector's ``reason`` where it gives one (which invariant broke, and how far);
- ``summary.json``: counts, timings and, with labels, point-wise agreement and the scoring
  (per attack step detected or missed and how fast, event-level figures, NAB; see docs/scoring.md);
- with ``report``: ``report.html``, ``report.md`` and ``report.json`` in that folder.

Ground truth (``labels``): by default the config's label column or the recording's ``label``
column, with its ``attack`` column naming the active steps when it has one; else another column
of the recording, a ``timestamp,label[,attack]`` CSV, or a scenario YAML (times from the first row).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from collector.alerts import Transition
from collector.config import ConfigError, PlantConfig
from collector.journal import AlertJournal
from collector.pipeline import FrameResult
from collector.receivers.replay import ReplayOptions, ReplayReceiver
from collector.receivers.replay.recording import Recording, RecordingError
from collector.runner import Runner
from collector.scoring import GroundTruth, LabelsError, Scorecard, alert_episodes, pointwise, score_run
from collector.scoring.truth import from_labels_csv, from_scenario, read_text_column, steps_from_labels

__all__ = ["ReplayResult", "ReplaySummary", "ReplayTrace", "default_grace_s", "pointwise", "replay", "run_replay"]

MAX_SCORE_COLUMNS = 5000  # beyond this, scores.csv holds the worst score per tag instead
MAX_TRACE_CELLS = 20_000_000  # ticks x tags of per-tag scores kept for the report's plots (80 MB)
MAX_STEP_LINES = 20  # attack steps listed on stdout; summary.json has them all
ATTACK_COLUMN = "attack"  # the simulator's text column of active step ids, joined by "+"


def default_grace_s(tick_s: float) -> float:
    """How long after a step an alert still counts as caused by it: 5 minutes or 5 ticks, whichever is longer.

    An attack on the physics leaves the plant out of its normal band for a while after it stops: the
    control loops take minutes to settle (the simulated plants' recoveries put tags outside their
    range up to about two minutes after a step). Alerts on that recovery are consequences of the
    attack, not false alarms. A step caught only in its grace period is reported as such.
    """
    return max(300.0, 5.0 * tick_s)


def replay_config(cfg: PlantConfig, recording: Path, **format_options: Any) -> PlantConfig:
    """The config with its sources replaced by one replay source over ``recording``."""
    base = next((s for s in cfg.sources if s.kind == "replay"), None)
    fields = base.model_dump(exclude={"name", "kind", "path", "tags"}) if base is not None else {}
    fields.update({k: v for k, v in format_options.items() if v is not None})
    tags = []
    for source in cfg.sources:
        for tag in source.tags:
            column = tag.source_key if source.kind == "replay" else tag.name
            tags.append({**tag.model_dump(), "column": column})
    doc = {"name": "recording", "kind": "replay", "path": str(recording), "tags": tags, **fields}
    from pydantic import ValidationError

    try:
        source = ReplayOptions.model_validate(doc, context={"base_dir": Path.cwd()})
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ConfigError(problems) from None
    return cfg.model_copy(update={"sources": [source]}).with_units_of(cfg)


@dataclass
class ReplaySummary:
    recording: str
    rows: int = 0
    ticks: int = 0
    tags: int = 0
    first_tick: float = math.nan
    last_tick: float = math.nan
    seconds: float = 0.0
    transitions: dict[str, int] = field(default_factory=dict)
    alerts_by_tag: dict[str, int] = field(default_factory=dict)
    malformed_cells: int = 0
    non_finite: int = 0
    labelled_ticks: int = 0
    pointwise: dict[str, float] | None = None
    labels: str | None = None
    scoring: dict[str, Any] | None = None

    def render(self) -> str:
        rate = self.rows / self.seconds if self.seconds else math.inf
        lines = [
            f"replayed {self.recording}: {self.rows} rows, {self.ticks} ticks, {self.tags} tags "
            f"in {self.seconds:.2f} s ({rate:,.0f} rows/s)",
            "alert transitions: " + (", ".join(f"{k} {v}" for k, v in self.transitions.items()) or "none"),
        ]
        if self.alerts_by_tag:
            top = sorted(self.alerts_by_tag.items(), key=lambda kv: -kv[1])[:5]
            lines.append("most alerted tags: " + ", ".join(f"{t} ({n})" for t, n in top))
        if self.malformed_cells or self.non_finite:
            lines.append(f"data quality: {self.malformed_cells} malformed cells, {self.non_finite} non-finite values")
        if self.pointwise:
            p = self.pointwise
            lines.append(
                f"against labels (alarm = any alert firing, {self.labelled_ticks} labelled rows): "
                f"precision {p['precision']:.3f}, recall {p['recall']:.3f}, F1 {p['f1']:.3f}, "
                f"FAR {p['far']:.1%}, MAR {p['mar']:.1%}"
            )
        if self.scoring:
            sc = self.scoring
            steps = sc["steps"]
            fah = sc["false_alerts_per_hour"]
            lines.append(
                f"attack steps ({self.labels}): {sc['detected']}/{len(steps)} detected, "
                f"{sc['alerts_false']} false alert(s)"
                + (f" ({fah:.2f} per hour of normal operation)" if fah is not None else "")
                + f", NAB {_fmt(sc['nab']['standard']['score'], '.1f')}"
            )
            for st in steps[:MAX_STEP_LINES]:
                ttd = st["time_to_detect_s"]
                caught = f"detected after {ttd:g} s by {', '.join(st['detectors'])}" if st["detected"] else "MISSED"
                if st.get("already_alarmed"):
                    caught += f" (an earlier step's alert was still firing: {', '.join(st['already_alarmed'])})"
                if st["after_end"]:
                    caught += " (only after the step ended)"
                lines.append(f"  {st['step']['id']}: {caught}")
            if len(steps) > MAX_STEP_LINES:
                lines.append(f"  ... and {len(steps) - MAX_STEP_LINES} more steps in summary.json")
        return "\n".join(lines)


class Progress:
    """A progress bar on stderr; on a non-terminal, a line every 10 %."""

    def __init__(self, total: int, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.total = max(1, total)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self._last_decile = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        frac = min(1.0, done / self.total)
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {frac:6.1%} {done}/{self.total} rows {rate:,.0f} rows/s")
            self.stream.flush()
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(f"replay {frac:.0%} ({done}/{self.total} rows, {rate:,.0f} rows/s)\n")

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")


class _Outputs:
    def __init__(self, out: Path, runner: Runner, summary: ReplaySummary, keep_tag_scores: bool) -> None:
        self.runner = runner
        self.summary = summary
        pipeline = runner.pipeline
        self.full = len(pipeline.tag_names) * len(pipeline.bank.names) <= MAX_SCORE_COLUMNS
        self._scores = (out / "scores.csv").open("w", newline="", encoding="utf-8")
        self._alerts = (out / "alerts.csv").open("w", newline="", encoding="utf-8")
        self.scores = csv.writer(self._scores, lineterminator="\n")
        self.alerts = csv.writer(self._alerts, lineterminator="\n")
        if self.full:
            cols = [f"{t}/{d}" for t in pipeline.tag_names for d in pipeline.bank.names]
        else:
            cols = list(pipeline.tag_names)
        self.scores.writerow(["timestamp", "time", "label", "firing", "score", *cols])
        self.alerts.writerow(
            ["seq", "event", "timestamp", "time", "tag", "detector", "severity", "score", "peak", "reason"]
        )
        self.alarm: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.ticks: list[np.ndarray] = []
        self.firing: list[np.ndarray] = []
        self.worst: list[np.ndarray] = []
        self.tag_worst: list[np.ndarray] | None = [] if keep_tag_scores else None
        self.transitions: list[Transition] = []

    def on_frame(self, result: FrameResult) -> None:
        frame, scores = result.frame, result.scores
        worst = scores.max(axis=(1, 2))
        per_cell = scores.transpose(0, 2, 1).reshape(len(frame), -1) if self.full else scores.max(axis=1)
        times = _iso_ticks(frame.ts)
        lines = []
        for i, numbers in enumerate(score_cells(per_cell)):
            label = "" if math.isnan(frame.label[i]) else f"{frame.label[i]:g}"
            lines.append(f"{frame.ts[i]:.3f},{times[i]},{label},{int(result.firing[i])},{worst[i]:.4f},{numbers}\n")
        self._scores.write("".join(lines))
        seq0 = self.runner.journal.seq - len(result.transitions)
        for k, t in enumerate(result.transitions):
            self.alerts.writerow(
                [
                    seq0 + k + 1,
                    t.event,
                    f"{t.ts:.3f}",
                    _iso(t.ts),
                    t.tag,
                    t.detector,
                    t.severity,
                    f"{t.score:.4f}",
                    f"{t.peak:.4f}",
                    t.reason or "",
                ]
            )
            if t.event == "firing":
                self.summary.alerts_by_tag[t.tag] = self.summary.alerts_by_tag.get(t.tag, 0) + 1
        self.alarm.append(result.firing > 0)
        self.labels.append(frame.label)
        self.ticks.append(frame.ts)
        self.firing.append(result.firing)
        self.worst.append(worst.astype(np.float32))
        if self.tag_worst is not None:
            self.tag_worst.append(scores.max(axis=1).astype(np.float32))
        self.transitions.extend(result.transitions)
        if math.isnan(self.summary.first_tick):
            self.summary.first_tick = float(frame.ts[0])
        self.summary.last_tick = float(frame.ts[-1])

    def close(self) -> None:
        self._scores.close()
        self._alerts.close()


_FOUR_PLACES = np.frombuffer(
    "".join(f"{i // 10000}.{i % 10000:04d}" for i in range(10001)).encode("ascii"), dtype=np.uint8
).reshape(10001, 6)
"""The text of 0.0000 ... 1.0000, six bytes each: a score's cell is a row of this table."""


def score_cells(scores: np.ndarray) -> list[str]:
    """Each row of float32 ``scores`` as ``%.4f`` values joined by commas: ``np.savetxt``'s bytes, faster.

    ``savetxt`` formats value by value in Python, which was a third of a replay. A float32 times 10^4
    is exact in float64 (24 + 14 bits), so ``rint`` of it rounds the exact value half to even, as
    ``%.4f`` does; a score in [0, 1] is then one of 10,001 six-byte strings, gathered by numpy. Anything
    else (NaN, a negative zero, a value outside [0, 1], another dtype) goes the way of ``savetxt``.
    """
    n = scores.shape[0]
    if scores.dtype != np.float32 or scores.ndim != 2 or not scores.shape[1]:
        return _savetxt_rows(scores)
    wide = scores.astype(np.float64)
    if not (bool(np.all(wide >= 0.0)) and bool(np.all(wide <= 1.0))) or bool(np.signbit(wide).any()):
        return _savetxt_rows(scores)
    index = np.rint(wide * 10000.0).astype(np.intp)
    text = np.empty((n, scores.shape[1], 7), dtype=np.uint8)
    text[:, :, :6] = _FOUR_PLACES[index]
    text[:, :, 6] = ord(",")
    text[:, -1, 6] = ord("\n")
    return text.tobytes().decode("ascii").splitlines()


def _savetxt_rows(scores: np.ndarray) -> list[str]:
    cells = io.StringIO()
    np.savetxt(cells, scores, fmt="%.4f", delimiter=",")
    return cells.getvalue().splitlines()


def _iso_ticks(ts: np.ndarray) -> list[str]:
    """``_iso`` of each tick time; whole seconds (the usual tick) formatted by numpy at once, the same text."""
    whole = bool(np.all(np.isfinite(ts))) and bool(np.all(ts == np.floor(ts)))
    if ts.size and whole and float(np.abs(ts).max()) < 1e11:
        return [f"{t}Z" for t in np.datetime_as_string(ts.astype(np.int64).astype("datetime64[s]"), unit="ms")]
    return [_iso(t) for t in ts]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


@dataclass
class ReplayTrace:
    """Per tick what the report plots; per-tag scores only when they fit in MAX_TRACE_CELLS."""

    ticks: np.ndarray  # (n,) tick start times
    firing: np.ndarray  # (n,) alerts firing after the tick
    worst: np.ndarray  # (n,) worst score of any tag and detector
    tag_worst: np.ndarray | None  # (n, tags) worst score per tag over detectors
    tag_names: list[str]
    transitions: list[Transition]
    source: ReplayOptions  # how to read the recording again (for the plotted signals)
    tick_s: float


@dataclass
class ReplayResult:
    summary: ReplaySummary
    trace: ReplayTrace
    truth: GroundTruth | None = None
    scorecard: Scorecard | None = None


def _truth_spec(labels: str | None, source: ReplayOptions) -> tuple[str | None, Path | None]:
    """(label column for the pipeline, labels file) for ``--labels``; raises LabelsError if neither fits."""
    columns = Recording(source, []).columns
    if labels is None:
        column = source.label_column or ("label" if "label" in columns else None)
        return column, None
    if labels in columns:
        return labels, None
    path = Path(labels)
    if path.is_file():
        return source.label_column, path
    raise LabelsError(
        f"{labels!r} is neither a column of the recording (it has {', '.join(columns)}) nor a labels file"
    )


def _load_truth(source: ReplayOptions, labels_file: Path | None, tick_s: float) -> GroundTruth | None:
    """Ground truth rows and steps, read apart from the pipeline (which carries only numbers)."""
    if labels_file is not None and labels_file.suffix.lower() not in (".yaml", ".yml"):
        return from_labels_csv(labels_file, tick_s)
    if labels_file is None and source.label_column is None:
        return None
    recording = Recording(source, [])
    ts_parts, label_parts = [], []
    for chunk in recording.chunks(1 << 16):
        ts_parts.append(chunk.ts)
        label_parts.append(chunk.label)
    ts = np.concatenate(ts_parts) if ts_parts else np.empty(0)
    if labels_file is not None:
        return from_scenario(labels_file, ts, tick_s)
    label = np.concatenate(label_parts) if label_parts else np.empty(0)
    attack = None
    if ATTACK_COLUMN in recording.columns:
        attack = read_text_column(Path(source.path), source.separator, source.header, ATTACK_COLUMN)
        if len(attack) != len(ts):
            raise LabelsError(f"{source.path}: {len(attack)} attack cells for {len(ts)} rows")
    where = f"column {source.label_column!r}" + (f" and {ATTACK_COLUMN!r}" if attack is not None else "")
    return GroundTruth(where, ts, label, steps_from_labels(ts, label, tick_s, attack))


def run_replay(cfg: PlantConfig, recording: Path, out: Path, *, progress: bool = True, **options: Any) -> ReplaySummary:
    """The recording through the pipeline; outputs in ``out``. Options as for :func:`replay`."""
    return replay(cfg, recording, out, progress=progress, **options).summary


def replay(
    cfg: PlantConfig,
    recording: Path,
    out: Path,
    *,
    progress: bool = True,
    labels: str | None = None,
    grace_s: float | None = None,
    train_rows: int = 0,
    report: Path | None = None,
    **format_options: Any,
) -> ReplayResult:
    """Replay, score against the ground truth ``labels`` (see the module docstring), and report.

    ``grace_s`` defaults to :func:`default_grace_s`; the first ``train_rows`` rows of the ground
    truth are scored neither way (SKAB's leaderboard trains on the first 400 rows of each file).
    """
    tick_s = cfg.pipeline.tick_s
    try:
        probe = replay_config(cfg, recording, **format_options).sources[0]
        assert isinstance(probe, ReplayOptions)
        label_column, labels_file = _truth_spec(labels, probe)
        format_options["label_column"] = label_column
        cfg = replay_config(cfg, recording, **format_options)
        source = cfg.sources[0]
        assert isinstance(source, ReplayOptions)
        truth = _load_truth(source, labels_file, tick_s)
    except RecordingError as exc:
        raise ConfigError([("recording", str(exc))]) from None
    except LabelsError as exc:
        raise ConfigError([("labels", str(exc))]) from None
    summary, outputs = _run(cfg, source, recording, out, progress)
    summary.labels = truth.source if truth is not None else None
    ticks = np.concatenate(outputs.ticks) if outputs.ticks else np.empty(0)
    trace = ReplayTrace(
        ticks=ticks,
        firing=np.concatenate(outputs.firing) if outputs.firing else np.empty(0, dtype=np.int64),
        worst=np.concatenate(outputs.worst) if outputs.worst else np.empty(0, dtype=np.float32),
        tag_worst=np.concatenate(outputs.tag_worst) if outputs.tag_worst else None,
        tag_names=[t.name for t in cfg.tags],
        transitions=outputs.transitions,
        source=source,
        tick_s=tick_s,
    )
    scorecard = None
    if truth is not None:
        tick_label = truth.tick_labels(ticks, tick_s)
        if train_rows >= len(truth.ts) > 0:
            raise ConfigError([("train_rows", f"{train_rows} leaves none of the {len(truth.ts)} labelled rows")])
        score_from = float(truth.ts[train_rows]) if train_rows > 0 else None
        scorecard = score_run(
            truth.steps,
            alert_episodes(outputs.transitions),
            ticks,
            tick_label,
            trace.firing > 0,
            tick_s=tick_s,
            grace_s=default_grace_s(tick_s) if grace_s is None else grace_s,
            score_from=score_from,
            rows=(truth.ts, truth.label),
        )
        summary.labelled_ticks = scorecard.labelled
        summary.pointwise = scorecard.pointwise
        summary.scoring = scorecard.as_dict()
    (out / "summary.json").write_text(json.dumps(summary.__dict__, indent=2, default=float) + "\n", encoding="utf-8")
    result = ReplayResult(summary, trace, truth, scorecard)
    if report is not None:
        from collector.report import write_report

        write_report(report, result)
    return result


def _run(
    cfg: PlantConfig, source: ReplayOptions, recording: Path, out: Path, progress: bool
) -> tuple[ReplaySummary, _Outputs]:
    try:
        total_rows = Recording(source, [t.source_key for t in source.tags]).count_rows()
    except RecordingError as exc:
        raise ConfigError([("recording", str(exc))]) from None
    out.mkdir(parents=True, exist_ok=True)
    summary = ReplaySummary(recording=str(recording), tags=len(cfg.tags))
    journal_path = out / "alerts.jsonl"
    journal_path.unlink(missing_ok=True)
    bar = Progress(total_rows, enabled=progress)
    started = time.perf_counter()
    with AlertJournal(journal_path) as journal:
        runner = Runner(cfg, journal, realtime=False)
        receiver = runner.receivers[0]
        assert isinstance(receiver, ReplayReceiver)
        keep = total_rows * max(1, len(cfg.tags)) <= MAX_TRACE_CELLS
        outputs = _Outputs(out, runner, summary, keep_tag_scores=keep)

        def on_frame(result: FrameResult) -> None:
            outputs.on_frame(result)
            bar.update(receiver.rows_sent)

        runner.on_frame = on_frame
        try:
            asyncio.run(runner.run(asyncio.Event(), until_finished=True))
        finally:
            outputs.close()
            bar.close()
        if receiver.status.errors.get("recording"):
            raise ConfigError([("recording", "could not be read; see the log")])
    summary.seconds = time.perf_counter() - started
    summary.rows = receiver.rows_sent
    summary.ticks = runner.pipeline.stats.ticks
    summary.transitions = dict(runner.pipeline.alerts.transitions)
    summary.malformed_cells = receiver.status.errors.get("malformed", 0)
    summary.non_finite = runner.pipeline.stats.non_finite
    if outputs.alarm:
        summary.labelled_ticks, summary.pointwise = pointwise(
            np.concatenate(outputs.alarm), np.concatenate(outputs.labels)
        )
    return summary, outputs
