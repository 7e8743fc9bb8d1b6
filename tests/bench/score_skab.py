"""SKAB with the leaderboard's protocol: point-wise F1, FAR and MAR over every experiment file, one config.

Not a pytest test (pytest ignores tests/bench). Run from the repository root:

    python tests/bench/score_skab.py [--config config/skab.yaml] [--detectors pca,ewma] [--set pca.limit_scale=2]
    python tests/bench/score_skab.py --detectors iforest      # the isolation forest alone (switched on)

Each file of ``valve1/``, ``valve2/`` and ``other/`` is played through a fresh
detector bank built from the config (the same ``build_bank`` the daemon uses),
one tick per row; the first 400 rows are the training part (the detectors
learn them; they are not scored), the rest is the test part. A row is an alarm
when an alert is firing after it: some (tag, detector) score at or above the
lowest severity threshold for ``alerting.pending_s`` ticks, cleared after
``alerting.clear_s`` ticks below threshold minus hysteresis (the alert book's
rules, at SKAB's 1 s per row). Metrics over all test rows together, as the
leaderboard computes them: F1 of the anomaly class, FAR = FP / (FP + TN),
MAR = FN / (FN + TP), and the same per subfolder (valve1, valve2, other), so
that a setting that only suits one kind of experiment shows. A detector named
in ``--detectors`` that the config leaves off (``iforest``, by default) is
switched on with the config's other settings for it. The published table from
the datasets README is printed beside.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_common import (  # noqa: E402
    alarms_from_scores,
    apply_settings,
    bank_scores,
    binary_metrics,
    load_table,
)

DATA = ROOT.parent / "shared" / "datasets" / "skab" / "data"
TRAIN_ROWS = 400
PUBLISHED = [  # from ../shared/datasets/README.md: algorithm, F1, FAR %, MAR %
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T-squared", 0.66, 19.21, 42.6),
    ("Isolation forest", 0.29, 2.56, 82.89),
]


def skab_files() -> list[Path]:
    return [p for sub in ("valve1", "valve2", "other") for p in sorted((DATA / sub).glob("*.csv"), key=_number)]


def _number(p: Path) -> int:
    return int(p.stem) if p.stem.isdigit() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "skab.yaml"))
    ap.add_argument("--detectors", default=None, help="comma list: count alarms of these detectors only")
    ap.add_argument("--set", action="append", default=[], help="detector.field=value on the defaults, repeatable")
    ap.add_argument("--per-file", action="store_true")
    ap.add_argument("--raw", action="store_true", help="alarm on any score >= 0.5, without the alert book")
    args = ap.parse_args()
    only = args.detectors.split(",") if args.detectors else None
    switched_on = [f"{name}.enabled=true" for name in only or [] if not _enabled(args.config, args.set, name)]
    cfg = apply_settings(args.config, [*switched_on, *args.set])
    tags = cfg.tags
    columns = [t.source_key for t in tags]
    alarms, labels = [], []
    by_folder: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    rows = 0
    started = time.perf_counter()
    for path in skab_files():
        X, label = load_table(path, columns, "anomaly", separator=";")
        scores, names = bank_scores(cfg, X, tick_s=1.0)
        alarm = alarms_from_scores(scores, names, cfg, only, tick_s=1.0, raw=args.raw)
        rows += len(X)
        test = slice(TRAIN_ROWS, None)
        alarms.append(alarm[test])
        labels.append(label[test] > 0.5)
        folder = by_folder.setdefault(path.parent.name, ([], []))
        folder[0].append(alarms[-1])
        folder[1].append(labels[-1])
        if args.per_file:
            m = binary_metrics(alarm[test], label[test] > 0.5)
            print(f"{path.parent.name}/{path.name}: F1 {m['f1']:.2f} FAR {m['far']:.1f} % MAR {m['mar']:.1f} %")
    elapsed = time.perf_counter() - started
    m = binary_metrics(np.concatenate(alarms), np.concatenate(labels))
    print(f"SKAB, {len(skab_files())} files, first {TRAIN_ROWS} rows of each for training, the rest scored")
    print(
        f"config {args.config} {' '.join([*switched_on, *args.set])}; "
        f"alarms of {', '.join(only) if only else 'every detector'}"
    )
    print(f"{'algorithm':<28} {'F1':>5} {'FAR %':>7} {'MAR %':>7}")
    print(f"{'plantwatch (this run)':<28} {m['f1']:>5.2f} {m['far']:>7.2f} {m['mar']:>7.2f}")
    for name, f1, far, mar in PUBLISHED:
        print(f"{name:<28} {f1:>5.2f} {far:>7.2f} {mar:>7.2f}")
    for folder, (a, t) in by_folder.items():
        f = binary_metrics(np.concatenate(a), np.concatenate(t))
        print(f"{'  ' + folder + ' only':<28} {f['f1']:>5.2f} {f['far']:>7.2f} {f['mar']:>7.2f}")
    print(f"({rows} rows in {elapsed:.1f} s, {rows / elapsed:,.0f} rows/s including parsing)")


def _enabled(config: str, settings: list[str], name: str) -> bool:
    """Whether detector ``name`` is on for some tag of the config (with the ``--set`` settings)."""
    from collector.detection import detector_params
    from detectors import DETECTORS

    if name not in DETECTORS:  # "invariant", or a typo that alarms_from_scores reports
        return True
    return bool(detector_params(apply_settings(config, settings), name)["enabled"].any())


if __name__ == "__main__":
    main()
