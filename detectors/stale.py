"""Stale: a tag that stopped reporting good values.

A controller gone silent, a cut link, or a denial of service. Unlike the
other detectors it scores the ticks *without* a sample: the score reaches 0.5
``after_s`` seconds after the last good value (or after the first tick, for a
tag that never reported).
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


class StaleParams(DetectorParams):
    after_s: Annotated[float, Field(gt=0, description="Seconds without a good value at which the score is 0.5.")] = 30.0


class StaleDetector(Detector):
    block_path_max_tags: ClassVar[int | None] = BLOCK_PATH_MAX_TAGS
    name: ClassVar[str] = "stale"
    Params: ClassVar[type[DetectorParams]] = StaleParams
    state_fields: ClassVar[tuple[str, ...]] = ("last_seen",)
    tracking_fields: ClassVar[tuple[str, ...]] = ("last_seen",)
    fault: ClassVar[str] = "dropout"
    applies_to_discrete: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        self._inv_after = uniform(1.0 / np.asarray(self.params["after_s"], dtype=np.float64))
        self.last_seen = np.full(self.n_tags, np.nan)
        self._first_tick = True

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """A whole block at once: the only state is when each tag last reported, carried along the block."""
        n = X.shape[0]
        if n == 0:
            return np.zeros(X.shape)
        before = self.last_seen.copy()
        if self._first_tick:  # the first update stamps the tags that never reported with its tick
            np.copyto(before, ts[0], where=np.isnan(before))
        # last_seen as it stands before each tick: the tick of the last valid sample, else before.
        seen = last_valid(valid)
        since = carried(before, np.broadcast_to(ts[:, None], X.shape), seen)
        quiet = valid | ~self.enabled
        out = np.zeros(X.shape, dtype=np.float64)
        rows = np.flatnonzero(~quiet.all(axis=1))
        if rows.size:
            last = np.concatenate([self.last_seen[None, :], since[:-1]], axis=0)[rows]
            stat = np.subtract(ts[rows, None], last)
            stat *= self._inv_after
            stat[quiet[rows]] = 0.0
            if self._first_tick and rows[0] == 0:  # last_seen is NaN until the first update
                np.nan_to_num(stat[0], copy=False, nan=0.0)
            out[rows] = to_score(stat, out=stat)
        self.last_seen = since[-1].copy()
        self._first_tick = False
        return out

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        quiet = valid | ~self.enabled
        if quiet.all():  # the usual tick: every tag reported, nothing to score
            return np.zeros(self.n_tags)
        stat = np.subtract(ts, self.last_seen)
        stat *= self._inv_after
        stat[quiet] = 0.0
        if self._first_tick:  # last_seen is NaN until the first update
            np.nan_to_num(stat, copy=False, nan=0.0)
        return to_score(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        if self._first_tick:
            np.copyto(self.last_seen, ts, where=np.isnan(self.last_seen))
            self._first_tick = False
        if valid.all():
            self.last_seen.fill(ts)
        else:
            np.copyto(self.last_seen, ts, where=valid)
