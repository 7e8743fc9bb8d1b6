"""The invariant detector's fast paths give the very bits of its tick-by-tick path, and its alerts say why.

A block is worked out whole, on a guess of what each invariant learns while some still learn
(warm-up, ``alpha`` > 0), checked against the scores; a live tick runs the expressions as one
compiled ``Program`` with shared sub-expressions and ``avg`` buffers. Both are compared here bit for
bit (``-0.0`` against ``0.0`` and NaN payloads included) with ``score`` + ``update`` tick by tick,
scores and state, on streams that make the guess fail: invariants sharing tags that learn while
their neighbours alarm, invariants that keep learning, windows within windows, holes and an hour's gap.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from detectors import DetectorBank, TagLimits
from detectors.expressions import Node, Program, evaluate, max_lag, parse, shared
from detectors.invariants import Invariant, InvariantDetector
from tests.detectors.test_invariants import hostile_stream

TAGS = [f"T{i}" for i in range(8)]
SPLITS = (1, 7, 64, 10_000)
SETS = {
    "learn then fixed": (
        Invariant("drifted", "T0 - T4 + avg(T1 - lag(T1, 2), 5)", warmup=200),
        Invariant("clean", "der(T5) * 0 + T5 - T6", warmup=200),
    ),
    "overlapping, some always learning": (
        Invariant("a", "T0 - T4", warmup=50, alpha=0.01),
        Invariant("b", "avg(T4 - T1, 10) - lag(T4, 3)", warmup=80, tolerance=0.5, h=3.0),
        Invariant("c", "abs(der(T2)) + avg(avg(T3, 4) * 2, 3) - T3 * 2", warmup=30, k=0.2, h=2.0, alpha=0.05),
        Invariant("d", "-T5 / (T6 + 100)", warmup=10, h=1.0, max_score=0.7),
    ),
    "a ring sharing windows": tuple(
        Invariant(
            f"ring{i}",
            f"avg(T{i} - T{(i + 1) % 8}, 7) + lag(T{i}, 2) - lag(T{i}, 2)",
            warmup=40 + 10 * i,
            h=2.0,
            alpha=0.02 * (i % 2),
        )
        for i in range(8)
    ),
}


def hostile(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The invariant tests' hostile stream, plus a burst on a shared tag and a run of negative zeros."""
    X, ts, valid = hostile_stream(seed, seed + 7)
    X[300:330, 2] += 40.0  # an alarm on a shared tag while its neighbours still learn
    X[500:520, 6] = -0.0
    return X, ts, valid


def detector(name: str) -> InvariantDetector:
    return InvariantDetector(SETS[name], TAGS, TagLimits.unknown(len(TAGS)))


def stepwise(det: InvariantDetector, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, thr: float) -> np.ndarray:
    out = np.empty(X.shape)
    for i in range(X.shape[0]):
        out[i] = det.score(X[i], float(ts[i]), valid[i])
        det.update(X[i], float(ts[i]), valid[i], valid[i] & (out[i] < thr))
    return out


def in_blocks(det: InvariantDetector, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, size: int, thr: float):  # type: ignore[no-untyped-def]
    return np.concatenate(
        [det.run(X[i : i + size], ts[i : i + size], valid[i : i + size], thr) for i in range(0, len(X), size)]
    )


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def assert_same(
    got_det: InvariantDetector, ref_det: InvariantDetector, got: np.ndarray, ref: np.ndarray, msg: str
) -> None:
    np.testing.assert_array_equal(bits(got), bits(ref), err_msg=f"{msg}: scores")
    a, b = got_det.state(), ref_det.state()
    for k in b:
        np.testing.assert_array_equal(bits(a[k]), bits(b[k]), err_msg=f"{msg}: state {k}")


@functools.cache
def reference(name: str, seed: int, thr: float) -> tuple[InvariantDetector, np.ndarray]:
    """The tick-by-tick run every split is compared with (worked out once per stream)."""
    X, ts, valid = hostile(seed)
    det = detector(name)
    return det, stepwise(det, X, ts, valid, thr)


