"""Flatline: a live, noisy measurement that stops moving.

A frozen sensor, a PLC that keeps serving its last value, or an attacker
holding a reading still. The score reaches 0.5 after ``after_s`` seconds
without a change larger than ``tolerance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import (
    BLOCK_PATH_MAX_TAGS,
    Detector,
    DetectorParams,
    TagLimits,
    carried,
    last_valid,
    to_score,
    uniform,
)


class FlatlineParams(DetectorParams):
    after_s: Annotated[float, Field(gt=0, description="Seconds unchanged at which the score is 0.5.")] = 60.0
    tolerance: Annotated[float, Field(ge=0, description="Changes this small count as unchanged.")] = 0.0


class FlatlineDetector(Detector):
    block_path_max_tags: ClassVar[int | None] = BLOCK_PATH_MAX_TAGS
    name: ClassVar[str] = "flatline"
    Params: ClassVar[type[DetectorParams]] = FlatlineParams
    state_fields: ClassVar[tuple[str, ...]] = ("held_x", "held_since")
    tracking_fields: ClassVar[tuple[str, ...]] = ("held_x", "held_since")
    fault: ClassVar[str] = "freeze"

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        n = self.n_tags
        self._inv_after = uniform(1.0 / np.asarray(self.params["after_s"], dtype=np.float64))
        self.tolerance = np.asarray(self.params["tolerance"], dtype=np.float64)
        self._tolerance = uniform(self.tolerance)
        # No tolerance anywhere (the default): "unchanged" is plain equality of finite values.
        self._exact = isinstance(self._tolerance, float) and self._tolerance == 0.0
        self.held_x = np.full(n, np.nan)
        self.held_since = np.full(n, np.nan)
        self._same: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _unchanged(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        cached = self._same
        if cached is not None and cached[0] is x and cached[1] is valid:  # score() saw this very tick
            return cached[2]
        if self._exact:  # |x - held| <= 0 holds exactly when x == held, for a finite x
            same = np.equal(x, self.held_x)
            same &= valid
            same &= np.isfinite(x)
            return same
        with np.errstate(invalid="ignore"):
            return valid & (np.abs(x - self.held_x) <= self._tolerance)

    def _forget_caches(self) -> None:
        self._same = None
        super()._forget_caches()

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """A whole block at once, where "unchanged" is plain equality (no tolerance, the default).

        Then the held value before a tick equals (compares equal to) the last valid sample before
        it, and the hold starts at the last tick whose sample moved: both carried along the block.
        With a tolerance, whether a sample moved depends on which earlier sample is held, so that
        case goes tick by tick.
        """
        if not self._exact:
            return self._run_ticks(X, ts, valid, protect_threshold)
        n = X.shape[0]
        if n == 0:
            return np.zeros(X.shape)
        previous = carried(self.held_x, X, last_valid(valid))  # compares equal to held_x after each tick
        held_before = np.concatenate([self.held_x[None, :], previous[:-1]], axis=0)
        same = np.equal(X, held_before)
        same &= valid
        same &= np.isfinite(X)
        moved = valid & ~same
        moved_at = last_valid(moved)
        since = carried(self.held_since, np.broadcast_to(ts[:, None], X.shape), moved_at)
        held = same & self.enabled
        out = np.zeros(X.shape, dtype=np.float64)
        rows = np.flatnonzero(held.any(axis=1))
        if rows.size:
            since_before = np.concatenate([self.held_since[None, :], since[:-1]], axis=0)[rows]
            stat = np.subtract(ts[rows, None], since_before)
            stat *= self._inv_after
            stat[~held[rows]] = 0.0
            out[rows] = to_score(stat, out=stat)
        self.held_x = carried(self.held_x, X, moved_at)[-1].copy()  # the very bits of the last sample that moved
        self.held_since = since[-1].copy()
        self._same = None
        return out

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        same = self._unchanged(x, valid)
        # Kept for update() of the same tick: it needs the same mask, and held_x has not moved.
        self._same = (x, valid, same)
        held = same & self.enabled
        if not held.any():  # the usual tick: every live tag moved
            return np.zeros(self.n_tags)
        stat = np.subtract(ts, self.held_since)
        stat *= self._inv_after
        stat[~held] = 0.0
        return to_score(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        moved = valid & ~self._unchanged(x, valid)
        self._same = None  # held_x moves now
        if moved.all():  # the usual tick: every tag moved
            np.copyto(self.held_x, x)
            self.held_since.fill(ts)
        else:
            np.copyto(self.held_x, x, where=moved)
            np.copyto(self.held_since, ts, where=moved)
