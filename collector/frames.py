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


@dataclass
class _Pending:
    """Samples kept for ticks not yet closed, in arrival order, as whole arrays.

    Nothing is laid out per tick until the tick closes: a replay batch holds thousands of
    ticks and a live one a few samples of one tick, and both cost only their samples here.
    """

    tick: np.ndarray  # (n,) int64
    tag: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    recv: np.ndarray
    label: np.ndarray  # NaN when unknown

    def __len__(self) -> int:
        return int(self.tick.shape[0])

    def take(self, keep: np.ndarray) -> _Pending:
        return _Pending(*(a[keep] for a in (self.tick, self.tag, self.value, self.quality, self.recv, self.label)))

    @staticmethod
    def join(parts: list[_Pending]) -> _Pending:
        if len(parts) == 1:
            return parts[0]
        fields = zip(*((p.tick, p.tag, p.value, p.quality, p.recv, p.label) for p in parts), strict=True)
        return _Pending(*(np.concatenate(f) for f in fields))


def _last_per_key(keys: np.ndarray) -> np.ndarray:
    """Index of the last occurrence of each distinct key."""
    _, first_from_end = np.unique(keys[::-1], return_index=True)
    return keys.shape[0] - 1 - first_from_end


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
        self._pending: list[_Pending] = []  # samples of open ticks, in arrival order

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
        if not keep.any():
            return
        label = batch.label if batch.label is not None else np.full(len(batch), np.nan)
        kept = _Pending(ticks, batch.tag, batch.value, batch.quality, batch.recv_ts, label)
        self._pending.append(kept if keep.all() else kept.take(keep))

    def close(self, watermark: float) -> Frame | None:
        """Close every tick that ends at or before ``watermark``; None if none does."""
        if self.next_tick is None or (not math.isfinite(watermark) and not self._pending):
            return None
        pending = _Pending.join(self._pending) if self._pending else None
        if math.isfinite(watermark):
            end = math.floor(watermark / self.tick_s)  # ticks below this index are complete
        else:
            assert pending is not None
            end = int(pending.tick.max()) + 1  # end of every stream: close all that is open
        if end <= self.next_tick:
            return None
        closing = None
        self._pending = []
        if pending is not None:
            now = pending.tick < end
            closing = pending if now.all() else pending.take(now)
            if not now.all():
                self._pending = [pending.take(~now)]
        with_data = np.unique(closing.tick) if closing is not None else np.empty(0, dtype=np.int64)
        ticks = self._ticks_until(with_data, end)
        n = ticks.shape[0]
        X = np.full((n, self.n_tags), np.nan)
        Q = np.zeros((n, self.n_tags), dtype=np.uint8)
        label = np.full(n, np.nan)
        first_recv = np.full(n, np.nan)
        if closing is not None and len(closing):
            row = np.searchsorted(ticks, closing.tick)
            last = _last_per_key(row.astype(np.int64) * self.n_tags + closing.tag)  # the last sample wins
            X[row[last], closing.tag[last]] = closing.value[last]
            Q[row[last], closing.tag[last]] = closing.quality[last]
            known = np.flatnonzero(~np.isnan(closing.label))
            if known.size:
                last_known = known[_last_per_key(row[known])]
                label[row[last_known]] = closing.label[last_known]
            earliest = np.full(n, np.inf)
            np.minimum.at(earliest, row, closing.recv)
            heard = np.isfinite(earliest)
            first_recv[heard] = earliest[heard]
        self.next_tick = end
        return Frame(ticks * self.tick_s, X, Q, label, first_recv)

    def _ticks_until(self, with_data: np.ndarray, end: int) -> np.ndarray:
        """Tick indices to emit from next_tick up to ``end``: every tick with data (``with_data``,
        sorted, all below ``end``), and the empty ticks between them, but at most MAX_GAP_TICKS of
        any one silence (its start, so that staleness shows when it begins); the rest of a long
        silence is skipped."""
        assert self.next_tick is not None
        targets = np.append(with_data, end)  # each silence runs up to a tick with data, or to the end
        starts = np.empty_like(targets)
        starts[0] = self.next_tick
        starts[1:] = with_data + 1
        silence = targets - starts
        self.gaps_skipped += int(np.count_nonzero(silence > MAX_GAP_TICKS))
        empties = np.minimum(silence, MAX_GAP_TICKS)
        seg = np.repeat(np.arange(empties.shape[0]), empties)
        offset = np.arange(seg.shape[0], dtype=np.int64) - np.repeat(np.cumsum(empties) - empties, empties)
        return np.sort(np.concatenate([starts[seg] + offset, with_data]))

    @property
    def open_ticks(self) -> int:
        return int(np.unique(np.concatenate([p.tick for p in self._pending])).shape[0]) if self._pending else 0