@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("size", SPLITS)
def test_blocks_equal_ticks_bit_for_bit(name: str, size: int) -> None:
    for seed, thr in ((0, 0.5), (1, 0.3)):
        X, ts, valid = hostile(seed)
        ref_det, ref = reference(name, seed, thr)
        got_det = detector(name)
        got = in_blocks(got_det, X, ts, valid, size, thr)
        assert_same(got_det, ref_det, got, ref, f"{name}, blocks of {size}, seed {seed}")
        assert (ref >= thr).any() and (ref < thr).any(), "the stream alarms and is quiet in turns"


def test_guesses_were_put_to_the_test() -> None:
    """The speculative path met wrong guesses on these streams, and learned only what ticks would learn."""
    X, ts, valid = hostile(0)
    det = detector("overlapping, some always learning")
    calls = []
    stretch = det._stretch

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        done, held = stretch(*args, **kwargs)
        calls.append((len(args[0]), done))
        return done, held

    det._stretch = counted  # type: ignore[method-assign]
    det.run(X, ts, valid)
    assert any(done < length for length, done in calls), "some guess failed and was redone"
    assert max(done for _, done in calls) >= 64, "and long stretches held"


@pytest.mark.parametrize("name", list(SETS))
def test_live_ticks_after_blocks_and_a_snapshot_equal_ticks(name: str) -> None:
    """Blocks, then live ticks (the compiled program refills its windows from the history), then a
    snapshot restored into a fresh detector that goes on tick by tick and by blocks: all the same bits."""
    X, ts, valid = hostile(2)
    ref_det = detector(name)
    ref = stepwise(ref_det, X, ts, valid, 0.5)
    det = detector(name)
    parts = [in_blocks(det, X[:250], ts[:250], valid[:250], 100, 0.5)]
    parts.append(stepwise(det, X[250:420], ts[250:420], valid[250:420], 0.5))
    parts.append(in_blocks(det, X[420:600], ts[420:600], valid[420:600], 37, 0.5))
    restored = detector(name)
    restored.score(X[0], float(ts[0]), valid[0])  # a cache from a tick that is never played
    restored.load_state(det.state())
    parts.append(stepwise(restored, X[600:700], ts[600:700], valid[600:700], 0.5))
    parts.append(in_blocks(restored, X[700:], ts[700:], valid[700:], 64, 0.5))
    assert_same(restored, ref_det, np.concatenate(parts), ref, name)


