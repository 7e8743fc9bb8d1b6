"""The PCA process model beyond the shared suite: what only a multivariate model sees, naming the
tags that moved it, missing tags, the statistics against a plain reference, groups from the config,
and learning modes an attacker cannot poison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collector.config import parse_config
from collector.detection import build_bank, detector_params
from detectors import DETECTORS, TagLimits
from detectors.pca import PcaDetector

ROOT = Path(__file__).resolve().parents[2]
RECORDING = ROOT / "config" / "recordings" / "demo_tank_farm.csv"
WEIGHTS = np.array([1.0, 0.8, -0.6, 1.2])


def unit_process(n: int, seed: int = 0) -> np.ndarray:
    """Four tags driven by one slow load (AR(1)), each with its own sensor noise: a unit in miniature."""
    rng = np.random.default_rng(seed)
    load = np.zeros(n)
    shocks = rng.standard_normal(n) * 0.3
    for t in range(1, n):
        load[t] = 0.95 * load[t - 1] + shocks[t]
    return 10.0 + load[:, None] * WEIGHTS + rng.standard_normal((n, 4)) * 0.2


def pca(n_tags: int = 4, **settings: object) -> PcaDetector:
    det = PcaDetector.from_defaults(TagLimits.unknown(n_tags), enabled=True, **settings)
    assert isinstance(det, PcaDetector)
    return det


def ticks(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def test_broken_relation_inside_every_range_is_caught_and_named() -> None:
    """Tag 2 is spoofed: its level stays normal, but it stops following the load. Each tag alone
    looks normal to the EWMA z-score; the model sees the relation break and names tag 2."""
    X = unit_process(4000)
    spoof = slice(3000, 3300)
    X[spoof, 2] = X[spoof, 2].mean() - (X[spoof, 2] - X[spoof, 2].mean())  # the same swings, mirrored
    det = pca()
    scores = det.run(X, ticks(len(X)))
    ewma = DETECTORS["ewma"].from_defaults(TagLimits.unknown(4)).run(X, ticks(len(X)))
    assert (ewma[spoof] >= 0.5).mean() < 0.02, "the univariate z-score should not see this"
    flagged = scores[spoof].max(axis=1) >= 0.5
    assert flagged.mean() > 0.3  # the mirror image is right whenever the load is near its mean
    top = scores[spoof][flagged].argmax(axis=1)
    assert (top == 2).mean() > 0.8, np.bincount(top, minlength=4)
    assert (scores[1000:3000].max(axis=1) >= 0.5).mean() < 0.01


def test_statistics_match_a_plain_pca_reference() -> None:
    """T² and Q from a baseline fitted on a recording equal the textbook computation."""
    X = unit_process(3000, seed=1)
    train, test = X[:2000], X[2000:]
    det = pca(variance=0.9)
    det.fit(train)
    got = det.group_statistics(test)
    mean, sd = train.mean(axis=0), train.std(axis=0)
    Z = (test - mean) / sd
    eig, vec = np.linalg.eigh(np.corrcoef(train, rowvar=False))
    eig, vec = eig[::-1], vec[:, ::-1]
    k = int(np.searchsorted(np.cumsum(eig) / eig.sum(), 0.9) + 1)
    T = Z @ vec[:, :k]
    np.testing.assert_allclose(got["t2"][:, 0], (T * T / eig[:k]).sum(axis=1), rtol=1e-8)
    E = Z - T @ vec[:, :k].T
    np.testing.assert_allclose(got["q"][:, 0], (E * E).sum(axis=1), rtol=1e-6, atol=1e-12)
    assert (got["t2"][:, 0] > got["t2_limit"][0]).mean() < 0.01


def test_missing_tags_are_imputed_not_alarmed() -> None:
    """Holes in one tag: the other tags keep their scores sound, the missing one scores 0."""
    X = unit_process(4000, seed=2)
    valid = np.ones(X.shape, dtype=bool)
    rng = np.random.default_rng(3)
    valid[2000:, 1] = rng.random(2000) > 0.3
    X[~valid] = np.nan
    det = pca()
    scores = det.run(X, ticks(len(X)), valid)
    assert np.isfinite(scores).all()
    assert (scores[2000:][~valid[2000:]] == 0).all()
    assert (scores[2000:].max(axis=1) >= 0.5).mean() < 0.01
    # and a real fault on another tag is still seen while tag 1 has holes
    X[3500:3600, 3] += 3.0
    faulted = pca().run(X, ticks(len(X)), valid)
    assert (faulted[3500:3600, 3] >= 0.5).mean() > 0.8


@pytest.mark.parametrize("width", [4, 52])
def test_scores_are_batched_and_equal_tick_by_tick_through_refits(width: int) -> None:
    """At SKAB's and TEP's widths, with holes and smoothing: a block is its ticks, bit for bit."""
    rng = np.random.default_rng(4)
    X = np.tile(unit_process(1500, seed=4), (1, width // 4)) + rng.standard_normal((1500, width)) * 0.1
    valid = rng.random(X.shape) > 0.02
    X[~valid] = np.nan
    settings = {"warmup": 200, "refit_every": 50, "smoothing": 0.2}
    batch = pca(width, **settings).run(X, ticks(len(X)), valid)
    det = pca(width, **settings)
    rows = np.empty_like(X)
    for i in range(len(X)):
        rows[i] = det.score(X[i], float(i), valid[i])
        det.update(X[i], float(i), valid[i], valid[i] & (rows[i] < 0.5))
    assert np.array_equal(batch, rows)
    assert det.fitted[0] > 300  # it did refit after the first fit


def test_slow_ramp_does_not_drag_the_protected_baseline() -> None:
    """An attacker ramps tag 1 by 8 sd over 6000 ticks. An always-learning model follows him and
    goes quiet; the protecting one refuses to move past ``max_drift`` and keeps flagging."""
    n_base, n_ramp, n_hold = 3000, 6000, 1000
    X = unit_process(n_base + n_ramp + n_hold)
    sd = X[:n_base, 1].std()
    X[:, 1] += np.r_[np.zeros(n_base), np.linspace(0.0, 8.0 * sd, n_ramp), np.full(n_hold, 8.0 * sd)]
    baseline = X[:n_base, 1].mean()
    end = slice(-n_hold, None)
    naive, protected = pca(mode="learning"), pca(mode="protecting")
    naive_scores = naive.run(X, ticks(len(X)))
    protected_scores = protected.run(X, ticks(len(X)))
    assert (protected_scores[end].max(axis=1) >= 0.5).mean() > 0.95
    assert (naive_scores[end].max(axis=1) >= 0.5).mean() < 0.05
    assert abs(protected.fit_mean[0, 1] - baseline) < (protected.params["max_drift"][0] + 0.5) * sd
    assert abs(naive.fit_mean[0, 1] - baseline) > 6.0 * sd
    # frozen never moves at all after its warm-up
    frozen = pca(mode="frozen")
    frozen.run(X, ticks(len(X)))
    assert frozen.fitted[0] == 300


def test_groups_default_to_one_model_per_source_and_follow_overrides(tmp_path: Path) -> None:
    tags_a = [{"name": f"TK10{i}.LEVEL"} for i in range(3)]
    tags_b = [{"name": f"FT20{i}.FLOW"} for i in range(2)]
    doc = {
        "site": "unit",
        "state_dir": "state",
        "sources": [
            {"name": "a", "kind": "replay", "path": str(RECORDING), "tags": tags_a},
            {"name": "b", "kind": "replay", "path": str(RECORDING), "tags": tags_b},
        ],
        "detectors": {"defaults": {"pca": {"enabled": True, "mode": "frozen"}}},
    }
    cfg = parse_config(doc, tmp_path)
    det = next(d for d in build_bank(cfg).detectors if d.name == "pca")
    assert [m.tolist() for m in det.groups] == [[0, 1, 2], [3, 4]]
    assert (detector_params(cfg, "pca")["mode"] == 2.0).all()
    doc["detectors"]["overrides"] = [{"tags": ["TK100.*", "FT*"], "pca": {"group": 7}}]
    det = next(d for d in build_bank(parse_config(doc, tmp_path)).detectors if d.name == "pca")
    assert sorted(m.tolist() for m in det.groups) == [[0, 3, 4], [1, 2]]


@pytest.mark.parametrize("size", [3, 64])
def test_big_groups_are_split(size: int) -> None:
    det = pca(n_tags=10, max_group_size=size)
    assert sum(len(m) for m in det.groups) == 10
    assert max(len(m) for m in det.groups) == min(size, 10)


def test_switched_off_everywhere_scores_nothing() -> None:
    """The default: no tag enabled, no group, zeros (and no error) live and in blocks."""
    det = PcaDetector.from_defaults(TagLimits.unknown(3))
    X = unit_process(50)[:, :3]
    assert not det.groups
    assert (det.run(X, ticks(50)) == 0).all()
    v = np.ones(3, dtype=bool)
    assert (det.score(X[0], 0.0, v) == 0).all()
    det.update(X[0], 0.0, v, v)
    assert det.state_nbytes() == sum(a.nbytes for a in det.state().values())
