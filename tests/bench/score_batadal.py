"""BATADAL (C-Town): the attacks of dataset04 caught, and the false alarms on dataset03's normal year.

Not a pytest test (pytest ignores tests/bench). Run from the repository root:

    python tests/bench/score_batadal.py [--config config/batadal.yaml] [--detectors pca] [--set pca.smoothing=0.2]

One detector bank from the config plays dataset03 (a year of normal
operation, hourly) and then dataset04 (six months with attacks) as one
stream: the first ``--train`` hours of dataset03 are its warm-up, the rest of
dataset03 measures false alarms, dataset04 measures detection. A row is an
alarm when an alert is firing after it (the config's alert book). Reported:

- per labelled attack (a run of ``ATT_FLAG == 1`` hours): detected or not,
  and hours from its start to the first alarm inside it;
- false alarm rate on dataset03 after warm-up (dataset04 labels no row
  normal: its rows are 1 or -999, unknown, and those are not scored);
- the competition's score S = 0.5 S_TTD + 0.5 S_CM, with S_TTD = mean over
  attacks of 1 - TTD / duration (0 when missed) and S_CM = (TPR + TNR) / 2,
  TPR over dataset04's attack rows and TNR over dataset03 after warm-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_common import ROOT, alarms_from_scores, apply_settings, bank_scores, load_table

DATA = ROOT.parent / "shared" / "datasets" / "batadal"
TICK_S = 3600.0


def episodes(flag: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of attack rows."""
    edges = np.diff(np.r_[0, flag.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "batadal.yaml"))
    ap.add_argument("--detectors", default=None, help="comma list: count alarms of these detectors only")
    ap.add_argument("--set", action="append", default=[], help="detector.field=value on the defaults, repeatable")
    ap.add_argument("--train", type=int, default=24 * 60, help="hours of dataset03 that only warm up")
    args = ap.parse_args()
    cfg = apply_settings(args.config, args.set)
    only = args.detectors.split(",") if args.detectors else None
    columns = [t.source_key for t in cfg.tags]
    X3, _ = load_table(DATA / "BATADAL_dataset03.csv", columns, "ATT_FLAG")
    X4, flag4 = load_table(DATA / "BATADAL_dataset04.csv", columns, "ATT_FLAG")
    scores, names = bank_scores(cfg, np.vstack([X3, X4]), TICK_S)
    alarm = alarms_from_scores(scores, names, cfg, only, TICK_S)
    a3, a4 = alarm[args.train : len(X3)], alarm[len(X3) :]
    attack = flag4 == 1
    tpr = float(a4[attack].mean())
    tnr = 1.0 - float(a3.mean())
    shown = scores if only is None else np.where(np.isin(names, only)[None, :, None], scores, 0.0)
    print(
        f"BATADAL: config {args.config} {' '.join(args.set)}; alarms of {', '.join(only) if only else 'every detector'}"
    )
    print(f"warm-up {args.train} h of dataset03; false alarms on the other {len(a3)} h: {100 * a3.mean():.2f} %")
    s_ttd = []
    for k, (start, stop) in enumerate(episodes(attack), 1):
        hit = np.flatnonzero(a4[start:stop])
        detected = hit.size > 0
        ttd = int(hit[0]) if detected else None
        s_ttd.append(1.0 - ttd / (stop - start) if detected else 0.0)
        caught = f"detected after {ttd} h" if detected else "MISSED"
        top = ""
        if detected:
            cell = shown[len(X3) + start + hit[0]]
            d, t = np.unravel_index(int(np.argmax(cell)), cell.shape)
            top = f" (first by {names[d]} on {cfg.tags[t].name})"
        print(f"  attack {k}: rows {start}-{stop - 1} ({stop - start} h): {caught}{top}")
    s_cm = (tpr + tnr) / 2
    print(
        f"attack hours flagged (TPR) {tpr:.3f}, TNR (dataset03) {tnr:.3f}; "
        f"S_TTD {np.mean(s_ttd):.3f}, S_CM {s_cm:.3f}, S {0.5 * np.mean(s_ttd) + 0.5 * s_cm:.3f}"
    )


if __name__ == "__main__":
    main()
