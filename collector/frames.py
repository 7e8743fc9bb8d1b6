"""From a stream of samples to frames: ticks x tags, NaN where a tag said nothing.

Ticks are fixed windows of ``tick_s`` seconds on the samples' own timestamps,
aligned to the epoch. A tick stays open until the watermark (the time before
which no more samples can come) passes its end; then it is closed for good,
and a sample that arrives for it later is counted as late and dropped. Within
a tick the last sample of a tag wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from collector.samples import Quality, SampleBatch

MAX_GAP_TICKS = 3600  # empty ticks emitted across a silence at most; longer gaps are skipped


@dataclass(frozen=True)
class Frame:
    """A block of consecutive closed ticks."""

    ts: np.ndarray  # (n,) tick start, seconds since the epoch
    X: np.ndarray  # (n, tags) float64, NaN = no sample
    Q: np.ndarray  # (n, tags) uint8 Quality of the sample kept
    label: np.ndarray  # (n,) ground truth from a recording, NaN when unknown
    first_recv: np.ndarray  # (n,) wall clock of the tick's earliest sample, NaN for an empty tick

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """Samples fit to score and learn from: a finite value of good quality."""
        return (self.Q == Quality.GOOD) & np.isfinite(self.X)


class _OpenTick:
    __slots__ = ("Q", "X", "first_recv", "label")

    def __init__(self, n_tags: int) -> None:
        self.X = np.full(n_tags, np.nan)
        self.Q = np.zeros(n_tags, dtype=np.uint8)
        self.label = math.nan
        self.first_recv = math.inf


class FrameAssembler:
    def __init__(self, n_tags: int, tick_s: float, max_open_ticks: int = 100_000) -> None:
        self.n_tags = n_tags
        self.tick_s = tick_s
        self.max_open_ticks = max_open_ticks
        self.next_tick: int | None = None  # index of the first tick not yet closed
        self.floor_tick: int | None = None  # after a restore: ticks below this were already scored
        self.late = 0
        self.too_early = 0
        self.unknown_tag = 0
        self.gaps_skipped = 0
        self._open: dict[int, _OpenTick] = {}

    def resume_after(self, last_tick_ts: float) -> None:
        """After a restart: never score a tick again that the snapshot already covered."""
        self.floor_tick = math.floor(last_tick_ts / self.tick_s) + 1

    def add(self, batch: SampleBatch) -> None:
        if not len(batch):
            return
        ticks = np.floor(batch.ts / self.tick_s).astype(np.int64)
        keep = (batch.tag >= 0) & (batch.tag < self.n_tags)
        self.unknown_tag += int(np.count_nonzero(~keep))
        if self.next_tick is None:
            start = int(ticks[keep].min()) if keep.any() else None
            if start is not None and self.floor_tick is not None:
                start = max(start, self.floor_tick)
            self.next_tick = start
        if self.next_tick is None:
            return
        on_time = ticks >= self.next_tick
        self.late += int(np.count_nonzero(keep & ~on_time))
        # A sample at or behind its source's watermark is never "too early"; the horizon
        # only guards against a live source whose clock runs far ahead.
        horizon = self.next_tick + self.max_open_ticks
        if batch.watermark is not None and math.isfinite(batch.watermark):
            horizon = max(horizon, math.floor(batch.watermark / self.tick_s) + 1)
        in_horizon = ticks < horizon
        self.too_early += int(np.count_nonzero(keep & on_time & ~in_horizon))
        keep &= on_time & in_horizon
        if not keep.all():
            idx = np.flatnonzero(keep)
            ticks = ticks[idx]
            tag, value, quality, recv = batch.tag[idx], batch.value[idx], batch.quality[idx], batch.recv_ts[idx]
            label = batch.label[idx] if batch.label is not None else None
        else:
            tag, value, quality, recv, label = batch.tag, batch.value, batch.quality, batch.recv_ts, batch.label
        if not ticks.size:
            return
        # Group by tick (the batch is usually one or a few ticks); the last sample of a tag wins.
        order = np.argsort(ticks, kind="stable")
        bounds = np.flatnonzero(np.diff(ticks[order])) + 1
        for group in np.split(order, bounds):
            tick = int(ticks[group[0]])
            slot = self._open.get(tick)
            if slot is None:
                slot = self._open[tick] = _OpenTick(self.n_tags)
            rev = group[::-1]
            tags_rev = tag[rev]
            _, first = np.unique(tags_rev, return_index=True)
            last = rev[first]
            slot.X[tag[last]] = value[last]
            slot.Q[tag[last]] = quality[last]
            if label is not None:
                known = label[group]
                known = known[~np.isnan(known)]
                if known.size:
                    slot.label = float(known[-1])
            slot.first_recv = min(slot.first_recv, float(recv[group].min()))

    def close(self, watermark: float) -> Frame | None:
        """Close every tick that ends at or before ``watermark``; None if none does."""
        if self.next_tick is None or (not math.isfinite(watermark) and not self._open):
            return None
        if math.isfinite(watermark):
            end = math.floor(watermark / self.tick_s)  # ticks below this index are complete
        else:
            end = max(self._open) + 1  # end of every stream: close all that is open
        if end <= self.next_tick:
            return None
        ticks = self._ticks_until(end)
        n = ticks.shape[0]
        X = np.full((n, self.n_tags), np.nan)
        Q = np.zeros((n, self.n_tags), dtype=np.uint8)
        label = np.full(n, np.nan)
        first_recv = np.full(n, np.nan)
        row_of = {int(t): i for i, t in enumerate(ticks)}
        for tick in [t for t in self._open if t < end]:
            slot = self._open.pop(tick)
            i = row_of[tick]
            X[i], Q[i], label[i] = slot.X, slot.Q, slot.label
            first_recv[i] = slot.first_recv
        self.next_tick = end
        return Frame(ticks * self.tick_s, X, Q, label, first_recv)

    def _ticks_until(self, end: int) -> np.ndarray:
        """Tick indices to emit from next_tick up to ``end``: every tick with data, and the
        empty ticks between them, but at most MAX_GAP_TICKS of any one silence (its start,
        so that staleness shows when it begins); the rest of a long silence is skipped."""
        parts = []
        cur = self.next_tick
        assert cur is not None
        for tick in [*sorted(t for t in self._open if t < end), end]:
            if tick - cur > MAX_GAP_TICKS:
                parts.append(np.arange(cur, cur + MAX_GAP_TICKS, dtype=np.int64))
                self.gaps_skipped += 1
                cur = tick
            stop = min(tick + 1, end)
            if stop > cur:
                parts.append(np.arange(cur, stop, dtype=np.int64))
                cur = stop
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    @property
    def open_ticks(self) -> int:
        return len(self._open)
