"""The frame assembler against a model of its rules written the plain way, one tick at a time.

The assembler lays out whole batches with numpy (a replay batch holds thousands of ticks); the model
below keeps a dict of open ticks and walks them one by one, which is slow but easy to check by eye.
Hypothesis plays the same batches and watermarks into both: every frame and every counter must
agree to the bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import collector.frames as frames
from collector.frames import FrameAssembler
from collector.samples import Quality, SampleBatch

GAP = 6  # MAX_GAP_TICKS for these tests, so that long silences are reachable
N_TAGS = 4


class TickModel:
    """Open ticks in a dict; within a tick the last sample of a tag wins; a closed tick is final."""

    def __init__(self, n_tags: int, tick_s: float, max_open_ticks: int) -> None:
        self.n_tags, self.tick_s, self.max_open = n_tags, tick_s, max_open_ticks
        self.next_tick: int | None = None
        self.late = self.too_early = self.unknown_tag = self.gaps_skipped = 0
        self.open: dict[int, dict[str, object]] = {}

    def add(self, batch: SampleBatch) -> None:
        for i in range(len(batch)):
            tick = math.floor(batch.ts[i] / self.tick_s)
            tag = int(batch.tag[i])
            if not 0 <= tag < self.n_tags:
                self.unknown_tag += 1
                continue
            if self.next_tick is None:
                pairs = zip(batch.ts, batch.tag, strict=True)
                known = [math.floor(t / self.tick_s) for t, g in pairs if 0 <= g < self.n_tags]
                self.next_tick = min(known)
            horizon = self.next_tick + self.max_open
            if batch.watermark is not None and math.isfinite(batch.watermark):
                horizon = max(horizon, math.floor(batch.watermark / self.tick_s) + 1)
            if tick < self.next_tick:
                self.late += 1
                continue
            if tick >= horizon:
                self.too_early += 1
                continue
            slot = self.open.setdefault(tick, {"X": {}, "Q": {}, "label": math.nan, "recv": math.inf})
            slot["X"][tag] = float(batch.value[i])  # type: ignore[index]
            slot["Q"][tag] = int(batch.quality[i])  # type: ignore[index]
            if batch.label is not None and not math.isnan(batch.label[i]):
                slot["label"] = float(batch.label[i])
            slot["recv"] = min(slot["recv"], float(batch.recv_ts[i]))  # type: ignore[call-overload]

    def close(self, watermark: float) -> list[tuple[int, dict[str, object] | None]] | None:
        if self.next_tick is None or (not math.isfinite(watermark) and not self.open):
            return None
        end = math.floor(watermark / self.tick_s) if math.isfinite(watermark) else max(self.open) + 1
        if end <= self.next_tick:
            return None
        rows: list[tuple[int, dict[str, object] | None]] = []
        cur = self.next_tick
        for tick in sorted(t for t in self.open if t < end):
            if tick - cur > GAP:
                rows += [(t, None) for t in range(cur, cur + GAP)]
                self.gaps_skipped += 1
            else:
                rows += [(t, None) for t in range(cur, tick)]
            rows.append((tick, self.open.pop(tick)))
            cur = tick + 1
        if end - cur > GAP:
            rows += [(t, None) for t in range(cur, cur + GAP)]
            self.gaps_skipped += 1
        else:
            rows += [(t, None) for t in range(cur, end)]
        self.next_tick = end
        return rows


def assert_same(frame: frames.Frame | None, rows: list[tuple[int, dict[str, object] | None]] | None) -> None:
    assert (frame is None) == (rows is None)
    if frame is None or rows is None:
        return
    assert frame.ts.tolist() == [t * 1.0 for t, _ in rows]
    for i, (_, slot) in enumerate(rows):
        X = np.full(N_TAGS, np.nan)
        Q = np.zeros(N_TAGS, dtype=np.uint8)
        label, recv = math.nan, math.nan
        if slot is not None:
            for tag, v in slot["X"].items():  # type: ignore[attr-defined]
                X[tag] = v
            for tag, q in slot["Q"].items():  # type: ignore[attr-defined]
                Q[tag] = q
            label, recv = slot["label"], slot["recv"]
        assert frame.X[i].tobytes() == X.tobytes(), (i, frame.X[i], X)
        assert frame.Q[i].tolist() == Q.tolist()
        assert np.array_equal(frame.label[i], label, equal_nan=True)
        assert np.array_equal(frame.first_recv[i], recv, equal_nan=True)


samples = st.tuples(
    st.integers(-1, N_TAGS),  # a tag, or one the pipeline does not know
    st.floats(0.0, 40.0, allow_nan=False),  # sample time, s
    st.one_of(st.floats(-5.0, 5.0, width=32), st.just(math.nan)),
    st.sampled_from([Quality.GOOD, Quality.BAD, Quality.UNCERTAIN]),
    st.one_of(st.just(math.nan), st.sampled_from([0.0, 1.0])),  # ground-truth label
    st.floats(0.0, 100.0, allow_nan=False),  # receive time
)
steps = st.lists(
    st.tuples(st.lists(samples, max_size=12), st.one_of(st.floats(0.0, 45.0), st.just(math.inf))),
    min_size=1,
    max_size=8,
)


@pytest.fixture(autouse=True)
def short_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "MAX_GAP_TICKS", GAP)


@settings(max_examples=300, deadline=None)
@given(steps=steps, labelled=st.booleans(), max_open=st.sampled_from([3, 100]))
def test_the_assembler_agrees_with_the_tick_by_tick_model(
    steps: list[tuple[list[tuple[int, float, float, int, float, float]], float]], labelled: bool, max_open: int
) -> None:
    real = FrameAssembler(N_TAGS, 1.0, max_open_ticks=max_open)
    model = TickModel(N_TAGS, 1.0, max_open)
    for batch_samples, watermark in steps:
        cols = list(zip(*batch_samples, strict=True)) if batch_samples else [()] * 6
        batch = SampleBatch(
            source=0,
            tag=np.array(cols[0], dtype=np.int32),
            ts=np.array(cols[1], dtype=np.float64),
            value=np.array(cols[2], dtype=np.float64),
            quality=np.array(cols[3], dtype=np.uint8),
            label=np.array(cols[4], dtype=np.float64) if labelled else None,
            recv_ts=np.array(cols[5], dtype=np.float64),
            watermark=None,
        )
        real.add(batch)
        model.add(batch)
        assert real.open_ticks == len(model.open)
        assert_same(real.close(watermark), model.close(watermark))
        assert (real.late, real.too_early, real.unknown_tag, real.gaps_skipped) == (
            model.late,
            model.too_early,
            model.unknown_tag,
            model.gaps_skipped,
        )
