"""Physics invariants: the safe expression parser, the detector's contract, and attacks a balance sees.

The invariant detector is configured by the ``invariants`` section rather than per tag, so it is not
in the ``DETECTORS`` registry; the shared suite's checks are played on it here, on a hostile stream.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors import TagLimits
from detectors.checks import fault_stream
from detectors.invariants import ExpressionError, Invariant, InvariantDetector, evaluate, max_lag, parse

TAGS = ["TK101.LEVEL", "FT101.FLOW_IN", "FT102.FLOW_OUT", "odd name"]
SUITE_TAGS = [f"T{i}" for i in range(8)]
# On the suite's drift stream tags 0-3 drift together and 4-7 stay clean: T0 - T4 breaks, T5 - T6 holds.
SUITE_INVARIANTS = (
    Invariant("drifted", "T0 - T4 + avg(T1 - lag(T1, 2), 5)", warmup=200),
    Invariant("clean", "der(T5) * 0 + T5 - T6", warmup=200),
)


def values(text: str, H: np.ndarray, ts: np.ndarray, first: int) -> np.ndarray:
    return evaluate(parse(text, TAGS, {"AREA": 50.0}), H, ts, first)


def suite_detector(invariants: tuple[Invariant, ...] = SUITE_INVARIANTS) -> InvariantDetector:
    return InvariantDetector(invariants, SUITE_TAGS, TagLimits.unknown(len(SUITE_TAGS)))


def hostile_stream(seed: int = 1, rng_seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The suite's drift stream with holes, dead ticks, bad quality, absurd values and an hour's gap."""
    s = fault_stream("drift", seed=seed)
    X, ts, valid = s.X.copy(), s.ts.copy(), s.valid.copy()
    rng = np.random.default_rng(rng_seed)
    holes = rng.random(X.shape) < 0.05
    X[holes] = np.nan
    valid[holes] = False
    X[[0, 1, 200, *range(400, 440)]] = np.nan
    valid[[0, 1, 200, *range(400, 440)]] = False
    valid[rng.random(X.shape) < 0.02] = False
    X[650, 0], X[652, 5] = 1e12, 1e15
    ts[800:] += 3600.0
    return X, ts, valid


def stepwise(det: InvariantDetector, X: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.empty(X.shape)
    for i in range(X.shape[0]):
        out[i] = det.score(X[i], float(ts[i]), valid[i])
        det.update(X[i], float(ts[i]), valid[i], valid[i] & (out[i] < 0.5))
    return out


# -- the expression language ----------------------------------------------------------------------
def test_arithmetic_precedence_functions_constants_and_quoted_names() -> None:
    H = np.array([[1.0, 10.0, 4.0, 2.0], [3.0, 20.0, 5.0, -2.0], [5.0, 30.0, 6.0, 0.0]])
    ts = np.array([0.0, 2.0, 4.0])
    assert values("FT101.FLOW_IN - FT102.FLOW_OUT * 2", H, ts, 1)[0] == 10.0
    assert values("(FT101.FLOW_IN - FT102.FLOW_OUT) * 2", H, ts, 1)[0] == 30.0
    assert values("-TK101.LEVEL + 1.5e1 / 3", H, ts, 1)[0] == 2.0
    assert values("der(TK101.LEVEL)", H, ts, 1)[0] == 1.0  # (3 - 1) / 2 s
    assert values("lag(FT101.FLOW_IN, 1)", H, ts, 1)[0] == 10.0
    assert values('abs("odd name")', H, ts, 1)[0] == 2.0
    assert values("TK101.LEVEL * AREA", H, ts, 1)[0] == 150.0
    assert values("avg(FT101.FLOW_IN - FT102.FLOW_OUT, 3)", H, ts, 2)[0] == pytest.approx(15.0)
    assert max_lag(parse("avg(lag(TK101.LEVEL, 4) - der(FT101.FLOW_IN), 10)", TAGS)) == 13


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("TK101.LEVEL +", 14),
        ("NOPE.TAG * 2", 1),
        ("__import__('os')", 12),
        ("TK101.LEVEL; FT101.FLOW_IN", 12),
        ("lag(TK101.LEVEL, 0)", 18),
        ("lag(TK101.LEVEL, 1.5)", 18),
        ("avg(TK101.LEVEL, 9999)", 18),
        ("der(1 + 2)", 5),
        ("(TK101.LEVEL", 13),
        ("TK101.LEVEL ** 2", 14),
        ("exec(TK101.LEVEL)", 1),
        ("TK101.LEVEL * AREA", 15),  # no constants given here
        # What a config file may ask of the parser is bounded, and refused at load past the bound:
        ("(" * 33 + "TK101.LEVEL" + ")" * 33, 33),  # brackets nested deeper than MAX_NESTING
        ("-" * 33 + "TK101.LEVEL", 33),  # signs, each a level of recursion too
        ("abs(" * 33 + "TK101.LEVEL" + ")" * 33, 129),
        (" + ".join(["1"] * 201), 1),  # a sum 201 deep (MAX_DEPTH 200): the evaluators recurse on it
        ("TK101.LEVEL + " * 200 + "1", 2001),  # longer than MAX_LENGTH
        ("avg(avg(TK101.LEVEL, 3600), 3)", 1),  # windows in windows: 3,601 ticks of history
        ("TK101.LEVEL * 1e999", 15),  # not a finite number
        ("TK101.LEVEL + \u0661", 15),  # a digit, but not an ASCII one
    ],
)
def test_anything_else_is_refused_with_its_column(text: str, column: int) -> None:
    with pytest.raises(ExpressionError, match=rf"^column {column}: "):
        parse(text, TAGS)


