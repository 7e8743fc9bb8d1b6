"""The shared check suite: every detector in ``DETECTORS`` is played through every check.

A newly registered detector gets these checks without writing a line; its
``fault`` attribute names the fault stream (``detectors.checks``) it must catch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest

from detectors import DETECTORS, Detector, DetectorBank, TagLimits
from detectors.checks import (
    FAULT_KINDS,
    FAULT_START,
    FAULT_STOP,
    STEP_SD,
    SUITE_GROUP_SIZE,
    T0,
    build,
    fault_stream,
    tag_means,
)

CLASSES = list(DETECTORS.values())
IDS = list(DETECTORS)
each_detector = pytest.mark.parametrize("cls", CLASSES, ids=IDS)

THRESHOLD = 0.5
# State arrays that hold a learned baseline: a flagged sample must never move them.
BASELINE_FIELDS = frozenset({"mean", "var", "count", "mean_rate"})


# -- helpers ---------------------------------------------------------------------------------------
def stress_stream(cls: type[Detector]) -> tuple[np.ndarray, np.ndarray, np.ndarray, TagLimits]:
    """The detector's own fault stream made hostile: holes, dead ticks, bad quality, extremes, a gap."""
    s = fault_stream(cls.fault, seed=1)
    X, ts, valid = s.X.copy(), s.ts.copy(), s.valid.copy()
    rng = np.random.default_rng(7)
    holes = rng.random(X.shape) < 0.05
    X[holes] = np.nan
    valid[holes] = False
    dead = np.r_[0, 1, 200, 400:440]  # all-invalid ticks, the very first ones included
    X[dead] = np.nan
    valid[dead] = False
    bad_quality = rng.random(X.shape) < 0.02  # a value is there but must not be used
    valid[bad_quality] = False
    X[650, 0], X[651, 1], X[652, 5] = 1e12, -1e12, 1e15  # valid but absurd
    valid[650, 0] = valid[651, 1] = valid[652, 5] = True
    ts[800:] += 3600.0  # the link was down for an hour
    return X, ts, valid, s.limits


def stepwise(det: Detector, X: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """What ``run`` must match: score then learn one tick at a time, own protection."""
    out = np.empty(X.shape)
    for i in range(X.shape[0]):
        s = det.score(X[i], float(ts[i]), valid[i])
        out[i] = s
        det.update(X[i], float(ts[i]), valid[i], valid[i] & (s < THRESHOLD))
    return out


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray], msg: str = "") -> None:
    assert a.keys() == b.keys(), msg
    for k in a:
        assert a[k].dtype == b[k].dtype, f"{msg} {k}"
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{msg} {k}")


def footprint(det: Detector) -> Iterator[tuple[str, int]]:
    """Size of every attribute that could grow: array bytes and container lengths."""
    for name, value in sorted(vars(det).items()):
        if isinstance(value, np.ndarray):
            yield name, value.nbytes
        elif isinstance(value, list | dict | set | tuple | bytes | bytearray):
            yield name, len(value)


def sub_limits(limits: TagLimits, cols: np.ndarray) -> TagLimits:
    return TagLimits(limits.lo[cols], limits.hi[cols], limits.lolo[cols], limits.hihi[cols], limits.discrete[cols])


def full_bank(
    limits: TagLimits, protection: str = "own", cols: np.ndarray | None = None, new: np.ndarray | None = None
) -> DetectorBank:
    return DetectorBank([build(cls, limits, cols, new) for cls in CLASSES], protection=protection)


