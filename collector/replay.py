"""``plantwatch replay``: a recording through the daemon's own pipeline, as fast as it goes.

The config's tags and detectors are used as they are; its sources are
replaced by one replay source reading RECORDING (format options from the
command line, else from the config's first replay source). Outputs in DIR:

- ``scores.csv``: per tick, the label (if any), the number of alerts firing,
  the worst score, and every (tag, detector) score;
- ``alerts.csv`` and ``alerts.jsonl``: the alert transitions, as the daemon journals them;
- ``summary.json``: counts, timings and, with labels, point-wise agreement.
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

from collector.config import ConfigError, PlantConfig
from collector.journal import AlertJournal
from collector.pipeline import FrameResult
from collector.receivers.replay import ReplayOptions, ReplayReceiver
from collector.receivers.replay.recording import Recording, RecordingError
from collector.runner import Runner

MAX_SCORE_COLUMNS = 5000  # beyond this, scores.csv holds the worst score per tag instead


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
    return cfg.model_copy(update={"sources": [source]})


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
                f"against labels (alarm = any alert firing, {self.labelled_ticks} labelled ticks): "
                f"precision {p['precision']:.3f}, recall {p['recall']:.3f}, F1 {p['f1']:.3f}, "
                f"FAR {p['far']:.1%}, MAR {p['mar']:.1%}"
            )
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
    def __init__(self, out: Path, runner: Runner, summary: ReplaySummary) -> None:
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
        self.alerts.writerow(["seq", "event", "timestamp", "time", "tag", "detector", "severity", "score", "peak"])
        self.alarm: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def on_frame(self, result: FrameResult) -> None:
        frame, scores = result.frame, result.scores
        worst = scores.max(axis=(1, 2))
        per_cell = scores.transpose(0, 2, 1).reshape(len(frame), -1) if self.full else scores.max(axis=1)
        times = [_iso(t) for t in frame.ts]
        cells = io.StringIO()
        np.savetxt(cells, per_cell, fmt="%.4f", delimiter=",")  # formatted in C, not per value in Python
        for i, numbers in enumerate(cells.getvalue().splitlines()):
            label = "" if math.isnan(frame.label[i]) else f"{frame.label[i]:g}"
            self._scores.write(
                f"{frame.ts[i]:.3f},{times[i]},{label},{int(result.firing[i])},{worst[i]:.4f},{numbers}\n"
            )
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
                ]
            )
            if t.event == "firing":
                self.summary.alerts_by_tag[t.tag] = self.summary.alerts_by_tag.get(t.tag, 0) + 1
        self.alarm.append(result.firing > 0)
        self.labels.append(frame.label)
        if math.isnan(self.summary.first_tick):
            self.summary.first_tick = float(frame.ts[0])
        self.summary.last_tick = float(frame.ts[-1])

    def close(self) -> None:
        self._scores.close()
        self._alerts.close()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pointwise(alarm: np.ndarray, label: np.ndarray) -> tuple[int, dict[str, float] | None]:
    """Point-wise agreement of alarms with labels; a label is known when it is 0 or positive."""
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


def run_replay(
    cfg: PlantConfig, recording: Path, out: Path, *, progress: bool = True, **format_options: Any
) -> ReplaySummary:
    cfg = replay_config(cfg, recording, **format_options)
    source = cfg.sources[0]
    assert isinstance(source, ReplayOptions)
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
        outputs = _Outputs(out, runner, summary)

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
    (out / "summary.json").write_text(json.dumps(summary.__dict__, indent=2, default=float) + "\n", encoding="utf-8")
    return summary
