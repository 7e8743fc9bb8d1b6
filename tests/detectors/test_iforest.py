"""The isolation-forest detector: what the shared suite does not check (relations, fit sample, explain)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import DETECTORS, TagLimits
from detectors.checks import build
from detectors.iforest import MAX_WINDOW, RESERVOIR, IforestDetector

THRESHOLD = 0.5
N_TICKS = 1600
BREAK = slice(1200, 1400)
WARMUP = 880  # the first half (the fit) covers a whole cycle of the load


def plant(broken: bool, seed: int = 0) -> np.ndarray:
    """A flow and a level that follow one load (the level twice as much), and an unrelated temperature.

    ``broken``: during ``BREAK`` the level goes against the load, each sample still within its range.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(N_TICKS)
    load = 5.0 * np.sin(2 * np.pi * t / 400)
    flow = 50.0 + load + 0.5 * rng.standard_normal(N_TICKS)
    level = 20.0 + 2.0 * load + 0.5 * rng.standard_normal(N_TICKS)
    temp = 10.0 + rng.standard_normal(N_TICKS)
    if broken:
        level[BREAK] = 20.0 - 2.0 * load[BREAK] + 0.5 * rng.standard_normal(BREAK.stop - BREAK.start)
    return np.column_stack([flow, level, temp])


def forest(n_tags: int = 3, **settings: object) -> IforestDetector:
    settings.setdefault("group", np.zeros(n_tags))
    settings.setdefault("warmup", WARMUP)
    det = build(IforestDetector, TagLimits.unknown(n_tags), **settings)
    assert isinstance(det, IforestDetector)
    return det


def run(det: IforestDetector, X: np.ndarray) -> np.ndarray:
    return det.run(X, np.arange(len(X), dtype=np.float64), np.isfinite(X))


def test_registered_and_off_by_default() -> None:
    assert DETECTORS["iforest"] is IforestDetector
    det = IforestDetector.from_defaults(TagLimits.unknown(3))
    assert not det.enabled.any()
    np.testing.assert_array_equal(run(det, plant(False)), 0.0)


def test_broken_relation_is_flagged_on_the_tag_that_broke() -> None:
    healthy = run(forest(), plant(False))
    broken = run(forest(), plant(True))
    # Before the break both runs are the same plant: the same scores, and few of them high.
    np.testing.assert_array_equal(healthy[:1200], broken[:1200])
    assert (healthy[WARMUP + 100 :] >= THRESHOLD).mean() < 0.01
    # During the break the level, whose relation to the flow broke, is flagged again and again.
    flagged = (broken[BREAK] >= THRESHOLD).mean(axis=0)
    assert flagged[1] > 0.05, flagged
    assert flagged[1] > 5 * (healthy[BREAK] >= THRESHOLD).mean(axis=0)[1]
    # Every sample stayed within the range the level had while the model learned (give or take a noise sd).
    X = plant(True)
    assert X[BREAK, 1].min() > X[:WARMUP, 1].min() - 0.5 and X[BREAK, 1].max() < X[:WARMUP, 1].max() + 0.5