def resumes(cls: type[Detector], cols: np.ndarray, rows: np.ndarray, n_old: int) -> np.ndarray:
    """Which tags of a new config must resume from a snapshot of ``n_old`` tags.

    Every known tag; for a multivariate detector, only those whose whole group
    came through (a group that lost a tag or gained one starts cold).
    """
    known = rows >= 0
    if not cls.multivariate:
        return known
    old_group = np.arange(n_old) // SUITE_GROUP_SIZE
    out = np.zeros(len(rows), dtype=bool)
    for g in np.unique(old_group):
        mine = known & (np.asarray(cols) // SUITE_GROUP_SIZE == g)
        if set(rows[mine].tolist()) == set(np.flatnonzero(old_group == g).tolist()):
            out |= mine
    return out


def assert_resumed(cls: type[Detector], got: np.ndarray, expected: np.ndarray, msg: str = "") -> None:
    """Resumed scores are the same bits; a multivariate model whose tags were reordered sums its
    products in another order, so there the same up to rounding."""
    if cls.multivariate:
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=msg)
    else:
        assert np.array_equal(got, expected), msg


# -- the fault streams themselves ------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_stream_shape_and_truth(kind: str) -> None:
    s = fault_stream(kind)
    assert s.X.shape == s.valid.shape == s.truth.shape == (900, 8)
    assert s.X.dtype == np.float64 and s.valid.dtype == bool and s.truth.dtype == bool
    np.testing.assert_array_equal(s.ts, T0 + np.arange(900.0))
    np.testing.assert_array_equal(s.faulted, [True] * 4 + [False] * 4)
    assert s.truth.any()
    assert not s.truth[:, 4:].any(), "clean tags must stay clean"
    assert not s.truth[:FAULT_START].any() and not s.truth[FAULT_STOP:].any()
    if kind == "bad_status":  # a bad status keeps its value: valid samples are finite, not all finite ones valid
        assert not (s.valid & ~np.isfinite(s.X)).any() and not s.valid[s.truth].all()
    else:
        np.testing.assert_array_equal(np.isfinite(s.X), s.valid)
    clean = ~s.truth
    assert (s.X[clean] > s.limits.lo[None, :].repeat(900, 0)[clean]).all()
    assert (s.X[clean] < s.limits.hi[None, :].repeat(900, 0)[clean]).all()
    np.testing.assert_allclose(s.X[:, 4:].mean(0), tag_means(8)[4:], atol=0.2)
    np.testing.assert_allclose(s.X[:, 4:].std(0), 1.0, atol=0.1)


def test_fault_stream_kinds_do_what_they_say() -> None:
    w = slice(FAULT_START, FAULT_STOP)
    base = fault_stream("step")
    means = tag_means(8)
    assert (base.X[w, :4] - means[:4] > 2.0).mean() > 0.95
    frozen = fault_stream("freeze").X[w, :4]
    assert (frozen == frozen[0]).all()
    assert fault_stream("dropout").valid[w, :4].sum() == 0
    oor = fault_stream("out_of_range")
    assert (oor.X[w, :4] > oor.limits.hi[:4]).all()
    spike = fault_stream("spike")
    assert spike.truth[:, 0].sum() == len(range(FAULT_START, FAULT_STOP, 15))
    drift = fault_stream("drift")
    ramp = drift.X[w, :4] - means[:4]
    assert ramp[:20].mean() < 1.0 < 5.0 < ramp[-20:].mean()
    status = fault_stream("bad_status")
    assert (~status.valid[w, :4]).mean() == 0.5 and np.isfinite(status.X[w]).all()
    np.testing.assert_allclose(status.X, base.X - np.where(base.truth, STEP_SD, 0.0), atol=1e-12)  # values untouched


