"""Cost of each detector: rows per second in replay, and time per tick live at 1k tags.

Not a pytest test (pytest ignores tests/bench). Run from the repository root:

    python tests/bench/bench_detectors.py [DETECTOR ...]     # e.g. replay invariant; none: all

Replay: each detector on its own (switched on, past its warm-up), fed blocks of
``FRAME`` ticks through ``run`` as the bank does under "own" protection, at
SKAB's width (8 tags) and TEP's (52 tags); rows/s is ticks per second. The PCA
detector is shown learning (protecting: refits every 100 learned ticks) and
frozen. Live: one tick per ``score`` + ``update`` call at 1,000 tags (PCA in
groups of 64), microseconds per tick. The signal is a correlated process
(a few loads shared by all tags, plus noise), so the PCA model has structure.
The invariant detector (configured, not in the registry) is timed with one
balance-like invariant per 4 tags (a 300-tick ``lag`` and ``avg``, as the
simulator's mass and energy balances have), with baselines fixed after the
warm-up (the default) and still learning (``alpha`` > 0: the speculative path).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detectors import DETECTORS, Detector, TagLimits  # noqa: E402
from detectors.checks import build  # noqa: E402
from detectors.invariants import Invariant, InvariantDetector  # noqa: E402

FRAME = 600
WARM_ROWS = 1200
TIMED_ROWS = 6000
LIVE_TICKS = 200
REPEATS = 3


def process(n_rows: int, n_tags: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    loads = np.cumsum(rng.standard_normal((n_rows, 3)) * 0.1, axis=0)
    return 50.0 + loads @ rng.standard_normal((3, n_tags)) + rng.standard_normal((n_rows, n_tags))


def variants() -> list[tuple[str, type[Detector] | None, dict[str, object]]]:
    out: list[tuple[str, type[Detector] | None, dict[str, object]]] = []
    for name, cls in DETECTORS.items():
        if name == "pca":  # one model over every tag, as the default one model per source gives
            out.append(("pca (protecting)", cls, {"group": -1}))
            out.append(("pca (frozen)", cls, {"group": -1, "mode": "frozen"}))
        elif name == "iforest":  # one forest per source too (split in groups of max_group_size, 32)
            out.append(("iforest", cls, {"group": -1}))
        else:
            out.append((name, cls, {}))
    out.append(("invariant (1 per 4 tags)", None, {}))
    out.append(("invariant (learning)", None, {"alpha": 0.001}))
    return out


def balances(n_tags: int, alpha: float = 0.0) -> InvariantDetector:
    """One balance per 4 tags: a level-like change over 300 ticks against a 300-tick mean of the others.

    With ``alpha`` > 0 each residual's baseline keeps learning after its warm-up, so a block takes
    the speculative path (learning guessed, then checked) instead of the plain cumulative sum."""
    tags = [f"T{j}" for j in range(n_tags)]
    invariants = [
        Invariant(
            f"b{j}",
            f"(T{j} - lag(T{j}, 300)) / 300 - avg(T{j + 1} - T{j + 2} + 0 * T{j + 3}, 300)",
            warmup=300,
            alpha=alpha,
        )
        for j in range(0, n_tags - 3, 4)
    ]
    return InvariantDetector(invariants, tags, TagLimits.unknown(n_tags))


def make(cls: type[Detector] | None, settings: dict[str, object], n_tags: int) -> Detector:
    if cls is None:
        return balances(n_tags, float(settings.get("alpha", 0.0)))  # type: ignore[arg-type]
    return build(cls, TagLimits.unknown(n_tags), **settings)


def replay_rate(cls: type[Detector] | None, settings: dict[str, object], n_tags: int) -> float:
    X = process(WARM_ROWS + TIMED_ROWS, n_tags)
    ts = np.arange(len(X), dtype=np.float64)
    valid = np.ones(X.shape, dtype=bool)
    times = []
    for _ in range(REPEATS):
        det = make(cls, settings, n_tags)
        det.run(X[:WARM_ROWS], ts[:WARM_ROWS], valid[:WARM_ROWS])
        start = time.perf_counter()
        for i in range(WARM_ROWS, len(X), FRAME):
            det.run(X[i : i + FRAME], ts[i : i + FRAME], valid[i : i + FRAME])
        times.append(time.perf_counter() - start)
    return TIMED_ROWS / statistics.median(times)


def live_cost(cls: type[Detector] | None, settings: dict[str, object], n_tags: int) -> float:
    X = process(WARM_ROWS + LIVE_TICKS, n_tags, seed=1)
    ts = np.arange(len(X), dtype=np.float64)
    valid = np.ones(X.shape, dtype=bool)
    extra = {"max_group_size": 64} if cls is not None and cls.multivariate else {}  # 1k tags: 16 models of 64
    det = make(cls, {**settings, **extra}, n_tags)
    det.run(X[:WARM_ROWS], ts[:WARM_ROWS], valid[:WARM_ROWS])
    start = time.perf_counter()
    for i in range(WARM_ROWS, len(X)):
        x, t, v = X[i], float(ts[i]), valid[i]  # one view each, as the bank passes: caches keyed on identity hit
        s = det.score(x, t, v)
        det.update(x, t, v, v & (s < 0.5))
    return 1e6 * (time.perf_counter() - start) / LIVE_TICKS


def main(argv: list[str] | None = None) -> None:
    only = set((argv if argv is not None else sys.argv[1:]) or [])  # detector labels to time; none: all
    print(f"replay: blocks of {FRAME} ticks, median of {REPEATS}; live: 1 tick per call, 1,000 tags")
    print(f"{'detector':<24} {'rows/s, 8 tags':>15} {'rows/s, 52 tags':>16} {'live us/tick, 1k tags':>22}")
    for label, cls, settings in variants():
        if only and label.split()[0] not in only:
            continue
        r8 = replay_rate(cls, settings, 8)
        r52 = replay_rate(cls, settings, 52)
        live = live_cost(cls, settings, 1000)
        print(f"{label:<24} {r8:>15,.0f} {r52:>16,.0f} {live:>22,.0f}")


if __name__ == "__main__":
    main()
