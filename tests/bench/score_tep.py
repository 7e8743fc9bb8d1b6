"""Tennessee Eastman (Braatz training files): detection rate per fault, plantwatch's PCA beside a plain PCA T²/Q.

Not a pytest test (pytest ignores tests/bench). Run from the repository root:

    python tests/bench/score_tep.py [--set pca.smoothing=0.3] [--train 300]

Normal data: ``d00.dat`` (stored transposed: 52 rows of 500). Its first
``--train`` rows train both models; the remaining rows are the normal hold-out
on which the false alarm rate is measured. Every fault file ``d01`` ... ``d21``
(480 rows, the fault active throughout) is then played after the training rows
through a fresh detector bank: the config is ``config/tep.yaml``'s detector
settings over all 52 variables (the config itself lists 12), with the PCA
detector switched on, frozen after training (a fault run must not teach it).

Two operating points for each method:

- its own control limits (plantwatch: a PCA score >= 0.5; baseline: T² or Q
  above its 99 % limit, F and Box/chi-square as in the detector);
- thresholds calibrated so the false alarm rate on the normal hold-out is at
  most 5 % (the quantile of each method's statistic on the hold-out).

Faults 3, 9 and 15 are known to be nearly undetectable from the data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_common import ROOT, bank_scores

from collector.config import PlantConfig, parse_config

DATA = ROOT.parent / "shared" / "datasets" / "tep"
TICK_S = 180.0
FAR_TARGET = 0.05


def tep_config(settings: list[str]) -> PlantConfig:
    path = ROOT / "config" / "tep.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    names = [f"XMEAS_{i:02d}" for i in range(1, 42)] + [f"XMV_{i:02d}" for i in range(1, 12)]
    data["sources"][0]["tags"] = [{"name": n, "column": str(i + 1)} for i, n in enumerate(names)]
    defaults = data.setdefault("detectors", {}).setdefault("defaults", {})
    defaults["pca"] = {**defaults.get("pca", {}), "enabled": True, "mode": "frozen"}
    for item in settings:
        key, _, value = item.partition("=")
        det, _, field = key.partition(".")
        defaults.setdefault(det, {})[field] = yaml.safe_load(value)
    return parse_config(data, path.parent)


def classic_pca(train: np.ndarray, variance: float, confidence: float):  # type: ignore[no-untyped-def]
    """Textbook PCA on standardized data: returns a function rows -> (T², Q) and the two limits."""
    mean, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
    Z = (train - mean) / sd
    eig, vec = np.linalg.eigh(np.cov(Z, rowvar=False))
    eig, vec = eig[::-1], vec[:, ::-1]
    k = int(np.searchsorted(np.cumsum(eig) / eig.sum(), variance) + 1)
    n = len(train)
    t2_lim = k * (n * n - 1) / (n * (n - k)) * stats.f.ppf(confidence, k, n - k)
    res = eig[k:]
    theta1, theta2 = res.sum(), (res * res).sum()
    q_lim = theta2 / theta1 * stats.chi2.ppf(confidence, theta1 * theta1 / theta2)
    P = vec[:, :k]

    def stat(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Zr = (rows - mean) / sd
        T = Zr @ P
        E = Zr - T @ P.T
        return (T * T / eig[:k]).sum(axis=1), (E * E).sum(axis=1)

    return stat, t2_lim, q_lim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], help="detector.field=value on the defaults, repeatable")
    ap.add_argument("--train", type=int, default=300, help="rows of d00 that train; the rest is the hold-out")
    ap.add_argument("--variance", type=float, default=0.9, help="baseline PCA: share of variance kept")
    args = ap.parse_args()
    normal = np.loadtxt(DATA / "d00.dat").T
    train, holdout = normal[: args.train], normal[args.train :]
    cfg = tep_config([f"pca.warmup={args.train}", *args.set])
    names: list[str] = []

    def ours(rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows`` (after training), the PCA detector's worst tag statistic (1.0 = limit)."""
        nonlocal names
        scores, names = bank_scores(cfg, np.vstack([train, rows]), TICK_S)
        pca = scores[args.train :, names.index("pca")].astype(np.float64).max(axis=1)
        return -np.log2(np.maximum(1.0 - pca, 1e-300))

    baseline, t2_lim, q_lim = classic_pca(train, args.variance, 0.99)

    def base_stat(rows: np.ndarray) -> np.ndarray:
        t2, q = baseline(rows)
        return np.maximum(t2 / t2_lim, q / q_lim)

    ours_normal, base_normal = ours(holdout), base_stat(holdout)
    ours_cut = np.quantile(ours_normal, 1 - FAR_TARGET)
    base_cut = np.quantile(base_normal, 1 - FAR_TARGET)
    print(f"TEP: d00 rows 0-{args.train - 1} train, {len(holdout)} normal rows hold out; settings {args.set}")
    print(
        f"false alarms on the hold-out at own limits: plantwatch {100 * (ours_normal >= 1).mean():.1f} %, "
        f"PCA T²/Q 99 % {100 * (base_normal >= 1).mean():.1f} %"
    )
    head = f"{'plantwatch':>10} {'PCA T²/Q':>9}"
    print(f"{'fault':>5} | {head} (own limits) | {head} (FAR <= 5 %)")
    totals = np.zeros(4)
    count = 0
    for f in range(1, 22):
        rows = np.loadtxt(DATA / f"d{f:02d}.dat")
        o, b = ours(rows), base_stat(rows)
        rates = np.array([(o >= 1).mean(), (b >= 1).mean(), (o > ours_cut).mean(), (b > base_cut).mean()])
        if f not in (3, 9, 15):
            totals += rates
            count += 1
        print(
            f"{f:>5} | {100 * rates[0]:>9.1f}% {100 * rates[1]:>8.1f}%              | "
            f"{100 * rates[2]:>9.1f}% {100 * rates[3]:>8.1f}%"
        )
    avg = 100 * totals / count
    print(
        f"{'mean':>5} | {avg[0]:>9.1f}% {avg[1]:>8.1f}%              | {avg[2]:>9.1f}% {avg[3]:>8.1f}%"
        "   (mean over the 18 faults other than 3, 9, 15)"
    )


if __name__ == "__main__":
    main()
