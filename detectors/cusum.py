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
    TagLimits,
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


class CusumDetector(LearnedBaseline, Detector):
    name: ClassVar[str] = "cusum"
    Params: ClassVar[type[DetectorParams]] = CusumParams
    state_fields: ClassVar[tuple[str, ...]] = ("mean", "var", "count", "s_hi", "s_lo")
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
