"""Command watch beyond the shared suite: a setpoint nudged back and forth, a pump cycled, and the
operator's occasional move that must stay quiet."""

from __future__ import annotations

import numpy as np

from detectors import TagLimits
from detectors.command_watch import CommandWatchDetector

N = 3600


def watch(discrete: bool = False, **settings: object) -> CommandWatchDetector:
    limits = TagLimits.unknown(2)
    if discrete:
        limits = TagLimits(limits.lo, limits.hi, limits.lolo, limits.hihi, np.ones(2, dtype=bool))
    det = CommandWatchDetector.from_defaults(limits, enabled=True, **settings)
    assert isinstance(det, CommandWatchDetector)
    return det


def test_a_setpoint_nudged_back_and_forth_alarms_and_an_operator_move_does_not() -> None:
    X = np.full((N, 2), 80.0)
    X[600:, 1] = 81.0  # the operator raises a setpoint once ...
    X[2400:, 1] = 80.5  # ... and trims it half an hour later
    for k, t in enumerate(range(1200, 1560, 60)):  # six moves in six minutes, each within range
        X[t:, 0] = 80.0 + 0.5 * (k % 2 == 0)
    scores = watch().run(X, np.arange(N, dtype=np.float64))
    assert (scores[:, 1] < 0.5).all()
    assert (scores[:1400, 0] < 0.5).all(), "the first moves are not yet too many"
    assert (scores[1500:1560, 0] >= 0.5).all()
    assert (scores[3000:, 0] < 0.5).all(), "the count decays once the moves stop"


def test_a_pump_cycled_on_and_off_alarms_through_gaps_and_ignores_noise_below_the_deadband() -> None:
    running = np.ones(N)
    running[1000:1600] = (np.arange(600) // 50) % 2  # stopped and started every 50 s for 10 minutes
    X = np.c_[running, np.ones(N) + np.random.default_rng(0).standard_normal(N) * 0.1]
    valid = np.ones(X.shape, dtype=bool)
    valid[::7] = False
    scores = watch(discrete=True, deadband=0.5).run(X, np.arange(N, dtype=np.float64), valid)
    assert (scores[:1000] < 0.5).all() and (scores[:, 1] < 0.5).all()
    assert (scores[1300:1600, 0][valid[1300:1600, 0]] >= 0.5).all(), "every good sample of the cycling"
