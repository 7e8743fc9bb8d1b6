"""Command watch: a setpoint or an actuator state that changes too often.

An operator moves a setpoint a few times a shift and starts or stops a pump a
few times a day. Malware that nudges a setpoint back and forth to wear a
valve out or to shake a process loose (the Stuxnet centrifuge pattern), or an
injected command stream, changes it far more often, while each value stays
in its range (the ``limits`` detector's part). This detector counts a tag's
changes larger than ``deadband`` over the last ``window_s`` seconds (an
exponentially decaying count, so its state is one number per tag) and scores
``max_changes`` changes as exactly at the limit.

Off by default: it is meant for setpoint, command and status tags, which a
config names (the simulator's configs switch it on for those roles). A live
measurement changes every scan and is the other detectors' business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import BLOCK_PATH_MAX_TAGS, Detector, DetectorParams, TagLimits, carried, last_valid, to_score


class CommandWatchParams(DetectorParams):
    enabled: bool = False
    deadband: Annotated[float, Field(ge=0, description="A change this small or smaller does not count.")] = 0.0
    window_s: Annotated[float, Field(gt=0, description="Seconds over which changes are counted.")] = 600.0
    max_changes: Annotated[float, Field(gt=0, description="Changes per window scored as at the limit (0.5).")] = 4.0


class CommandWatchDetector(Detector):
    name: ClassVar[str] = "command"
    Params: ClassVar[type[DetectorParams]] = CommandWatchParams
    state_fields: ClassVar[tuple[str, ...]] = ("last_x", "recent", "recent_ts")
    tracking_fields: ClassVar[tuple[str, ...]] = state_fields  # the recent changes: nothing here is a baseline
    fault: ClassVar[str] = "spike"
    applies_to_discrete: ClassVar[bool] = True
    block_path_max_tags: ClassVar[int | None] = BLOCK_PATH_MAX_TAGS
    # The suite's tags are noisy measurements (a change every tick, up to 10 sd): only its +25 sd
    # spikes must count as commands, and its fault window is 200 ticks long.
    suite_settings: ClassVar[dict[str, float]] = {"deadband": 12.0, "window_s": 60.0}

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        n = self.n_tags
        self._deadband = np.asarray(self.params["deadband"], dtype=np.float64)
        self._window = np.asarray(self.params["window_s"], dtype=np.float64)
        self._per_change = 1.0 / np.asarray(self.params["max_changes"], dtype=np.float64)
        self.last_x = np.full(n, np.nan)  # the last good value
        self.recent = np.zeros(n)  # changes counted, decayed to recent_ts
        self.recent_ts = np.full(n, np.nan)
        self._tick: tuple[np.ndarray, np.ndarray, float, np.ndarray] | None = None

    def _count(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        """The decayed count of changes at ``ts``, this tick's included (same for score and update)."""
        cached = self._tick
        if cached is not None and cached[0] is x and cached[1] is valid and cached[2] == ts:
            return cached[3]
        with np.errstate(invalid="ignore", over="ignore"):
            changed = valid & self.enabled & (np.abs(x - self.last_x) > self._deadband)
            age = np.where(np.isfinite(self.recent_ts), ts - self.recent_ts, 0.0)
            count = self.recent * np.exp(-np.maximum(age, 0.0) / self._window) + changed
        self._tick = (x, valid, ts, count)
        return count

    def _forget_caches(self) -> None:
        self._tick = None
        super()._forget_caches()

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        count = self._count(x, ts, valid)
        stat = np.where(valid & self.enabled, count * self._per_change, 0.0)
        return to_score(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        """Counts every change, flagged or not: the count is the evidence, not a baseline to protect."""
        count = self._count(x, ts, valid)
        self._tick = None
        self.recent = np.where(self.enabled, count, self.recent)
        self.recent_ts = np.where(self.enabled, ts, self.recent_ts)
        self.last_x = np.where(valid & self.enabled & np.isfinite(x), x, self.last_x)

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """A block at once: what it learns does not depend on its scores, so nothing needs guessing.

        The last good value before each tick is carried along the block, the changes and decays are
        whole-block operations, and the decayed count ``count * decay + changed`` runs as cumulative
        products between the ticks where some tag changed (one row operation at each of those): the
        very multiplications and additions, in the order the tick-by-tick path does them.
        """
        n, n_tags = X.shape
        self._tick = None
        if n == 0:
            return np.empty(X.shape)
        good = valid & self.enabled
        kept = good & np.isfinite(X)
        upto = last_valid(kept)
        before = np.vstack([np.full((1, n_tags), -1, dtype=upto.dtype), upto[:-1]])
        with np.errstate(invalid="ignore", over="ignore"):
            changed = good & (np.abs(X - carried(self.last_x, X, before)) > self._deadband)
            age = np.empty((n, n_tags))
            age[0] = np.where(np.isfinite(self.recent_ts), ts[0] - self.recent_ts, 0.0)
            age[1:] = (ts[1:] - ts[:-1])[:, None]  # an enabled tag's count was last moved at the tick before
            decay = np.exp(-np.maximum(age, 0.0) / self._window)
        count = np.empty((n, n_tags))
        prev, start = self.recent, 0
        for row in [*np.flatnonzero(changed.any(axis=1)).tolist(), n]:
            if row > start:
                count[start:row] = np.multiply.accumulate(np.vstack([prev, decay[start:row]]), axis=0)[1:]
                prev = count[row - 1]
            if row < n:
                count[row] = prev * decay[row] + changed[row]
                prev, start = count[row], row + 1
        stat = np.where(good, count * self._per_change, 0.0)
        self.recent = np.where(self.enabled, count[-1], self.recent)
        self.recent_ts = np.where(self.enabled, ts[-1], self.recent_ts)
        self.last_x = carried(self.last_x, X, upto[-1:])[0]
        return to_score(stat, out=stat)
