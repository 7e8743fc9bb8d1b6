"""EWMA z-score: how many learned standard deviations a sample sits from its recent mean.

Catches steps and spikes against the tag's own behaviour, for tags whose
configured range is too wide to notice them.
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


class EwmaParams(DetectorParams):
    alpha: Annotated[float, Field(gt=0, le=1, description="Weight of each new sample in the baseline.")] = 0.02
    z_limit: Annotated[float, Field(gt=0, description="z at which the score reaches 0.5.")] = 5.0
    warmup: Annotated[int, Field(ge=1, description="Samples learned before the tag is scored.")] = 60
    min_std: Annotated[float, Field(ge=0, description="Floor of the learned standard deviation.")] = 0.0


class EwmaDetector(SpeculativeBlocks, LearnedBaseline, Detector):
    name: ClassVar[str] = "ewma"
    Params: ClassVar[type[DetectorParams]] = EwmaParams
    state_fields: ClassVar[tuple[str, ...]] = ("mean", "var", "count")
    fault: ClassVar[str] = "step"

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        n = self.n_tags
        self.alpha = np.asarray(self.params["alpha"], dtype=np.float64)
        self.warmup = np.asarray(self.params["warmup"], dtype=np.float64)
        floor = scale_floor(limits, np.asarray(self.params["min_std"], dtype=np.float64))
        self._neg_inv_limit = uniform(-1.0 / np.asarray(self.params["z_limit"], dtype=np.float64))
        self._var_floor = uniform(floor * floor)
        self.mean = np.zeros(n)
        self.var = np.zeros(n)
        self.count = np.zeros(n)

    def _speculate(
        self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, threshold: float, held_out: np.ndarray
    ) -> np.ndarray:
        learn = valid & self.enabled
        M, V, C, D = ewma_path(self.mean, self.var, self.count, self.alpha, X, learn & ~held_out)
        with np.errstate(invalid="ignore"):
            sd = np.maximum(V[:-1], self._var_floor)
            stat = np.divide(D, np.sqrt(sd, out=sd), out=sd)
            np.abs(stat, out=stat)
            stat *= self._neg_inv_limit
            stat[~(valid & self.enabled & (C[:-1] >= self.warmup))] = 0.0
        scores = to_score_negated(stat, out=stat)
        done = guess_was_wrong(learn, held_out, scores, threshold)
        np.copyto(self.mean, M[done])
        np.copyto(self.var, V[done])
        np.copyto(self.count, C[done])
        self._take_residual(X)  # forget a residual kept by an earlier score()
        return scores[:done]

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            diff = np.subtract(x, self.mean)
            self._keep_residual(x, diff)
            sd = np.maximum(self.var, self._var_floor)
            # |diff| / sd, computed as |diff / sd| (the same bits, as sd > 0) in sd's buffer.
            stat = np.divide(diff, np.sqrt(sd, out=sd), out=sd)
            np.abs(stat, out=stat)
            stat *= self._neg_inv_limit  # the statistic, negated
            scored = valid & self.warm()
            if not scored.all():
                stat[~scored] = 0.0
        return to_score_negated(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        self._learn_baseline(x, learn)
