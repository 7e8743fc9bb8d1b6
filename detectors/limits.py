"""Fixed alarm limits, the oldest check in any control room.

Leaving ``range`` [lo, hi] scores 0.5 (warning); reaching ``alarm_range``
[lolo, hihi] scores 0.75 (critical). Without an alarm range, critical sits a
quarter of the span outside the normal range. Nothing is learned.
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

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            above = (x - self._hi) * self._inv_hi_band
            below = (self._lo - x) * self._inv_lo_band
            np.maximum(above, below, out=above)
            outside = above >= 0.0
            outside &= valid
            if not outside.any():  # the usual tick: everything within its range
                return np.zeros(self.n_tags)
            above += 1.0
            stat = np.where(outside, above, 0.0)
        return to_score(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        """Fixed limits learn nothing."""
