"""The spine: sample batches in; frames, scores and alert transitions out.

Live and replay share this class and nothing here reads a clock: the caller
passes ``now`` (used only to close the ticks of live sources, which promise no
watermark). Journal writes, snapshots and output files belong to the caller,
so the pipeline itself stays a pure function of its input.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

from collector.alerts import AlertBook, Transition
from collector.config import PlantConfig
from collector.detection import build_bank
from collector.frames import Frame, FrameAssembler
from collector.samples import Quality, SampleBatch
from collector.state import name_rows

log = logging.getLogger("plantwatch.pipeline")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    scores: np.ndarray  # (ticks, detectors, tags) float32
    transitions: list[Transition]
    firing: np.ndarray  # (ticks,) alerts firing after each tick


@dataclass(frozen=True)
class PlantView:
    """What the exporter shows: copies made once per frame, swapped in by reference."""

    tick_ts: float
    value: np.ndarray  # last value seen per tag
    quality: np.ndarray  # its quality
    scores: np.ndarray  # (detectors, tags) at the last tick
    alert_state: np.ndarray  # (detectors, tags) 0 ok, 1 pending, 2 firing
    firing: dict[str, int]
    warm: dict[str, int]


@dataclass
class PipelineStats:
    samples: int = 0
    non_finite: int = 0
    ticks: int = 0
    latency_buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64))
    latency_sum: float = 0.0
    latency_count: int = 0


class Pipeline:
    def __init__(self, cfg: PlantConfig, live_sources: list[bool]) -> None:
        self.cfg = cfg
        self.tag_names = [t.name for t in cfg.tags]
        self.bank = build_bank(cfg)
        self._tag_index = {name: j for j, name in enumerate(self.tag_names)}
        self._detector_index = {name: d for d, name in enumerate(self.bank.names)}
        self._explain_failed: set[int] = set()  # detectors whose explain raised (logged once each)
        a = cfg.alerting
        self.alerts = AlertBook(
            self.bank.names,
            self.tag_names,
            [(s.name, s.threshold) for s in a.severities],
            a.hysteresis,
            a.pending_s,
            a.clear_s,
        )
        self.assembler = FrameAssembler(len(self.tag_names), cfg.pipeline.tick_s)
        self.live = list(live_sources)
        self.watermarks = [-math.inf] * len(live_sources)
        self.finished = [False] * len(live_sources)
        self.stats = PipelineStats()
        n = len(self.tag_names)
        self._last_value = np.full(n, np.nan)
        self._last_quality = np.zeros(n, dtype=np.uint8)
        self.view = self._make_view(math.nan, np.zeros((len(self.bank.names), n), dtype=np.float32))

    # -- input ---------------------------------------------------------------------------------
    def feed(self, batch: SampleBatch) -> None:
        """Take a batch from the queue. A non-finite value is a data-quality event, not a crash."""
        if len(batch):
            bad = ~np.isfinite(batch.value)
            if bad.any():
                self.stats.non_finite += int(bad.sum())
                batch.quality[bad] = Quality.BAD
            self.stats.samples += len(batch)
            self.assembler.add(batch)
        if batch.watermark is not None:
            src = batch.source
            self.watermarks[src] = max(self.watermarks[src], batch.watermark)
            if math.isinf(batch.watermark) and batch.watermark > 0:
                self.finished[src] = True

    @property
    def all_finished(self) -> bool:
        return all(self.finished)

    def watermark(self, now: float) -> float:
        """Time before which every source has delivered; live sources follow the wall clock."""
        lateness = self.cfg.pipeline.lateness_s
        marks = [
            math.inf if done else (now - lateness if live else mark)
            for live, mark, done in zip(self.live, self.watermarks, self.finished, strict=True)
        ]
        return min(marks) if marks else math.inf

    # -- processing ----------------------------------------------------------------------------
    def advance(self, now: float) -> FrameResult | None:
        frame = self.assembler.close(self.watermark(now))
        if frame is None:
            return None
        scores = self.bank.run(frame.X, frame.ts, frame.valid, frame.Q)
        transitions, firing = self.alerts.update(frame.ts, scores)
        if transitions:
            transitions = self._explained(frame.ts, scores, transitions)
        self._observe(frame, now)
        self.view = self._make_view(float(frame.ts[-1]), scores[-1])
        return FrameResult(frame, scores, transitions, firing)

    def _explained(self, ts: np.ndarray, scores: np.ndarray, transitions: list[Transition]) -> list[Transition]:
        """Each firing or escalated transition with its detector's reason, asked once per (detector, tick).

        Only alerts that start or rise are explained (a handful per block), so the cost stays off the hot
        path; a resolved alert needs no reason.
        """
        wanted: dict[tuple[int, int], list[int]] = {}
        for k, t in enumerate(transitions):
            if t.event in ("firing", "escalated"):
                key = (self._detector_index[t.detector], int(np.searchsorted(ts, t.ts)))
                wanted.setdefault(key, []).append(k)
        if not wanted:
            return transitions
        out = list(transitions)
        for (d, row), ks in wanted.items():
            tags = np.array([self._tag_index[transitions[k].tag] for k in ks], dtype=np.intp)
            try:
                reasons = self.bank.explain(d, row, tags, scores[row, d], self.tag_names)
            except Exception:  # a reason is a courtesy: a detector's bug there must not stop detection
                if d not in self._explain_failed:
                    self._explain_failed.add(d)
                    log.exception("detector could not explain an alert", extra={"detector": self.bank.names[d]})
                continue
            for k, reason in zip(ks, reasons, strict=True):
                if reason is not None:
                    out[k] = replace(transitions[k], reason=reason)
        return out

    def _observe(self, frame: Frame, now: float) -> None:
        self.stats.ticks += len(frame)
        present = frame.Q != Quality.NONE
        has = present.any(axis=0)
        if has.any():
            last_row = len(frame) - 1 - np.argmax(present[::-1], axis=0)
            cols = np.flatnonzero(has)
            self._last_value[cols] = frame.X[last_row[cols], cols]
            self._last_quality[cols] = frame.Q[last_row[cols], cols]
        waited = now - frame.first_recv[np.isfinite(frame.first_recv)]
        if waited.size:
            idx = np.searchsorted(LATENCY_BUCKETS, waited, side="left")
            self.stats.latency_buckets += np.bincount(idx, minlength=len(LATENCY_BUCKETS) + 1)
            self.stats.latency_sum += float(waited.sum())
            self.stats.latency_count += int(waited.size)

    def _make_view(self, tick_ts: float, scores: np.ndarray) -> PlantView:
        return PlantView(
            tick_ts=tick_ts,
            value=self._last_value.copy(),
            quality=self._last_quality.copy(),
            scores=np.array(scores, copy=True),
            alert_state=self.alerts.state.copy(),
            firing=self.alerts.firing_by_severity(),
            warm=self.bank.warm_tags(),
        )

    # -- state ---------------------------------------------------------------------------------
    @property
    def last_tick_ts(self) -> float:
        nt = self.assembler.next_tick
        return math.nan if nt is None else (nt - 1) * self.cfg.pipeline.tick_s

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        arrays = {**self.bank.state(), **self.alerts.state_arrays()}
        meta = {
            "site": self.cfg.site,
            "tags": self.tag_names,
            "detectors": list(self.bank.names),
            "last_tick_ts": self.last_tick_ts,
        }
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, object]) -> None:
        """Resume from a snapshot; tags and detectors are matched by name, new ones start cold."""
        tag_rows = name_rows(self.tag_names, list(meta.get("tags", [])))  # type: ignore[arg-type]
        det_rows = name_rows(list(self.bank.names), list(meta.get("detectors", [])))  # type: ignore[arg-type]
        self.bank.load_state(arrays, tag_rows)
        if all(f"alerts.{f}" in arrays for f in AlertBook.state_fields):
            self.alerts.load_state(arrays, det_rows, tag_rows)
        last = meta.get("last_tick_ts")
        if isinstance(last, int | float) and math.isfinite(last):
            self.assembler.resume_after(float(last))
        self.view = self._make_view(self.view.tick_ts, self.view.scores)