def test_the_bank_in_blocks_or_ticks_gives_the_same_scores() -> None:
    X, ts, valid = hostile(3)
    block = DetectorBank([detector("overlapping, some always learning")]).run(X, ts, valid)
    ticks = DetectorBank([detector("overlapping, some always learning")])
    by_tick = np.concatenate([ticks.run(X[i : i + 1], ts[i : i + 1], valid[i : i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(block, by_tick)


def test_program_shares_sub_expressions_and_equals_evaluate() -> None:
    texts = [
        "avg(T0 - T1, 5) + lag(T2, 3) * der(T3)",
        "avg(T0 - T1, 5) - lag(T2, 3)",
        "abs(avg(avg(T4, 3) - lag(T4, 2), 4)) / (T5 + 1)",
        "lag(T2, 3) + 2 * 2",
    ]
    roots = shared([parse(t, TAGS) for t in texts])
    assert roots[0].args[0] is roots[1].args[0], "one window for both"
    program = Program(roots)

    def nodes(node: Node) -> int:
        return 1 + sum(nodes(a) for a in node.args)

    # the second expression reuses the window (4 nodes) and lag(T2, 3); the fourth lag(T2, 3) and one of its 2s
    assert program.size == sum(nodes(r) for r in roots) - 5 - 2
    assert sum(1 for op in program.ops if op[0] == "avg") == 3, "three distinct windows (5; 3 and 4 nested)"
    depth = max(max_lag(r) for r in roots)
    rng = np.random.default_rng(5)
    H = rng.standard_normal((depth + 50, len(TAGS)))
    H[rng.random(H.shape) < 0.03] = np.nan
    T = np.cumsum(rng.random(depth + 50) + 0.5)
    expected = np.stack([evaluate(r, H, T, depth) for r in roots], axis=1)
    program.rebuild(H[:depth], T[:depth], tick=11)
    for i in range(50):
        row = depth + i
        values = program.run(H[row], float(T[row]), H[row - depth : row], float(T[row - 1]), 11 + i)
        np.testing.assert_array_equal(bits(values[program.roots]), bits(expected[i]))


# -- why an invariant alerted ----------------------------------------------------------------------
def tank(n: int, seed: int = 0) -> np.ndarray:
    """A 50 m2 tank whose level follows inflow - outflow, read with 5 mm of noise per scan."""
    rng = np.random.default_rng(seed)
    inflow = 250 + np.cumsum(rng.standard_normal(n)) * 0.5
    outflow = 250 + rng.standard_normal(n) * 2.0
    true_level = 5.0 + np.cumsum((inflow - outflow) / 3600.0 / 50.0)
    return np.c_[true_level + rng.standard_normal(n) * 0.005, inflow, outflow, np.full(n, 5.0)]


TANK_TAGS = ["TK101.LEVEL", "FT101.FLOW_IN", "FT102.FLOW_OUT", "LIC101.SP"]
BALANCE = Invariant(
    "tk101_mass_balance",
    "(TK101.LEVEL - lag(TK101.LEVEL, 300)) * AREA * 3600 / 300 - avg(FT101.FLOW_IN - FT102.FLOW_OUT, 300)",
    constants={"AREA": 50.0},
    warmup=300,
)
TRACKING = Invariant("lic101_tracking", "TK101.LEVEL - LIC101.SP", tolerance=0.3, warmup=300)


def test_a_broken_mass_balance_is_named_with_its_residual_and_cusum() -> None:
    n = 3000
    X = tank(n)
    X[1800:, 2] -= 30.0  # the outflow meter reads 30 m3/h low: the balance breaks, the tracking holds
    ts = np.arange(n, dtype=np.float64)
    det = InvariantDetector([BALANCE, TRACKING], TANK_TAGS, TagLimits.unknown(4))
    scores = det.run(X, ts)
    row = int(np.argmax(scores[:, 2] >= 0.5))
    assert row > 1800
    (why_flow,) = det.explain(row, np.array([2]), scores[row], TANK_TAGS)
    assert why_flow is not None and why_flow.startswith("invariant tk101_mass_balance: residual -")
    assert why_flow.endswith("x limit)") and "lic101_tracking" not in why_flow
    z = float(why_flow.split("residual ")[1].split(" sd")[0])
    ratio = float(why_flow.split("CUSUM ")[1].split("x")[0])
    assert z < -1.0 and ratio >= 1.0, "the meters say more came in than the level shows"
    why_level, why_sp = det.explain(row, np.array([0, 3]), scores[row], TANK_TAGS)
    assert why_level is not None and why_level.startswith("invariant tk101_mass_balance")
    assert why_sp is not None and why_sp.startswith("invariant lic101_tracking"), "not broken: its own, for the record"
    # The same tick explained after a tick-by-tick run says the same, and a bank hands rows either way.
    ticks = InvariantDetector([BALANCE, TRACKING], TANK_TAGS, TagLimits.unknown(4))
    stepwise(ticks, X[: row + 1], ts[: row + 1], np.isfinite(X[: row + 1]), 0.5)  # type: ignore[arg-type]
    assert ticks.explain(-1, np.array([2]), scores[row], TANK_TAGS) == [why_flow]
    assert ticks.explain(0, np.array([2]), scores[row], TANK_TAGS) == [why_flow]
    bank = DetectorBank([InvariantDetector([BALANCE, TRACKING], TANK_TAGS, TagLimits.unknown(4))], protection="any")
    valid = np.isfinite(X)
    bank.run(X[:row], ts[:row], valid[:row])
    block = bank.run(X[row : row + 5], ts[row : row + 5], valid[row : row + 5])
    assert bank.explain(0, 0, np.array([2]), block[0, 0], TANK_TAGS) == [why_flow]
    assert bank.explain(0, 4, np.array([3]), block[4, 0], TANK_TAGS)[0].startswith("invariant lic101_tracking")


def test_a_tag_of_no_invariant_and_a_missing_residual() -> None:
    X = tank(700)
    X[650:, 1] = np.nan
    names = [*TANK_TAGS[:3], "TT101.TEMP"]
    det = InvariantDetector([BALANCE], names, TagLimits.unknown(4))
    scores = det.run(X, np.arange(700, dtype=np.float64))
    nobody, level = det.explain(660, np.array([3, 0]), scores[660], names)
    assert nobody is None, "TT101.TEMP is in no relation"
    assert level is not None and level.startswith("invariant tk101_mass_balance: residual n/a (CUSUM ")
