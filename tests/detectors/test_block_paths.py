"""The per-tag detectors' block paths give the very bits of the tick-by-tick path, scores and state.

The shared suite (``test_checks``) compares scores of one whole block; here every block size is
played (a block of one tick, odd splits, the whole stream), the state is compared bit for bit
(``-0.0`` against ``0.0`` and NaN payloads included), and the streams are made to exercise each
block path's edges: long alarms on some tags while others stay quiet, alarms that come and go,
settings that differ per tag, values exactly repeated, a detector switched off.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors import DETECTORS, Detector, TagLimits
from detectors.base import BLOCK_PATH_MAX_TAGS
from detectors.checks import build, fault_stream

THRESHOLD = 0.5
PER_TAG = ("limits", "rate", "ewma", "cusum", "flatline", "stale", "command")
SPLITS = (1, 7, 64, 10_000)


def stepwise(det: Detector, X: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.empty(X.shape)
    for i in range(X.shape[0]):
        s = det.score(X[i], float(ts[i]), valid[i])
        out[i] = s
        det.update(X[i], float(ts[i]), valid[i], valid[i] & (s < THRESHOLD))
    return out


def in_blocks(det: Detector, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate(
        [det.run(X[i : i + size], ts[i : i + size], valid[i : i + size]) for i in range(0, len(X), size)]
    )


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def assert_same_bits(det_a: Detector, det_b: Detector, got: np.ndarray, expected: np.ndarray, msg: str) -> None:
    np.testing.assert_array_equal(bits(got), bits(expected), err_msg=f"{msg}: scores")
    a, b = det_a.state(), det_b.state()
    for k in a:
        np.testing.assert_array_equal(bits(a[k]), bits(b[k]), err_msg=f"{msg}: state {k}")


def hostile(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, TagLimits]:
    """A fault stream with holes, dead ticks, absurd values, a link gap, a long alarm on tag 0 that starts and
    stops, a tag that flickers across its limits, and repeated values (signed zeros among them) on tag 7."""
    s = fault_stream(kind, seed=seed)
    X, ts, valid = s.X.copy(), s.ts.copy(), s.valid.copy()
    rng = np.random.default_rng(seed)
    holes = rng.random(X.shape) < 0.05
    X[holes] = np.nan
    valid[holes] = False
    X[[0, 3, 300]] = np.nan
    valid[[0, 3, 300]] = False
    valid[rng.random(X.shape) < 0.02] = False  # bad quality: a value, not to be used
    X[500:620, 0] += 50.0  # a long alarm on one tag while the others stay quiet
    X[100:700:9, 1] += rng.choice([-30.0, 30.0], size=len(range(100, 700, 9)))  # alarms that come and go
    X[650, 2] = 1e15
    valid[650, 2] = True
    X[200:260, 7] = 0.0
    X[230:260:2, 7] = -0.0
    valid[200:260, 7] = True
    ts[700:] += 3600.0
    return X, ts, valid, s.limits


@pytest.mark.parametrize("name", PER_TAG)
@pytest.mark.parametrize("size", SPLITS)
def test_blocks_equal_ticks_bit_for_bit(name: str, size: int) -> None:
    cls = DETECTORS[name]
    for seed in (0, 1):
        X, ts, valid, limits = hostile(cls.fault, seed)
        expected_det, got_det = build(cls, limits), build(cls, limits)
        expected = stepwise(expected_det, X, ts, valid)
        got = in_blocks(got_det, X, ts, valid, size)
        assert_same_bits(got_det, expected_det, got, expected, f"{name} blocks of {size}, seed {seed}")


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("rate", {"alpha": np.linspace(0.01, 0.5, 8), "warmup": np.arange(1.0, 9.0)}),
        ("rate", {"max_rate": np.r_[np.full(4, 0.5), np.full(4, np.nan)]}),
        ("ewma", {"alpha": np.linspace(0.01, 0.5, 8), "warmup": np.arange(1.0, 9.0), "min_std": 0.3}),
        ("ewma", {"enabled": np.r_[np.ones(4), np.zeros(4)]}),
        ("cusum", {"alpha": np.linspace(0.001, 0.1, 8), "k": 0.0, "h": np.linspace(1.0, 20.0, 8)}),
        ("cusum", {"enabled": False}),
        ("flatline", {"tolerance": 0.05}),  # goes tick by tick; must still agree
        ("flatline", {"after_s": np.linspace(1.0, 60.0, 8)}),
        ("stale", {"after_s": np.linspace(1.0, 60.0, 8)}),
        ("command", {"deadband": np.r_[np.zeros(4), np.full(4, 5.0)], "window_s": np.linspace(5.0, 900.0, 8)}),
        ("command", {"enabled": np.r_[np.ones(4), np.zeros(4)], "deadband": 0.0}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v),
)
def test_blocks_equal_ticks_with_settings(name: str, settings: dict[str, object]) -> None:
    cls = DETECTORS[name]
    X, ts, valid, limits = hostile(cls.fault, 2)
    for size in (5, 10_000):
        expected_det, got_det = build(cls, limits, **settings), build(cls, limits, **settings)
        expected = stepwise(expected_det, X, ts, valid)
        got = in_blocks(got_det, X, ts, valid, size)
        assert_same_bits(got_det, expected_det, got, expected, f"{name} {settings} blocks of {size}")


@pytest.mark.parametrize("name", PER_TAG)
def test_blocks_resume_from_a_snapshot_like_ticks(name: str) -> None:
    """A block after ``load_state`` (a cold tag among known ones) starts from the loaded state, caches forgotten."""
    cls = DETECTORS[name]
    X, ts, valid, limits = hostile(cls.fault, 3)
    source = build(cls, limits)
    source.run(X[:400], ts[:400], valid[:400])
    rows = np.r_[-1, np.arange(1, 8)]
    expected_det, got_det = build(cls, limits), build(cls, limits)
    for det in (expected_det, got_det):
        det.score(X[0], float(ts[0]), valid[0])  # a cache from a tick that is not played
        det.load_state(source.state(), rows)
    expected = stepwise(expected_det, X[400:], ts[400:], valid[400:])
    got = in_blocks(got_det, X[400:], ts[400:], valid[400:], 128)
    assert_same_bits(got_det, expected_det, got, expected, f"{name} resumed")


def test_a_long_alarm_is_not_learned_in_blocks() -> None:
    """The block path keeps a flagged tag out of its baseline for the whole alarm, as tick by tick."""
    X, ts, valid, limits = hostile("step", 4)
    det = build(DETECTORS["ewma"], limits)
    det.run(X[:500], ts[:500], valid[:500])
    mean_before = det.mean[0]
    scores = det.run(X[500:620], ts[500:620], valid[500:620])
    assert (scores[valid[500:620, 0], 0] >= THRESHOLD).all()
    assert det.mean[0] == mean_before


@pytest.mark.parametrize("name", PER_TAG)
def test_blocks_equal_ticks_either_side_of_the_width_gate(name: str) -> None:
    """Narrow detectors take blocks, wide ones go tick by tick (``BLOCK_PATH_MAX_TAGS``): both give the same bits."""
    cls = DETECTORS[name]
    for n_tags in (BLOCK_PATH_MAX_TAGS, BLOCK_PATH_MAX_TAGS + 1):
        s = fault_stream(cls.fault, n_tags=n_tags, seed=5)
        expected_det, got_det = build(cls, s.limits), build(cls, s.limits)
        expected = stepwise(expected_det, s.X, s.ts, s.valid)
        got = in_blocks(got_det, s.X, s.ts, s.valid, 450)
        assert_same_bits(got_det, expected_det, got, expected, f"{name} at {n_tags} tags")