def test_fit_is_deterministic_and_independent_of_block_boundaries() -> None:
    X = plant(True)
    whole = run(forest(), X)
    det = forest()
    pieces = [run(det, X[a : a + 137]) for a in range(0, N_TICKS, 137)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert whole[WARMUP + MAX_WINDOW :].max() > 0.0, "the forest must be scoring"


def test_snapshot_round_trip_refits_the_same_forest() -> None:
    X = plant(True)
    original = forest()
    run(original, X[:1000])
    snap = original.state()
    assert original.state_nbytes() <= 1024 * 3
    restored = forest()
    restored.load_state(snap)
    assert restored.warm().all()
    np.testing.assert_array_equal(run(restored, X[1000:]), run(original, X[1000:]))


def test_protecting_fits_on_unflagged_rows_only() -> None:
    """Rows in which a tag of the group was withheld (flagged by another detector) never enter the fit sample."""
    X = plant(False)
    ts = np.arange(N_TICKS, dtype=np.float64)
    valid = np.ones(X.shape, dtype=bool)
    spoofed = np.zeros(N_TICKS, dtype=bool)
    spoofed[200:400] = True
    X_attack = X.copy()
    X_attack[spoofed, 1] += 40.0  # a level far out; say another detector flagged it
    learn = valid.copy()
    learn[spoofed, 1] = False

    def fit(mode: str, data: np.ndarray) -> IforestDetector:
        det = forest(mode=mode)
        for i in range(WARMUP + 400):
            det.score(data[i], ts[i], valid[i])
            det.update(data[i], ts[i], valid[i], learn[i])
        assert det.warm().all()
        return det

    protecting = fit("protecting", X_attack)
    learning = fit("learning", X_attack)
    level_mean = protecting.reservoir[1, :, 1] + protecting.centre[1]
    assert level_mean.max() < X[:WARMUP, 1].max() + 1.0, "a withheld row got into the fit sample"
    assert (learning.reservoir[1, :, 1] + learning.centre[1]).max() > X[:WARMUP, 1].max() + 10.0
    # Learned rows counted: protecting left out the 200 withheld ticks (and the windows they touch).
    assert protecting.count[0] < learning.count[0] - 190


def test_slow_ramp_after_the_fit_does_not_move_the_model() -> None:
    """The forest is kept once fitted: a ramp the plant never made is scored higher and higher, and flagged."""
    X = plant(False)
    ramp = np.zeros(N_TICKS)
    ramp[1000:] = np.linspace(0.0, 30.0, N_TICKS - 1000)  # up to 60 noise sd: out of the range it had
    X[:, 1] += ramp
    det = forest()
    scores = run(det, X)
    fitted = det.reservoir.copy()
    assert scores[1500:, 1].mean() > 2 * scores[900:1000, 1].mean()
    assert (scores[1500:, 1] >= THRESHOLD).any()
    np.testing.assert_array_equal(det.reservoir, fitted)
    assert det.admitted[0] == RESERVOIR


def test_frozen_learns_its_warm_up_then_nothing_at_all() -> None:
    """``frozen`` fits the same forest as ``protecting`` and then keeps every learned field still."""
    X = plant(False)
    frozen, protecting = forest(mode="frozen"), forest(mode="protecting")
    run(frozen, X[: WARMUP + 100])
    run(protecting, X[: WARMUP + 100])
    assert frozen.warm().all()
    np.testing.assert_array_equal(frozen.reservoir, protecting.reservoir)
    kept = {f: np.array(getattr(frozen, f)) for f in frozen.state_fields if f not in frozen.tracking_fields}
    counted = protecting.count[0]
    run(frozen, X[WARMUP + 100 :])
    run(protecting, X[WARMUP + 100 :])
    for field, before in kept.items():
        np.testing.assert_array_equal(getattr(frozen, field), before, err_msg=field)
    assert protecting.count[0] > counted, "protecting still counts the rows it judges normal"


def test_explain_names_the_group_and_the_features_that_moved() -> None:
    names = ["FT101.FLOW", "LT101.LEVEL", "TT101.TEMP"]
    X = plant(True)
    det = forest()
    scores = run(det, X)
    row = int(np.argmax(scores[:, 1]))
    assert scores[row, 1] >= THRESHOLD
    text = det.explain(row, np.array([1, 2]), scores[row], names)
    assert text[0] is not None and text[0] == text[1]
    assert text[0].startswith("iforest group 'FT101.FLOW' (3 tags): ")
    assert "x limit; most unusual: " in text[0] and "LT101.LEVEL" in text[0]
    assert det.explain(row, np.array([1]), scores[row], names) == [text[0]], "deterministic"
    assert det.explain(row - N_TICKS, np.array([1]), scores[row], names) == [text[0]], "counted from the end"
    quiet = int(np.argmin(scores[WARMUP + MAX_WINDOW :, 1])) + WARMUP + MAX_WINDOW
    if scores[quiet].max() == 0.0:
        assert det.explain(quiet, np.array([1]), scores[quiet], names) == [None]


@pytest.mark.parametrize(
    "bad", [{"window": 1}, {"window": MAX_WINDOW + 1}, {"warmup": 2 * RESERVOIR - 1}, {"mode": "x"}]
)
def test_settings_are_checked(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        IforestDetector.Params(**bad)


def test_forest_walk_matches_scikit_learn_score_samples() -> None:
    """The flat walk of the fitted trees gives scikit-learn's own anomaly score (up to the path rounding)."""
    from sklearn.ensemble import IsolationForest

    from detectors.iforest import SEED, Forest

    rng = np.random.default_rng(1)
    rows, X = rng.standard_normal((RESERVOIR, 12)), 1.5 * rng.standard_normal((500, 12))
    model = Forest(rows, 100, 0.999)
    reference = IsolationForest(n_estimators=100, max_samples=RESERVOIR // 2, random_state=SEED, n_jobs=1)
    reference.fit(model.rotate(rows))
    np.testing.assert_allclose(model.anomaly(X)[0], -reference.score_samples(model.rotate(X)), atol=1e-5)
    assert model.median < model.limit
