"""Replay watch beyond the shared suite: an offset replay is still a replay, and neither a frozen,
a ramping nor a coarsely quantized signal is mistaken for one."""

from __future__ import annotations

import numpy as np

from detectors import TagLimits
from detectors.replay_watch import ReplayWatchDetector

N = 6000


def watch(n_tags: int, **settings: object) -> ReplayWatchDetector:
    det = ReplayWatchDetector.from_defaults(TagLimits.unknown(n_tags), enabled=True, **settings)
    assert isinstance(det, ReplayWatchDetector)
    return det


def run(det: ReplayWatchDetector, X: np.ndarray) -> np.ndarray:
    return det.run(X, np.arange(len(X), dtype=np.float64))


def test_replay_with_an_offset_is_caught_and_live_noise_is_not() -> None:
    rng = np.random.default_rng(0)
    live = np.cumsum(rng.standard_normal((N, 2)) * 0.1, axis=0) + rng.standard_normal((N, 2))
    X = live.copy()
    X[4000:4720, 0] = live[3280:4000, 0] + 0.7  # the last 12 minutes played again, shifted to fit in
    scores = run(watch(2), X)  # default settings: 13 minutes of history at 1 Hz
    assert (scores[4000:4720, 0] >= 0.5).mean() > 0.6
    assert (scores[4000:4040, 0] >= 0.5).any(), "seen within a window and a stride"
    assert (scores[:4000] >= 0.5).sum() == 0
    assert (scores[:, 1] >= 0.5).sum() == 0


def test_a_recording_played_backwards_is_caught() -> None:
    """Played in reverse, so that its ends join without a jump (the simulator's replay attack does)."""
    rng = np.random.default_rng(3)
    live = np.cumsum(rng.standard_normal(N) * 0.1) + rng.standard_normal(N)
    X = live.copy()
    X[4000:4600] = live[3400:4000][::-1]
    scores = run(watch(1), X[:, None])[:, 0]
    assert (scores[4000:4600] >= 0.5).mean() > 0.6
    assert (scores[:4000] >= 0.5).sum() == 0


def test_flatline_ramp_and_quantized_signals_are_not_replays() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(N, dtype=np.float64)
    noise = rng.standard_normal(N)
    X = np.c_[
        np.r_[noise[: N // 2], np.full(N - N // 2, noise[N // 2])],  # freezes half way
        0.01 * t,  # a clean ramp
        np.round(noise * 0.3),  # a signal the transport quantizes to whole units
        np.sin(t / 40.0) + 0.01 * noise,  # slow and nearly noise-free: its changes are its own
    ]
    det = watch(4)
    scores = run(det, X)
    assert (scores >= 0.5).sum() == 0
    assert det.collision[2] > 0.3, "the quantized signal is known to carry little information"


def test_switched_off_everywhere_is_a_no_op() -> None:
    """No tag enabled: zero scores and not one state array touched."""
    det = ReplayWatchDetector.from_defaults(TagLimits.unknown(2), enabled=False)
    before = det.state()
    X = np.random.default_rng(2).standard_normal((300, 2))
    X[::7, 1] = np.nan
    assert (run(det, X) == 0).all()
    for name, value in det.state().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_blocks_are_batched_and_give_the_ticks_numbers() -> None:
    """A healthy block is worked out whole; one holding a replay falls back to ticks from its first
    possible match. Either way the scores and the state are those of tick-by-tick scoring."""
    from detectors.replay_watch import _Block

    rng = np.random.default_rng(5)
    live = np.cumsum(rng.standard_normal((N, 3)) * 0.1, axis=0) + rng.standard_normal((N, 3))
    X = live.copy()
    X[4100:4500, 1] = live[3500:3900, 1]  # a replay inside the block 3600:4200 and the next
    X[2000:2003, 2] = np.nan  # a gap
    ts = np.arange(N, dtype=np.float64)
    blocks, ticks = watch(3), watch(3)
    got = []
    for start in range(0, N, 600):
        rows = slice(start, start + 600)
        valid = np.isfinite(X[rows])
        if start == 3000:
            assert _Block(blocks, X[rows], valid).clean == 600, "a healthy, warm block is batched whole"
        got.append(blocks.run(X[rows], ts[rows], valid))
    expected = np.empty(X.shape)
    for i in range(N):
        v = np.isfinite(X[i])
        expected[i] = ticks.score(X[i], float(ts[i]), v)
        ticks.update(X[i], float(ts[i]), v, v)
    assert np.array_equal(np.vstack(got), expected)
    assert (expected[4100:4500, 1] >= 0.5).mean() > 0.6
    for name, value in ticks.state().items():
        np.testing.assert_array_equal(blocks.state()[name], value, err_msg=name)


def test_one_long_block_from_a_cold_start_goes_back_to_the_block_path() -> None:
    """A cold start must be scored tick by tick (symbol widths are still being learned), but only
    until the block path can take over again, not for the rest of a long replay."""
    from detectors.replay_watch import RETRY_TICKS

    assert N >= 8 * RETRY_TICKS, "the stream must be long enough to tell retrying from giving up"
    rng = np.random.default_rng(9)
    X = np.cumsum(rng.standard_normal((N, 3)) * 0.1, axis=0) + rng.standard_normal((N, 3))
    ts = np.arange(N, dtype=np.float64)
    whole, ticks = watch(3), watch(3)
    per_tick_calls = 0
    score = whole.score

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        nonlocal per_tick_calls
        per_tick_calls += 1
        return score(*args, **kwargs)  # type: ignore[arg-type]

    whole.score = counted  # type: ignore[method-assign]
    got = whole.run(X, ts)
    expected = np.empty(X.shape)
    for i in range(N):
        v = np.isfinite(X[i])
        expected[i] = ticks.score(X[i], float(ts[i]), v)
        ticks.update(X[i], float(ts[i]), v, v)
    assert np.array_equal(got, expected)
    for name, value in ticks.state().items():
        np.testing.assert_array_equal(whole.state()[name], value, err_msg=name)
    assert per_tick_calls <= max(2 * RETRY_TICKS, N // 4), f"{per_tick_calls} of {N} ticks scored one by one"
