"""The bank learns exactly what its detectors would learn on their own, one tick or a block at a time."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from detectors import DetectorBank, TagLimits
from detectors.base import Detector

JUST_UNDER = float(np.nextafter(0.5, 0.0))  # < 0.5 in float64, exactly 0.5 once rounded to float32


class FixedScore(Detector):
    """Scores every sample ``JUST_UNDER`` the protect threshold and counts what it is allowed to learn."""

    name: ClassVar[str] = "fixed"
    state_fields: ClassVar[tuple[str, ...]] = ("learned",)
    fault: ClassVar[str] = "none"

    def __init__(self, n_tags: int) -> None:
        super().__init__({}, TagLimits.unknown(n_tags))
        self.learned = np.zeros(n_tags)

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        return np.full(self.n_tags, JUST_UNDER)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        self.learned += learn


def test_a_score_a_hair_under_the_threshold_is_learned_live_as_in_a_block() -> None:
    assert np.float32(JUST_UNDER) == 0.5  # the premise: float32 rounding alone would refuse it
    X = np.zeros((5, 3))
    ts = np.arange(5.0)
    valid = np.ones((5, 3), dtype=bool)

    live = FixedScore(3)
    bank = DetectorBank([live])
    for i in range(5):  # the daemon closes ticks one by one
        bank.run(X[i : i + 1], ts[i : i + 1], valid[i : i + 1])

    replayed = FixedScore(3)
    DetectorBank([replayed]).run(X, ts, valid)  # a replay hands the whole block

    assert live.learned.tolist() == [5.0, 5.0, 5.0]
    assert replayed.learned.tolist() == live.learned.tolist()
