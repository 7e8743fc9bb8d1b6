"""Two-sided CUSUM on standardized residuals: the detector for slow drifts.

A drift kept under the noise never makes a large z-score, but its residuals
keep the same sign, and their sum grows. The baseline here learns far more
slowly than the EWMA z-score's, so that a stealthy ramp does not carry it
along; and, as everywhere, flagged samples are never learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import (
    Detector,
    DetectorParams,
    LearnedBaseline,
    SpeculativeBlocks,
    TagLimits,
    ewma_path,
    guess_was_wrong,
    scale_floor,
    to_score_negated,
    uniform,
)


class CusumParams(DetectorParams):
    """Off by default: a tag whose process legitimately swings (an inflow, a temperature
    following the weather) drifts by nature, and CUSUM would alarm on it. Turn it on
    for tags held at a setpoint, where any sustained drift is suspicious."""

    enabled: bool = False
    alpha: Annotated[float, Field(gt=0, le=1, description="Baseline learning weight; keep it small.")] = 0.002
    k: Annotated[float, Field(ge=0, description="Allowance: drift below k standard deviations is ignored.")] = 0.5
    h: Annotated[float, Field(gt=0, description="Decision interval: the sum at which the score is 0.5.")] = 12.0
    warmup: Annotated[int, Field(ge=1, description="Samples learned before the tag is scored.")] = 120
    min_std: Annotated[float, Field(ge=0, description="Floor of the learned standard deviation.")] = 0.0


class CusumDetector(SpeculativeBlocks, LearnedBaseline, Detector):
    name: ClassVar[str] = "cusum"
    Params: ClassVar[type[DetectorParams]] = CusumParams
    state_fields: ClassVar[tuple[str, ...]] = ("mean", "var", "count", "s_hi", "s_lo")
    tracking_fields: ClassVar[tuple[str, ...]] = ("s_hi", "s_lo")
    fault: ClassVar[str] = "drift"

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        n = self.n_tags
        self.alpha = np.asarray(self.params["alpha"], dtype=np.float64)
        self.k = np.asarray(self.params["k"], dtype=np.float64)
        self.warmup = np.asarray(self.params["warmup"], dtype=np.float64)
        self._k = uniform(self.k)
        self._neg_inv_h = uniform(-1.0 / np.asarray(self.params["h"], dtype=np.float64))
        floor = scale_floor(limits, np.asarray(self.params["min_std"], dtype=np.float64))
        self._var_floor = uniform(floor * floor)
        self.mean = np.zeros(n)
        self.var = np.zeros(n)
        self.count = np.zeros(n)
        self.s_hi = np.zeros(n)
        self.s_lo = np.zeros(n)
        self._next_hi = np.zeros(n)
        self._next_lo = np.zeros(n)

    def _speculate(
        self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, threshold: float, held_out: np.ndarray
    ) -> np.ndarray:
        learn = valid & self.enabled
        M, V, C, D = ewma_path(self.mean, self.var, self.count, self.alpha, X, learn & ~held_out)
        n, n_tags = X.shape
        active = valid & self.enabled & (C[:-1] >= self.warmup)
        # The sums after each tick: a clipped running sum, rounded at every step, so row by row.
        H = np.empty((n + 1, n_tags))
        L = np.empty((n + 1, n_tags))
        H[0], L[0] = self.s_hi, self.s_lo
        if active.any():
            with np.errstate(invalid="ignore"):
                sd = np.maximum(V[:-1], self._var_floor)
                R = np.divide(D, np.sqrt(sd, out=sd), out=sd)
            every = active.all(axis=1)
            idle = ~active
            for i in range(n):
                hi = np.add(H[i], R[i], out=H[i + 1])
                hi -= self._k
                np.maximum(hi, 0.0, out=hi)
                lo = np.subtract(L[i], R[i], out=L[i + 1])
                lo -= self._k
                np.maximum(lo, 0.0, out=lo)
                if not every[i]:
                    np.copyto(hi, H[i], where=idle[i])
                    np.copyto(lo, L[i], where=idle[i])
        else:  # nothing scored yet (or the detector is off everywhere): the sums stand
            H[1:], L[1:] = self.s_hi, self.s_lo
        stat = np.maximum(H[1:], L[1:])
        stat *= self._neg_inv_h
        scores = to_score_negated(stat, out=stat)
        done = guess_was_wrong(learn, held_out, scores, threshold)
        np.copyto(self.mean, M[done])
        np.copyto(self.var, V[done])
        np.copyto(self.count, C[done])
        self.s_hi, self.s_lo = H[done].copy(), L[done].copy()
        self._take_residual(X)  # forget a residual kept by an earlier score()
        return scores[:done]

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        active = valid & self.warm()
        with np.errstate(invalid="ignore"):
            diff = np.subtract(x, self.mean)
            self._keep_residual(x, diff)
            sd = np.maximum(self.var, self._var_floor)
            r = np.divide(diff, np.sqrt(sd, out=sd), out=sd)
            hi = self.s_hi + r
            hi -= self._k
            np.maximum(hi, 0.0, out=hi)
            lo = np.subtract(self.s_lo, r, out=r)  # r is not needed any more
            lo -= self._k
            np.maximum(lo, 0.0, out=lo)
        # Kept for update(): the sums move with every valid sample, flagged or not.
        if not active.all():
            np.copyto(hi, self.s_hi, where=~active)
            np.copyto(lo, self.s_lo, where=~active)
        self._next_hi, self._next_lo = hi, lo
        stat = np.maximum(hi, lo)
        stat *= self._neg_inv_h  # the statistic, negated
        return to_score_negated(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        self.s_hi = self._next_hi
        self.s_lo = self._next_lo
        self._learn_baseline(x, learn)
