"""Throughput of the univariate detector bank, against a bare numpy kernel and River.

Not a pytest test (pytest ignores tests/bench). Run from the repository root:

    python tests/bench/bench_bank.py

It prints, for 1k, 10k and 100k tags, the tag-samples per second of the whole
bank (every univariate detector in ``DETECTORS``, cusum switched on, all warm-ups done
before timing, one tick per ``bank.run`` call as the live pipeline does), the
bytes of state per tag, the same figure for a bare numpy kernel doing the
minimum of the same work, and River's per-sample z-score for reference.
Everything runs on one core: numpy's element-wise loops are single-threaded.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detectors import DETECTORS, DetectorBank  # noqa: E402
from detectors.checks import T0, build, stream_limits, tag_means  # noqa: E402

TAG_COUNTS = (1_000, 10_000, 100_000)
WARMUP_TICKS = 600  # past every warm-up (ewma/rate 60, cusum 120) and cusum's 1/alpha = 500 samples
TIMED_TICKS = 200
REPEATS = 3
BLOCK = 50  # distinct ticks of noise, replayed with advancing timestamps
REPLAY_FRAME = 50  # ticks per bank.run call when replaying a recording
RIVER_SAMPLES = 20_000

TARGET_RATE = 10e6  # tag-samples/s at 100k tags
TARGET_RATIO = 20.0  # bank / River
TARGET_STATE = 1024  # bytes per tag


def timed(fn: Callable[[], None], repeats: int = REPEATS) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


class Feed:
    """Noise around each tag's mean, replayed from a block, with timestamps 1 s apart."""

    def __init__(self, n_tags: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.X = tag_means(n_tags) + rng.standard_normal((BLOCK, n_tags))
        self.valid = np.ones((BLOCK, n_tags), dtype=bool)
        self.tick = 0

    def frames(self, ticks: int, frame: int):  # type: ignore[no-untyped-def]
        done = 0
        while done < ticks:
            i = self.tick % BLOCK
            k = min(frame, ticks - done, BLOCK - i)
            ts = T0 + np.arange(self.tick, self.tick + k, dtype=np.float64)
            yield self.X[i : i + k], ts, self.valid[i : i + k]
            self.tick += k
            done += k


# -- the bank ----------------------------------------------------------------------------------------
# The per-tag spine: the multivariate model, the replay watch (which batches blocks of ticks) and the
# command watch (for setpoints and states only) have their own bench, tests/bench/bench_detectors.py.
SPINE = {name: cls for name, cls in DETECTORS.items() if not cls.multivariate and name not in ("replay", "command")}


def make_bank(n_tags: int) -> DetectorBank:
    limits = stream_limits(n_tags)
    return DetectorBank([build(cls, limits) for cls in SPINE.values()])


def bench_bank(n_tags: int, frames: tuple[int, ...]) -> dict[str, object]:
    bank = make_bank(n_tags)
    feed = Feed(n_tags)
    t = time.perf_counter()
    for X, ts, v in feed.frames(WARMUP_TICKS, 1):
        bank.run(X, ts, v)
    warmup_s = time.perf_counter() - t
    assert all(w == n_tags for w in bank.warm_tags().values()), bank.warm_tags()
    result: dict[str, object] = {"warmup_rate": n_tags * WARMUP_TICKS / warmup_s}
    for frame in frames:

        def go(frame: int = frame) -> None:
            for X, ts, v in feed.frames(TIMED_TICKS, frame):
                bank.run(X, ts, v)

        go()  # settle allocator and caches at this frame size
        result[f"frame{frame}"] = [n_tags * TIMED_TICKS / s for s in timed(go)]
    state = bank.state_nbytes()
    held = sum(
        a.nbytes
        for d in bank.detectors
        for a in vars(d).values()
        if isinstance(a, np.ndarray) and a.shape[:1] == (n_tags,)
    )
    result["state_per_tag"] = state / n_tags
    result["held_per_tag"] = held / n_tags
    return result


# -- the bare numpy reference -----------------------------------------------------------------------
class BareKernel:
    """The least numpy can do for the same idea: EWMA z-score, two-sided CUSUM, min/max limits,
    flatline counter, all tags per tick, preallocated buffers, no masks, protection by one multiply."""

    def __init__(self, n: int, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        self.alpha, self.z_limit, self.k, self.h = 0.02, 5.0, 0.5, 12.0
        self.mean = mean.copy()
        self.var = np.ones(n)
        self.inv_sd = np.ones(n)
        self.s_hi = np.zeros(n)
        self.s_lo = np.zeros(n)
        self.prev = np.full(n, np.nan)
        self.held = np.zeros(n)
        self.lo, self.hi = lo, hi
        self.d, self.r, self.t = np.empty(n), np.empty(n), np.empty(n)
        self.flag, self.tmp, self.same = np.empty(n, bool), np.empty(n, bool), np.empty(n, bool)

    def step(self, x: np.ndarray) -> np.ndarray:
        d, r, t, flag, tmp = self.d, self.r, self.t, self.flag, self.tmp
        np.subtract(x, self.mean, out=d)
        np.multiply(d, self.inv_sd, out=r)  # z
        np.abs(r, out=t)
        np.greater(t, self.z_limit, out=flag)  # EWMA z-score
        np.add(self.s_hi, r, out=self.s_hi)  # CUSUM
        np.subtract(self.s_hi, self.k, out=self.s_hi)
        np.maximum(self.s_hi, 0.0, out=self.s_hi)
        np.subtract(self.s_lo, r, out=self.s_lo)
        np.subtract(self.s_lo, self.k, out=self.s_lo)
        np.maximum(self.s_lo, 0.0, out=self.s_lo)
        np.maximum(self.s_hi, self.s_lo, out=t)
        np.greater(t, self.h, out=tmp)
        flag |= tmp
        np.greater(x, self.hi, out=tmp)  # limits
        flag |= tmp
        np.less(x, self.lo, out=tmp)
        flag |= tmp
        np.equal(x, self.prev, out=self.same)  # flatline
        np.add(self.held, 1.0, out=self.held)
        np.multiply(self.held, self.same, out=self.held)
        np.copyto(self.prev, x)
        np.logical_not(flag, out=tmp)  # learn the unflagged samples only
        np.multiply(d, self.alpha, out=r)
        np.multiply(r, tmp, out=r)
        np.add(self.mean, r, out=self.mean)
        np.multiply(d, r, out=t)
        np.add(self.var, t, out=self.var)
        np.multiply(self.var, 1.0 - self.alpha, out=self.var)
        np.sqrt(self.var, out=t)
        np.divide(1.0, t, out=self.inv_sd)
        return flag


def bench_kernel(n_tags: int) -> list[float]:
    limits = stream_limits(n_tags)
    kernel = BareKernel(n_tags, tag_means(n_tags), limits.lo, limits.hi)
    feed = Feed(n_tags)
    for X, _, _ in feed.frames(BLOCK, BLOCK):
        for x in X:
            kernel.step(x)

    def go() -> None:
        for X, _, _ in feed.frames(TIMED_TICKS, BLOCK):
            for x in X:
                kernel.step(x)

    return [n_tags * TIMED_TICKS / s for s in timed(go)]


# -- River ------------------------------------------------------------------------------------------
def bench_river() -> dict[str, list[float]] | None:
    try:
        from river import anomaly, stats
    except ImportError:
        return None
    xs = (10.0 + np.random.default_rng(1).standard_normal(RIVER_SAMPLES)).tolist()

    def sad() -> None:
        model = anomaly.StandardAbsoluteDeviation(sub_stat=stats.Mean())
        for v in xs:
            model.score_one(None, v)
            model.learn_one(None, v)

    def ew_z() -> None:
        mean, var = stats.EWMean(fading_factor=0.02), stats.EWVar(fading_factor=0.02)
        for v in xs:
            sd = var.get() ** 0.5
            _ = abs(v - mean.get()) / sd if sd > 0 else 0.0
            mean.update(v)
            var.update(v)

    return {
        "sad": [RIVER_SAMPLES / s for s in timed(sad)],
        "ew": [RIVER_SAMPLES / s for s in timed(ew_z)],
    }


# -- report -----------------------------------------------------------------------------------------
def m(rate: float) -> str:
    return f"{rate / 1e6:8.2f} M"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    started = time.perf_counter()
    try:
        import river

        river_version = river.__version__
    except ImportError:
        river_version = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    print("plantwatch detector bank benchmark")
    print(f"python {platform.python_version()}, numpy {np.__version__}, river {river_version}, {cpu}")
    print(f"bank: {', '.join(SPINE)} (cusum enabled); {WARMUP_TICKS} warm-up ticks before timing;")
    print(f"timed: {TIMED_TICKS} ticks x {REPEATS} repeats, all samples valid and in range, one core")
    print()

    rows = {}
    for n in TAG_COUNTS:
        frames = (1, REPLAY_FRAME) if n == TAG_COUNTS[-1] else (1,)
        rows[n] = bench_bank(n, frames)
        rows[n]["kernel"] = bench_kernel(n)
    river_rates = bench_river()

    header = f"{'tags':>8} | {'bank best':>11} {'bank median':>11} | {'kernel best':>11} {'kernel med':>11} | "
    header += f"{'bank/kernel':>11} | {'state B/tag':>11} {'held B/tag':>10}"
    print("tag-samples per second (M = 1e6)")
    print(header)
    print("-" * len(header))
    for n, r in rows.items():
        bank, kernel = r["frame1"], r["kernel"]
        print(
            f"{n:>8,} | {m(max(bank)):>11} {m(statistics.median(bank)):>11} | "
            f"{m(max(kernel)):>11} {m(statistics.median(kernel)):>11} | "
            f"{max(bank) / max(kernel):>11.2f} | {r['state_per_tag']:>11.0f} {r['held_per_tag']:>10.0f}"
        )
    big = rows[TAG_COUNTS[-1]]
    replay = big[f"frame{REPLAY_FRAME}"]
    print()
    print(
        f"at {TAG_COUNTS[-1]:,} tags, {REPLAY_FRAME}-tick frames (replay): best {m(max(replay))}, "
        f"median {m(statistics.median(replay))} tag-samples/s (includes first-touching the "
        f"{REPLAY_FRAME * len(SPINE) * TAG_COUNTS[-1] * 4 / 1e6:.0f} MB score block)"
    )
    warm = m(big["warmup_rate"])
    print(f"at {TAG_COUNTS[-1]:,} tags during warm-up (learning, cusum not settled): {warm} tag-samples/s")
    print("state B/tag: bytes of state() per tag; held B/tag: every per-tag array the detectors hold")
    print("(state, parameters, caches, scratch)")

    print()
    best_bank = max(big["frame1"])
    if river_rates is None:
        print("River not installed (pip install river): no River reference")
        ratio = float("nan")
    else:
        sad, ew = river_rates["sad"], river_rates["ew"]
        print(f"River, per sample, {RIVER_SAMPLES:,} samples, best / median of {REPEATS}:")
        sad_rates = f"{m(max(sad))} / {m(statistics.median(sad))}"
        ew_rates = f"{m(max(ew))} / {m(statistics.median(ew))}"
        print(f"  anomaly.StandardAbsoluteDeviation score_one+learn_one: {sad_rates} samples/s")
        print(f"  stats.EWMean+EWVar z-score loop (hand-rolled):          {ew_rates} samples/s")
        ratio = best_bank / max(sad)
        median_ratio = statistics.median(big["frame1"]) / statistics.median(sad)
        print(f"  bank at {TAG_COUNTS[-1]:,} tags / River SAD:   {ratio:6.1f}x  (median/median {median_ratio:.1f}x)")
        print(f"  bank at {TAG_COUNTS[-1]:,} tags / River stats: {best_bank / max(ew):6.1f}x")
        print("  (the bank runs six detectors per tag-sample; River one z-score per sample)")

    state = big["state_per_tag"]
    print()
    print("targets")
    rate_goal = f">= {TARGET_RATE / 1e6:.0f} M tag-samples/s at {TAG_COUNTS[-1]:,} tags on one core:"
    print(f"  {rate_goal:<58} {best_bank / 1e6:6.2f} M  {verdict(best_bank >= TARGET_RATE)}")
    ratio_goal = f">= {TARGET_RATIO:.0f}x River (StandardAbsoluteDeviation):"
    print(f"  {ratio_goal:<58} {ratio:6.1f} x  {verdict(ratio >= TARGET_RATIO)}")
    state_goal = f"<= {TARGET_STATE} B of state per tag:"
    print(f"  {state_goal:<58} {state:6.0f} B  {verdict(state <= TARGET_STATE)}")
    print(f"\ntotal bench time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
