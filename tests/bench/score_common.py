"""What the dataset scoring scripts share: a config with settings changed, a table read into arrays,
a recording through the daemon's own detector bank and alert book, and point-wise metrics.

Not a pytest test and not a script; ``score_skab.py``, ``score_tep.py`` and
``score_batadal.py`` import it.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collector.alerts import AlertBook  # noqa: E402
from collector.config import PlantConfig, parse_config  # noqa: E402
from collector.detection import build_bank  # noqa: E402

FRAME = 600  # ticks per bank.run call, as a replay feeds frames


def apply_settings(config: str | Path, settings: list[str]) -> PlantConfig:
    """The config with ``detector.field=value`` settings written into ``detectors.defaults``."""
    path = Path(config)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    defaults = data.setdefault("detectors", {}).setdefault("defaults", {})
    for item in settings:
        key, _, value = item.partition("=")
        det, _, field = key.partition(".")
        defaults.setdefault(det, {})[field] = yaml.safe_load(value)
    return parse_config(data, path.parent)


def load_table(
    path: Path, columns: list[str], label_column: str | None, separator: str = ","
) -> tuple[np.ndarray, np.ndarray]:
    """Columns of a delimited file with a header, as float arrays (NaN where empty); and the label column."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=separator)
        header = [h.strip() for h in next(reader)]
        body = [row for row in reader if row]
    index = [header.index(c) for c in columns]
    raw = np.array([[row[i] if row[i].strip() else "nan" for i in index] for row in body], dtype=np.float64)
    label = np.full(len(body), np.nan)
    if label_column is not None:
        j = header.index(label_column)
        label = np.array([float(row[j]) for row in body])
    return raw, label


def bank_scores(cfg: PlantConfig, X: np.ndarray, tick_s: float) -> tuple[np.ndarray, list[str]]:
    """Scores (ticks, detectors, tags) of a fresh bank from ``cfg`` over ``X``, one tick per row."""
    bank = build_bank(cfg)
    ts = np.arange(len(X), dtype=np.float64) * tick_s
    valid = np.isfinite(X)
    out = np.empty((len(X), len(bank.names), X.shape[1]), dtype=np.float32)
    for i in range(0, len(X), FRAME):
        out[i : i + FRAME] = bank.run(X[i : i + FRAME], ts[i : i + FRAME], valid[i : i + FRAME])
    return out, list(bank.names)


def alarms_from_scores(
    scores: np.ndarray,
    names: list[str],
    cfg: PlantConfig,
    only: list[str] | None,
    tick_s: float,
    raw: bool = False,
) -> np.ndarray:
    """Per tick, whether an alert is firing after it: the daemon's alert book over the scores.

    With ``only``, the other detectors' scores are left out first; with ``raw``,
    a tick is an alarm when any score reaches the lowest severity threshold.
    """
    if only is not None:
        unknown = set(only) - set(names)
        if unknown:
            raise SystemExit(f"unknown detectors {sorted(unknown)}; the bank has {names}")
        scores = scores.copy()
        scores[:, [j for j, n in enumerate(names) if n not in only]] = 0.0
    a = cfg.alerting
    if raw:
        return scores.max(axis=(1, 2)) >= a.severities[0].threshold
    book = AlertBook(
        names,
        [t.name for t in cfg.tags],
        [(s.name, s.threshold) for s in a.severities],
        a.hysteresis,
        a.pending_s,
        a.clear_s,
    )
    ts = np.arange(len(scores), dtype=np.float64) * tick_s
    _, firing = book.update(ts, scores)
    return firing > 0


def binary_metrics(alarm: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """F1 of the positive class, FAR = FP/(FP+TN) and MAR = FN/(FN+TP), in %; TPR and TNR as fractions."""
    alarm, truth = np.asarray(alarm, dtype=bool), np.asarray(truth, dtype=bool)
    tp = float(np.sum(alarm & truth))
    fp = float(np.sum(alarm & ~truth))
    fn = float(np.sum(~alarm & truth))
    tn = float(np.sum(~alarm & ~truth))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    far = 100.0 * fp / (fp + tn) if fp + tn else 0.0
    mar = 100.0 * fn / (fn + tp) if fn + tp else 0.0
    return {"f1": f1, "far": far, "mar": mar, "tpr": 1 - mar / 100, "tnr": 1 - far / 100}
