"""Fixed alarm limits, the oldest check in any control room.

Leaving ``range`` [lo, hi] scores 0.5 (warning); reaching ``alarm_range``
[lolo, hihi] scores 0.75 (critical). Without an alarm range, critical sits a
quarter of the span outside the normal range. The range is closed: a value on
its limit is inside, so a tank that sits full at its top level is normal, not
a standing warning. Nothing is learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from detectors.base import Detector, TagLimits, to_score


class LimitDetector(Detector):
    name: ClassVar[str] = "limits"
    fault: ClassVar[str] = "out_of_range"
    applies_to_discrete: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        quarter = 0.25 * limits.span
        lolo = np.where(np.isfinite(limits.lolo), limits.lolo, limits.lo - quarter)
        hihi = np.where(np.isfinite(limits.hihi), limits.hihi, limits.hi + quarter)
        self.enabled &= np.isfinite(limits.lo) & np.isfinite(limits.hi)
        # One unit of statistic per band between the normal and the alarm limit.
        with np.errstate(divide="ignore", invalid="ignore"):
            self._inv_hi_band = np.where(self.enabled, 1.0 / np.maximum(hihi - limits.hi, 1e-12), 0.0)
            self._inv_lo_band = np.where(self.enabled, 1.0 / np.maximum(limits.lo - lolo, 1e-12), 0.0)
        self._hi = np.where(self.enabled, limits.hi, np.inf)
        self._lo = np.where(self.enabled, limits.lo, -np.inf)
        # A quick, conservative pre-check for score(): a sample strictly between the guards
        # is certainly scored 0 (its statistic below is negative, even after rounding), so a
        # tick with every sample between them skips the arithmetic. The margins are a relative
        # 2**-40 of the limit plus a band's 2**-1000, far beyond any rounding or underflow;
        # samples outside the guards take the exact path below. A disabled tag never scores
        # (its statistic is NaN), so its guards are infinite.
        with np.errstate(invalid="ignore", over="ignore"):
            hi_band = np.maximum(hihi - limits.hi, 1e-12)
            lo_band = np.maximum(limits.lo - lolo, 1e-12)
            hi_guard = limits.hi - (np.abs(limits.hi) * 2.0**-40 + hi_band * 2.0**-1000)
            lo_guard = limits.lo + (np.abs(limits.lo) * 2.0**-40 + lo_band * 2.0**-1000)
        self._hi_guard = np.where(self.enabled, np.where(np.isnan(hi_guard), -np.inf, hi_guard), np.inf)
        self._lo_guard = np.where(self.enabled, np.where(np.isnan(lo_guard), np.inf, lo_guard), -np.inf)

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """A whole block at once: nothing is learned, so every tick is scored as on its own.

        The exact arithmetic of ``score`` runs on the rows holding a sample near a limit; every
        other row scores 0, as ``score``'s shortcut gives.
        """
        out = np.zeros(X.shape, dtype=np.float64)
        near = np.greater_equal(X, self._hi_guard)
        near |= np.less_equal(X, self._lo_guard)
        near &= valid
        rows = np.flatnonzero(near.any(axis=1))
        if rows.size:
            out[rows] = self._scores(X[rows], valid[rows])
        return out

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        near = x >= self._hi_guard
        near |= x <= self._lo_guard
        if not (near & valid).any():  # the usual tick: everything well within its range
            return np.zeros(self.n_tags)
        return self._scores(x, valid)

    def _scores(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Scores of a tick or of rows of ticks: how far outside its band each value is, 0 within it."""
        with np.errstate(invalid="ignore"):
            above = (x - self._hi) * self._inv_hi_band
            below = (self._lo - x) * self._inv_lo_band
            np.maximum(above, below, out=above)
            outside = above > 0.0
            above += 1.0
            stat = np.where(outside & valid, above, 0.0)
        return to_score(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        """Fixed limits learn nothing."""