def test_fault_stream_is_deterministic_by_seed() -> None:
    a, b, c = fault_stream("spike", seed=3), fault_stream("spike", seed=3), fault_stream("spike", seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    with pytest.raises(ValueError):
        fault_stream("meteor")


def test_every_detector_names_a_known_fault() -> None:
    for cls in CLASSES:
        assert cls.fault in FAULT_KINDS, cls.name


# -- (a) score changes nothing ---------------------------------------------------------------------
@each_detector
def test_score_does_not_mutate_state(cls: type[Detector]) -> None:
    X, ts, valid, limits = stress_stream(cls)
    det = build(cls, limits)
    for i in range(X.shape[0]):
        x, v = X[i].copy(), valid[i].copy()
        before = det.state()
        first = det.score(x, float(ts[i]), v)
        second = det.score(x, float(ts[i]), v)
        assert_same_state(before, det.state(), f"tick {i}")
        np.testing.assert_array_equal(first, second, err_msg=f"tick {i}: scoring twice differs")
        np.testing.assert_array_equal(x, X[i], err_msg=f"tick {i}: score wrote into x")
        np.testing.assert_array_equal(v, valid[i], err_msg=f"tick {i}: score wrote into valid")
        det.update(x, float(ts[i]), v, v & (first < THRESHOLD))


# -- (b) a block equals its ticks ------------------------------------------------------------------
@each_detector
def test_run_equals_tick_by_tick(cls: type[Detector]) -> None:
    X, ts, valid, limits = stress_stream(cls)
    batch = build(cls, limits).run(X, ts, valid)
    rows = stepwise(build(cls, limits), X, ts, valid)
    assert batch.shape == X.shape
    assert np.array_equal(batch, rows)


@each_detector
def test_reused_input_buffers(cls: type[Detector]) -> None:
    """A caller that refills the same x and valid arrays every tick gets the same scores."""
    X, ts, valid, limits = stress_stream(cls)
    expected = build(cls, limits).run(X, ts, valid)
    det = build(cls, limits)
    x, v = np.empty(X.shape[1]), np.empty(X.shape[1], dtype=bool)
    got = np.empty(X.shape)
    for i in range(X.shape[0]):
        np.copyto(x, X[i])
        np.copyto(v, valid[i])
        got[i] = det.score(x, float(ts[i]), v)
        det.update(x, float(ts[i]), v, v & (got[i] < THRESHOLD))
    assert np.array_equal(expected, got)


# -- (c) snapshots ----------------------------------------------------------------------------------
@each_detector
@pytest.mark.parametrize("split", [450, 600])
def test_snapshot_round_trip(cls: type[Detector], split: int) -> None:
    X, ts, valid, limits = stress_stream(cls)
    original = build(cls, limits)
    original.run(X[:split], ts[:split], valid[:split])
    snap = original.state()
    assert set(snap) == set(cls.state_fields)
    restored = build(cls, limits)
    restored.load_state(snap)
    for a in snap.values():  # neither state() nor load_state() may share memory with the detector
        a[...] = 0
    expected = original.run(X[split:], ts[split:], valid[split:])
    got = restored.run(X[split:], ts[split:], valid[split:])
    assert np.array_equal(expected, got)
    assert_same_state(original.state(), restored.state())


@each_detector
def test_snapshot_with_rows_mapping(cls: type[Detector]) -> None:
    X, ts, valid, limits = stress_stream(cls)
    split = 450
    original = build(cls, limits)
    original.run(X[:split], ts[:split], valid[:split])
    snap = original.state()

    # The new config: seven old tags reordered, old tag 2 gone, one new tag at the end.
    known = np.array([5, 0, 7, 3, 1, 6, 4])
    rows = np.r_[known, -1]
    cols = np.r_[known, 4]  # the new tag happens to carry the same signal as old tag 4
    new_limits = sub_limits(limits, cols)
    restored = build(cls, new_limits, cols, rows < 0)
    restored.load_state(snap, rows=rows)
    cold = build(cls, new_limits, cols, rows < 0)  # what the new tag must look like: never seen before

    expected = original.run(X[split:], ts[split:], valid[split:])
    got = restored.run(X[split:, cols], ts[split:], valid[split:, cols])
    fresh = cold.run(X[split:, cols], ts[split:], valid[split:, cols])
    back = resumes(cls, cols, rows, len(limits.lo))
    assert back[:-1].sum() >= 4 and not back[-1]
    assert_resumed(cls, got[:, back], expected[:, rows[back]], "known tags must resume where they were")
    assert np.array_equal(got[:, ~back], fresh[:, ~back]), "an unknown tag must start cold"


@each_detector
def test_load_state_into_used_detector(cls: type[Detector]) -> None:
    """Restoring over a detector that has already run leaves nothing of its past (caches included)."""
    X, ts, valid, limits = stress_stream(cls)
    early = 30  # before any warm-up is over
    source = build(cls, limits)
    source.run(X[:early], ts[:early], valid[:early])
    snap = source.state()
    used = build(cls, limits)
    used.run(X, ts, valid)
    used.load_state(snap)
    fresh = build(cls, limits)
    fresh.load_state(snap)
    rest = slice(early, None)
    assert np.array_equal(used.run(X[rest], ts[rest], valid[rest]), fresh.run(X[rest], ts[rest], valid[rest]))


# -- (d) determinism -----------------------------------------------------------------------------------
@each_detector
def test_deterministic(cls: type[Detector]) -> None:
    X, ts, valid, limits = stress_stream(cls)
    a = build(cls, limits).run(X, ts, valid)
    b = build(cls, limits).run(X, ts, valid)
    assert np.array_equal(a, b)


# -- (e) memory -------------------------------------------------------------------------------------
@each_detector
def test_bounded_memory(cls: type[Detector]) -> None:
    s = fault_stream(cls.fault, n_ticks=1000)
    det = build(cls, s.limits)
    det.run(s.X[:100], s.ts[:100], s.valid[:100])
    early = det.state_nbytes()
    det.run(s.X[100:], s.ts[100:], s.valid[100:])
    assert det.state_nbytes() == early
    # Nothing else may grow either (caches made once after warm-up are fine): play the stream again.
    after_one = dict(footprint(det))
    det.run(s.X, s.ts + 1000.0, s.valid)
    assert dict(footprint(det)) == after_one, "some attribute grows with the stream"
    assert det.state_nbytes() == early
    assert det.state_nbytes() == sum(a.nbytes for a in det.state().values())
    assert det.state_nbytes() <= 1024 * s.n_tags

    double = build(cls, fault_stream(cls.fault, n_tags=16).limits)
    assert double.state_nbytes() == 2 * build(cls, s.limits).state_nbytes(), "state must be per tag"


# -- (f) scores are scores --------------------------------------------------------------------------
@each_detector
def test_scores_bounded_and_finite(cls: type[Detector]) -> None:
    X, ts, valid, limits = stress_stream(cls)
    det = build(cls, limits)
    for i in range(X.shape[0]):
        s = det.score(X[i], float(ts[i]), valid[i])
        assert s.shape == (X.shape[1],) and s.dtype == np.float64, f"tick {i}"
        assert np.isfinite(s).all(), f"tick {i}: {s}"
        assert ((s >= 0.0) & (s <= 1.0)).all(), f"tick {i}: {s}"
        det.update(X[i], float(ts[i]), valid[i], valid[i] & (s < THRESHOLD))


@each_detector
def test_invalid_samples_are_ignored(cls: type[Detector]) -> None:
    """Whatever value an invalid sample carries (NaN, garbage), the scores are the same.

    A detector of status codes tells "nothing arrived" (NaN) from "arrived, not good" (a value, not
    valid): for it, whatever value a bad sample carries, the scores are the same.
    """
    X, ts, valid, limits = stress_stream(cls)
    as_nan = np.where(valid, X, np.nan)
    as_garbage = np.where(valid, X, 1e9)
    if cls.reads_status:
        as_nan = np.where(valid | np.isnan(X), X, -1e9)
        as_garbage = np.where(valid | np.isnan(X), X, 1e9)
    a = build(cls, limits).run(as_nan, ts, valid)
    b = build(cls, limits).run(as_garbage, ts, valid)
    assert np.array_equal(a, b)


@each_detector
def test_tags_are_independent(cls: type[Detector]) -> None:
    """A tag's scores depend on its own samples only, whatever the other tags do (gaps, wild values)."""
    s = fault_stream(cls.fault)
    rng = np.random.default_rng(5)
    X, valid = s.X.copy(), s.valid.copy()
    others = np.zeros(X.shape, dtype=bool)
    others[:, s.n_tags // 2 :] = True
    gone = others & (rng.random(X.shape) < 0.2)
    X[gone] = np.nan
    valid[gone] = False
    wild = others & ~gone & (rng.random(X.shape) < 0.05)
    X[wild] += rng.choice([-40.0, 40.0], size=int(wild.sum()))
    X[rng.integers(0, s.n_ticks, 40), s.n_tags - 1] = X[0, s.n_tags - 1]  # a sticky value here and there
    valid[np.isfinite(X) & others] = True
    alone = build(cls, s.limits).run(s.X, s.ts, s.valid)
    mixed = build(cls, s.limits).run(X, s.ts, valid)
    mine = slice(0, s.n_tags // 2)
    assert np.array_equal(alone[:, mine], mixed[:, mine])


# -- (g) it catches its fault ------------------------------------------------------------------------
@each_detector
def test_detects_its_fault(cls: type[Detector]) -> None:
    s = fault_stream(cls.fault)
    scores = build(cls, s.limits).run(s.X, s.ts, s.valid)
    peak = scores[s.window][:, s.faulted].max(axis=0)
    assert (peak >= THRESHOLD).all(), f"{cls.name} misses {cls.fault}: peaks {peak}"
    clean_tail = scores[300:, ~s.faulted]
    assert (clean_tail >= THRESHOLD).mean() < 0.01, f"{cls.name} false alarms on clean tags"
    before = scores[300:FAULT_START, s.faulted]
    assert (before >= THRESHOLD).mean() < 0.01, f"{cls.name} false alarms before the fault"


@each_detector
def test_detects_its_fault_through_sporadic_gaps(cls: type[Detector]) -> None:
    """Sporadic missing or bad-quality samples must not stop a detector from seeing its fault."""
    s = fault_stream(cls.fault, seed=2)
    rng = np.random.default_rng(11)
    X, valid = s.X.copy(), s.valid.copy()
    holes = rng.random(X.shape) < 0.03
    X[holes] = np.nan
    valid &= ~holes
    ticks, tags = np.indices(X.shape)
    valid &= (ticks + 5 * tags) % 17 != 0  # a poll that fails every 17 s: bad quality, value still there
    scores = build(cls, s.limits).run(X, s.ts, valid)
    peak = scores[s.window][:, s.faulted].max(axis=0)
    assert (peak >= THRESHOLD).all(), f"{cls.name} misses {cls.fault} through gaps: peaks {peak}"
    assert (scores[300:, ~s.faulted] >= THRESHOLD).mean() < 0.01, f"{cls.name} false alarms on gaps"


def test_limit_detector_at_its_limits() -> None:
    """The one detector whose scale is fixed by config: 0 on hi/lo (the range is closed), 0.5 just
    beyond them, 0.75 at hihi/lolo."""
    limits = TagLimits(
        lo=np.array([0.0, -5.0, 1e-3]),
        hi=np.array([10.0, 5.0, 2e-3]),
        lolo=np.array([-5.0, np.nan, np.nan]),
        hihi=np.array([20.0, np.nan, np.nan]),
        discrete=np.zeros(3, dtype=bool),
    )
    det = build(DETECTORS["limits"], limits)
    v = np.ones(3, dtype=bool)
    np.testing.assert_array_equal(det.score(limits.hi, 0.0, v), 0.0)
    np.testing.assert_array_equal(det.score(limits.lo, 0.0, v), 0.0)
    beyond_hi, beyond_lo = limits.hi + 1e-9, limits.lo - 1e-9
    np.testing.assert_allclose(det.score(beyond_hi, 0.0, v), 0.5, rtol=1e-5)
    np.testing.assert_allclose(det.score(beyond_lo, 0.0, v), 0.5, rtol=1e-5)
    assert (det.score(beyond_hi, 0.0, v) > 0.5).all() and (det.score(beyond_lo, 0.0, v) > 0.5).all()
    np.testing.assert_allclose(det.score(np.array([20.0, 7.5, 2.25e-3]), 0.0, v), 0.75)
    np.testing.assert_allclose(det.score(np.array([-5.0, -7.5, 0.75e-3]), 0.0, v), 0.75)
    just_inside = det.score(np.nextafter(limits.hi, -np.inf), 0.0, v)
    assert (just_inside == 0.0).all()
    np.testing.assert_array_equal(det.score(np.array([5.0, 0.0, 1.5e-3]), 0.0, v), 0.0)


# -- (h) a flagged sample is not learned -------------------------------------------------------------
@each_detector
def test_flagged_sample_is_not_learned(cls: type[Detector]) -> None:
    s = fault_stream(cls.fault)
    det = build(cls, s.limits)
    det.run(s.X[:FAULT_START], s.ts[:FAULT_START], s.valid[:FAULT_START])  # clean so far
    x = tag_means(s.n_tags) + 1000.0
    t = float(s.ts[FAULT_START])
    v = np.ones(s.n_tags, dtype=bool)
    score = det.score(x, t, v)
    before = det.state()
    learns_all, protected = copy.deepcopy(det), copy.deepcopy(det)
    learns_all.update(x, t, v, v)
    protected.update(x, t, v, v & (score < THRESHOLD))
    taught, kept = learns_all.state(), protected.state()

    moved_by_learn = {f for f in cls.state_fields if not np.array_equal(taught[f], kept[f], equal_nan=True)}
    baseline = (BASELINE_FIELDS & set(cls.state_fields)) | moved_by_learn
    if baseline:
        assert (score >= THRESHOLD).all(), f"{cls.name} does not flag a 1000 sd outlier: {score}"
        for f in baseline:
            np.testing.assert_array_equal(kept[f], before[f], err_msg=f"flagged outlier moved {f}")
        assert any(not np.array_equal(taught[f], before[f]) for f in baseline), "learning must be live"
    else:
        # No baseline: the learn mask must not matter at all, over a whole stream.
        with_learning = build(cls, s.limits)
        without = build(cls, s.limits)
        a = np.empty_like(s.X)
        b = np.empty_like(s.X)
        for i in range(s.n_ticks):
            xi, ti, vi = s.X[i], float(s.ts[i]), s.valid[i]
            a[i] = with_learning.score(xi, ti, vi)
            b[i] = without.score(xi, ti, vi)
            with_learning.update(xi, ti, vi, vi)
            without.update(xi, ti, vi, np.zeros_like(vi))
        assert np.array_equal(a, b)


# -- the bank -----------------------------------------------------------------------------------------
def test_bank_run_shape_dtype_and_own_protection_matches_standalone() -> None:
    s = fault_stream("step")
    bank = full_bank(s.limits)
    scores = bank.run(s.X, s.ts, s.valid)
    assert scores.shape == (s.n_ticks, len(CLASSES), s.n_tags)
    assert scores.dtype == np.float32
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
    assert bank.names == tuple(DETECTORS)
    for j, cls in enumerate(CLASSES):
        alone = build(cls, s.limits).run(s.X, s.ts, s.valid)
        assert np.array_equal(scores[:, j], alone.astype(np.float32)), cls.name


def _limit_and_ewma_bank(limits: TagLimits, protection: str) -> DetectorBank:
    # A lax z limit, so that only the limit detector flags a sample just outside the range.
    return DetectorBank(
        [build(DETECTORS["limits"], limits), build(DETECTORS["ewma"], limits, z_limit=20.0)], protection=protection
    )


@pytest.mark.parametrize("protection", ["own", "any"])
def test_bank_protection(protection: str) -> None:
    s = fault_stream("step")
    bank = _limit_and_ewma_bank(s.limits, protection)
    bank.run(s.X[:FAULT_START], s.ts[:FAULT_START], s.valid[:FAULT_START])
    ewma = bank.detectors[1]
    before = ewma.state()

    x = tag_means(s.n_tags).copy()
    x[0] = s.limits.hi[0] + 0.5  # just out of range; well inside 20 learned sd
    scores = bank.run(x[None, :], s.ts[FAULT_START : FAULT_START + 1], np.ones((1, s.n_tags), dtype=bool))[0]
    assert scores[0, 0] >= THRESHOLD, "the limit detector flags tag 0"
    assert (scores[1] < THRESHOLD).all(), "the EWMA detector flags nothing"
    assert (scores[0, 1:] < THRESHOLD).all()

    after = ewma.state()
    np.testing.assert_array_equal(after["count"][1:], before["count"][1:] + 1)  # other tags learned
    if protection == "any":
        for f in ("mean", "var", "count"):
            assert after[f][0] == before[f][0], f"'any' let EWMA learn a sample the limit detector flagged ({f})"
    else:
        assert after["count"][0] == before["count"][0] + 1
        assert after["mean"][0] != before["mean"][0]


def test_bank_any_protection_keeps_flagged_samples_out_of_every_baseline() -> None:
    """Over a whole stream: with 'any' no baseline learns a sample some detector flagged."""
    s = fault_stream("out_of_range")
    own = _limit_and_ewma_bank(s.limits, "own")
    strict = _limit_and_ewma_bank(s.limits, "any")
    own.run(s.X, s.ts, s.valid)
    scores = strict.run(s.X, s.ts, s.valid)
    flagged = (scores >= THRESHOLD).any(axis=1)
    learned = s.valid & ~flagged
    np.testing.assert_array_equal(strict.detectors[1].count, learned.sum(axis=0))
    assert (own.detectors[1].count > strict.detectors[1].count)[s.faulted].all()


@pytest.mark.parametrize("protection", ["own", "any"])
def test_bank_state_round_trip(protection: str) -> None:
    X, ts, valid, limits = stress_stream(CLASSES[0])
    split = 600
    original = full_bank(limits, protection)
    original.run(X[:split], ts[:split], valid[:split])
    snap = original.state()
    assert set(snap) == {f"{d.name}.{f}" for d in original.detectors for f in d.state_fields}
    assert original.state_nbytes() == sum(a.nbytes for a in snap.values())

    restored = full_bank(limits, protection)
    restored.load_state(snap)
    # Tags reordered, old tag 7 gone, a new tag in its place.
    known = np.array([1, 0, 2, 3, 4, 5, 6])
    cols = np.r_[known, 7]
    rows = np.r_[known, -1]
    moved = full_bank(sub_limits(limits, cols), protection, cols, rows < 0)
    moved.load_state(snap, rows=rows)
    cold = full_bank(sub_limits(limits, cols), protection, cols, rows < 0)

    rest = slice(split, None)
    expected = original.run(X[rest], ts[rest], valid[rest])
    assert np.array_equal(restored.run(X[rest], ts[rest], valid[rest]), expected)
    got = moved.run(X[rest][:, cols], ts[rest], valid[rest][:, cols])
    fresh = cold.run(X[rest][:, cols], ts[rest], valid[rest][:, cols])
    each = [resumes(cls, cols, rows, len(limits.lo)) for cls in CLASSES]
    for j, cls in enumerate(CLASSES):
        back, cold_tags = each[j], ~each[j]
        if protection == "any":
            # Every baseline of a tag learns only what no detector flagged, so a tag resumes only
            # where all of its detectors do, and is cold only where none does.
            back, cold_tags = np.logical_and.reduce(each), ~np.logical_or.reduce(each)
        assert_resumed(cls, got[:, j, back], expected[:, j, rows[back]], cls.name)
        assert np.array_equal(got[:, j, cold_tags], fresh[:, j, cold_tags]), cls.name


def test_bank_rejects_bad_setups() -> None:
    limits = fault_stream("step").limits
    with pytest.raises(ValueError):
        DetectorBank([], protection="own")
    with pytest.raises(ValueError):
        DetectorBank([build(CLASSES[0], limits)], protection="some")
    with pytest.raises(ValueError):
        DetectorBank([build(CLASSES[0], limits), build(CLASSES[1], sub_limits(limits, np.arange(4)))])
