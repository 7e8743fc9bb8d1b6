"""Rate of change: a value that moves faster than the process physically can.

A tank level cannot jump a metre in a second; a spoofed or broken sensor can.
The limit is ``max_rate`` (units per second) where the engineer knows it, else
``k`` times the typical rate learned from the tag itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import (
    Detector,
    DetectorParams,
    SettlingWeight,
    SpeculativeBlocks,
    TagLimits,
    WarmupByCount,
    carried,
    guess_was_wrong,
    last_valid,
    scale_floor,
    to_score,
    uniform,
)


class RateParams(DetectorParams):
    max_rate: Annotated[
        float | None, Field(gt=0, description="Physical limit in units per second; learned when unset.")
    ] = None
    k: Annotated[float, Field(gt=0, description="Multiple of the learned mean rate that scores 0.5.")] = 10.0
    alpha: Annotated[float, Field(gt=0, le=1, description="Learning weight of the mean rate.")] = 0.02
    warmup: Annotated[int, Field(ge=1, description="Rates learned before the tag is scored.")] = 60


class RateDetector(SpeculativeBlocks, SettlingWeight, WarmupByCount, Detector):
    name: ClassVar[str] = "rate"
    Params: ClassVar[type[DetectorParams]] = RateParams
    state_fields: ClassVar[tuple[str, ...]] = ("prev_x", "prev_ts", "mean_rate", "count")
    tracking_fields: ClassVar[tuple[str, ...]] = ("prev_x", "prev_ts")
    fault: ClassVar[str] = "spike"

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        n = self.n_tags
        self.max_rate = np.asarray(self.params["max_rate"], dtype=np.float64)
        self.k = np.asarray(self.params["k"], dtype=np.float64)
        self.alpha = np.asarray(self.params["alpha"], dtype=np.float64)
        self.warmup = np.asarray(self.params["warmup"], dtype=np.float64)
        self._fixed = np.isfinite(self.max_rate)
        self._any_fixed = bool(self._fixed.any())
        self._floor = uniform(scale_floor(limits, np.zeros(n)))
        self._k = uniform(self.k)
        self.prev_x = np.full(n, np.nan)
        self.prev_ts = np.full(n, np.nan)
        self.mean_rate = np.zeros(n)
        self.count = np.zeros(n)
        self._rate = np.zeros(n)
        self._prev_ts_all: np.float64 | None = None  # the one value of prev_ts, when it has one

    def _forget_caches(self) -> None:
        self._prev_ts_all = None
        super()._forget_caches()

    def _speculate(
        self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, threshold: float, held_out: np.ndarray
    ) -> np.ndarray:
        n, n_tags = X.shape
        at = last_valid(valid)
        T = np.broadcast_to(ts[:, None], X.shape)
        after_x = carried(self.prev_x, X, at)  # the previous sample after each tick
        after_ts = carried(self.prev_ts, T, at)
        before_x = np.concatenate([self.prev_x[None, :], after_x[:-1]], axis=0)
        before_ts = np.concatenate([self.prev_ts[None, :], after_ts[:-1]], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.subtract(X, before_x)
            np.abs(rate, out=rate)
            dt = np.subtract(T, before_ts)
            rate /= np.maximum(dt, 1e-6, out=dt)
        finite = np.isfinite(rate)
        learn = valid & self.enabled & finite
        guess = learn & ~held_out
        # The mean rate before each tick and after the last: rounded at every step, so row by row.
        C = np.empty((n + 1, n_tags))
        C[0] = self.count
        np.cumsum(guess, axis=0, out=C[1:])
        C[1:] += self.count
        MR = np.empty((n + 1, n_tags))
        MR[0] = self.mean_rate
        with np.errstate(divide="ignore", invalid="ignore"):
            A = np.maximum(self.alpha, 1.0 / (C[:-1] + 1.0))
            every = guess.all(axis=1)
            skip = ~guess
            step = np.empty(n_tags)
            for i in range(n):
                np.subtract(rate[i], MR[i], out=step)
                step *= A[i]
                np.add(MR[i], step, out=MR[i + 1])
                if not every[i]:
                    np.copyto(MR[i + 1], MR[i], where=skip[i])
            if self._any_fixed:
                limit = np.where(self._fixed, self.max_rate, self.k * MR[:-1])
            else:
                limit = self._k * MR[:-1]
            np.maximum(limit, self._floor, out=limit)
            stat = np.divide(rate, limit, out=limit)
        stat[~(valid & self.enabled & (C[:-1] >= self.warmup) & finite)] = 0.0
        scores = to_score(stat, out=stat)
        done = guess_was_wrong(learn, held_out, scores, threshold)
        np.copyto(self.mean_rate, MR[done])
        np.copyto(self.count, C[done])
        if done > 0:
            np.copyto(self.prev_x, after_x[done - 1])
            np.copyto(self.prev_ts, after_ts[done - 1])
            self._prev_ts_all = None  # a cache of one value of prev_ts: the general path gives the same bits
        return scores[:done]

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.subtract(x, self.prev_x)
            np.abs(rate, out=rate)
            if self._prev_ts_all is not None:  # the last tick was valid everywhere: one dt for all
                rate /= np.maximum(ts - self._prev_ts_all, 1e-6)
            else:
                dt = np.subtract(ts, self.prev_ts)
                rate /= np.maximum(dt, 1e-6, out=dt)
            self._rate = rate  # NaN where there is no previous valid sample
            if self._any_fixed:
                limit = np.where(self._fixed, self.max_rate, self.k * self.mean_rate)
            else:  # the usual case: every limit is learned
                limit = self._k * self.mean_rate
            np.maximum(limit, self._floor, out=limit)
            stat = np.divide(rate, limit, out=limit)
        stat[~(valid & self.warm() & np.isfinite(rate))] = 0.0
        return to_score(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        rate = self._rate
        learn = learn & self.enabled & np.isfinite(rate)
        a, _ = self.learning_weight()
        with np.errstate(invalid="ignore"):
            step = rate - self.mean_rate
            step *= a
        if learn.all():  # the usual tick: update in place (same numbers)
            self.mean_rate += step
            self.count += 1.0
        else:
            step += self.mean_rate
            np.copyto(self.mean_rate, step, where=learn)
            self.count += learn
        # The previous sample always moves on: a past spike must not keep scoring.
        if valid.all():
            np.copyto(self.prev_x, x)
            self.prev_ts.fill(ts)
            self._prev_ts_all = self.prev_ts[0] if self.n_tags else None
        else:
            np.copyto(self.prev_x, x, where=valid)
            np.copyto(self.prev_ts, ts, where=valid)
            self._prev_ts_all = None