def test_the_deepest_relation_allowed_is_evaluated_by_both_paths() -> None:
    """A sum of 200 terms is as deep as a relation may be; both evaluators walk it without running out of stack."""
    tags = [f"T{i}" for i in range(8)]
    text = " + ".join(tags[i % 8] for i in range(200))
    det = InvariantDetector([Invariant(name="wide", expression=text)], tags, TagLimits.unknown(8))
    X, ts, valid = hostile_stream()
    blocks = det.run(X[:400], ts[:400], valid[:400])
    assert np.isfinite(blocks).all()
    det.score(X[400], float(ts[400]), valid[400])  # the live path compiles the same tree


# -- the detector contract ------------------------------------------------------------------------
def test_run_equals_tick_by_tick_and_score_changes_nothing() -> None:
    X, ts, valid = hostile_stream()
    blocks = suite_detector()
    batch = np.vstack([blocks.run(X[i : i + 64], ts[i : i + 64], valid[i : i + 64]) for i in range(0, 900, 64)])
    det = suite_detector()
    for i in range(300):  # scoring twice, and in between, changes nothing
        before = det.state()
        first = det.score(X[i], float(ts[i]), valid[i])
        assert np.array_equal(first, det.score(X[i], float(ts[i]), valid[i]))
        for name, value in det.state().items():
            assert np.array_equal(value, before[name], equal_nan=True), name
        det.update(X[i], float(ts[i]), valid[i], valid[i] & (first < 0.5))
    assert (blocks.count == 200).all(), "the later blocks took the batched CUSUM (baselines fixed)"
    assert np.array_equal(batch, stepwise(suite_detector(), X, ts, valid))


def test_catches_the_drift_on_the_tags_of_the_broken_relation_only() -> None:
    s = fault_stream("drift")
    scores = suite_detector().run(s.X, s.ts, s.valid)
    assert (scores[650:700, [0, 1, 4]] >= 0.5).all(), "the drifted relation's tags"
    assert (scores[:, [2, 3, 5, 6, 7]] < 0.5).all(), "tags of no broken relation"
    assert (scores[300:500] < 0.5).all(), "no alarm before the fault"


def test_snapshot_round_trip_follows_invariants_by_name_and_expression() -> None:
    X, ts, valid = hostile_stream()
    original = suite_detector()
    original.run(X[:600], ts[:600], valid[:600])
    snap = original.state()
    restored = suite_detector()
    restored.load_state(snap)
    for a in snap.values():
        a[...] = 0
    assert np.array_equal(original.run(X[600:], ts[600:], valid[600:]), restored.run(X[600:], ts[600:], valid[600:]))
    # Reordered and one new invariant: the known ones keep what they learned, the new one starts cold.
    again = suite_detector()
    again.run(X[:600], ts[:600], valid[:600])
    new = Invariant("new", "T2 - T7", warmup=200)
    moved = suite_detector((new, SUITE_INVARIANTS[1], SUITE_INVARIANTS[0]))
    moved.load_state(again.state())
    assert moved.count[0] == 0
    assert np.array_equal(moved.mean[1:], again.mean[::-1]) and np.array_equal(moved.var[1:], again.var[::-1])


