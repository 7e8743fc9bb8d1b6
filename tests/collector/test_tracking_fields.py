"""Which learned state a baseline restore leaves alone: each detector says, and nothing changed for those
the central list used to name."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from collector.baseline import FALLBACK_TRACKING, tracking_fields
from collector.config import load_config
from collector.detection import build_bank
from detectors import DETECTORS, Detector, DetectorBank, TagLimits
from tests.conftest import ROOT

# The list collector/baseline.py kept before each detector declared its own.
BEFORE = {
    "stale.last_seen",
    "flatline.held_x",
    "flatline.held_since",
    "rate.prev_x",
    "rate.prev_ts",
    "cusum.s_hi",
    "cusum.s_lo",
    "replay.prev_x",
    "replay.since_match",
}


def test_each_detector_names_its_tracking_state_and_the_old_list_still_holds() -> None:
    bank = build_bank(load_config(ROOT / "config/oil.yaml"))
    keys = tracking_fields(bank)
    assert keys >= BEFORE
    assert {"invariant.history", "invariant.history_ts", "invariant.walk", "invariant.floor"} <= keys
    assert {"command.last_x", "command.recent", "command.recent_ts"} <= keys
    state = bank.state()
    assert keys <= state.keys(), "every tracking field is state a snapshot holds"
    learned = {"ewma.mean", "ewma.var", "cusum.mean", "rate.mean_rate", "invariant.mean", "invariant.var"}
    assert not keys & learned, "a learned baseline is what a restore brings"
    for name, fields in FALLBACK_TRACKING.items():
        assert set(DETECTORS[name].tracking_fields) == set(fields), name


def test_a_detector_that_declares_nothing_falls_back_to_the_list() -> None:
    """A detector class from before ``tracking_fields`` (say a plug-in) keeps what the list said for its name."""

    class LegacyCusum(Detector):
        name: ClassVar[str] = "cusum"
        state_fields: ClassVar[tuple[str, ...]] = ("s_hi", "s_lo")

        def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
            return np.zeros(self.n_tags)

        def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
            pass

    class Quiet(LegacyCusum):
        tracking_fields: ClassVar[tuple[str, ...]] = ()

    limits = TagLimits.unknown(3)
    assert tracking_fields(DetectorBank([LegacyCusum({}, limits)])) == {"cusum.s_hi", "cusum.s_lo"}
    assert tracking_fields(DetectorBank([Quiet({}, limits)])) == frozenset(), "an explicit () means: none"