def test_bounded_memory_and_determinism() -> None:
    X, ts, valid = hostile_stream()
    det = suite_detector()
    det.run(X[:100], ts[:100], valid[:100])
    size = det.state_nbytes()
    det.run(X[100:], ts[100:], valid[100:])
    det.run(X, ts + 10_000.0, valid)
    assert det.state_nbytes() == size
    # history only for the tags the expressions read (T0, T1, T4, T5, T6), as deep as they look back
    assert det.history.shape == (6, 5)
    assert np.array_equal(suite_detector().run(X, ts, valid), suite_detector().run(X, ts, valid))


# -- what it catches ------------------------------------------------------------------------------
def tank(n: int, seed: int = 0) -> np.ndarray:
    """A 50 m2 tank whose level follows inflow - outflow, read with 5 mm of noise per scan."""
    rng = np.random.default_rng(seed)
    inflow = 250 + np.cumsum(rng.standard_normal(n)) * 0.5
    outflow = 250 + rng.standard_normal(n) * 2.0
    true_level = 5.0 + np.cumsum((inflow - outflow) / 3600.0 / 50.0)
    return np.c_[true_level + rng.standard_normal(n) * 0.005, inflow, outflow, np.zeros(n)]


BALANCE = Invariant(
    "tk101_mass_balance",
    "(TK101.LEVEL - lag(TK101.LEVEL, 300)) * AREA * 3600 / 300 - avg(FT101.FLOW_IN - FT102.FLOW_OUT, 300)",
    constants={"AREA": 50.0},
    warmup=300,
)


def test_a_slow_level_drift_breaks_the_balance_and_does_not_drag_its_baseline() -> None:
    """5 cm in 30 minutes, far under the reading's noise scan to scan: the attack a learned baseline follows."""
    n = 7200
    X = tank(n)
    X[1800:3600, 0] += np.arange(1800) * 2.78e-5
    det = InvariantDetector([BALANCE], TAGS, TagLimits.unknown(4))
    ts = np.arange(n, dtype=np.float64)
    scores = np.vstack(
        [det.run(X[i : i + 600], ts[i : i + 600], np.isfinite(X[i : i + 600])) for i in range(0, n, 600)]
    )
    assert (scores[600:1800, :3] < 0.5).all(), "the healthy balance closes"
    assert (scores[2200:3600, :3] >= 0.5).mean() > 0.9, "the drift is caught within minutes"
    assert (scores[:, 3] == 0).all(), "a tag the relation does not name is not blamed"
    assert det.count[0] == BALANCE.warmup, "the baseline was fixed after its warm-up"


def test_tolerance_ignores_small_gaps_and_severity_caps_the_score() -> None:
    n = 2000
    rng = np.random.default_rng(4)
    sp = np.full(n, 5.0)
    pv = sp + rng.standard_normal(n) * 0.01
    pv[1200:] += 0.2  # a controller that stopped following
    X = np.c_[pv, np.zeros(n), np.zeros(n), sp]
    ts = np.arange(n, dtype=np.float64)
    loose = Invariant("tracking", 'TK101.LEVEL - "odd name"', tolerance=0.3, warmup=300)
    tight = Invariant("tracking", 'TK101.LEVEL - "odd name"', tolerance=0.1, warmup=300, max_score=0.7499)
    assert (InvariantDetector([loose], TAGS, TagLimits.unknown(4)).run(X, ts) == 0).all()
    scores = InvariantDetector([tight], TAGS, TagLimits.unknown(4)).run(X, ts)
    assert (scores[:1200] == 0).all()
    assert scores[1250:, 0].min() >= 0.5 and scores.max() == pytest.approx(0.7499)
