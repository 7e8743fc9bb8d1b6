"""The PCA process model beyond the shared suite: what only a multivariate model sees, naming the
tags that moved it, missing tags, the statistics against a plain reference, groups from the config,
and learning modes an attacker cannot poison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from collector.config import load_config, parse_config
from collector.detection import build_bank, detector_params
from collector.replay import replay
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
    det = pca(calibration=1.0, smoothing=1.0)  # what the model sees at its analytic limits, tick by tick
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
    assert frozen.fitted[0] == frozen.params["warmup"][0]


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
    """Switched off on every tag: no group, zeros (and no error) live and in blocks."""
    det = PcaDetector.from_defaults(TagLimits.unknown(3), enabled=False)
    X = unit_process(50)[:, :3]
    assert not det.groups
    assert (det.run(X, ticks(50)) == 0).all()
    v = np.ones(3, dtype=bool)
    assert (det.score(X[0], 0.0, v) == 0).all()
    det.update(X[0], 0.0, v, v)
    assert det.state_nbytes() == sum(a.nbytes for a in det.state().values())


def test_explain_names_the_tag_that_broke_the_relation() -> None:
    """A bias on one tag, inside its range, breaks its relation to the load: the model keeps flagging
    it (it is not learned away), and the reason gives the group's T² and Q over their limits and names
    that tag first, with its share."""
    X = unit_process(3300, seed=5)
    X[3000:, 1] += 1.5  # a few sd of noise, well inside the load's swing
    names = ["FT101.FLOW", "FT102.FLOW", "PT101.PRESSURE", "P101.POWER"]
    det = pca()
    det.run(X[:3000], ticks(3000))
    learned = det.fit_mean[0].copy()
    scores = det.run(X[3000:], ticks(300) + 3000.0)  # explain's rows are this block's
    flagged = np.flatnonzero(scores.max(axis=1) >= 0.5)
    assert flagged.size > 200
    assert abs(det.fit_mean[0, 1] - learned[1]) < 0.1, "only ticks well inside the limits teach the model"
    row = int(flagged[0])
    reasons = det.explain(row, np.arange(4), scores[row], names)
    assert len(set(reasons)) == 1  # one model, one reason for each of its tags
    reason = reasons[0]
    assert reason is not None and reason.startswith("pca model of source 0 "), reason
    assert det._detail is not None
    t2, q = det._detail.ratios[row, 0]
    assert q > 1.0 > t2
    assert f"x limit (T2 {t2:.1f}x, Q {q:.1f}x at this tick); FT102.FLOW " in reason
    assert int(reason.split("FT102.FLOW ")[1].split(" %")[0]) > 50
    # the same words when the ticks come one by one, as live (the daemon and replay agree)
    live = pca()
    valid = np.ones(4, dtype=bool)
    for i in range(3000 + row + 1):
        s = live.score(X[i], float(i), valid)
        live.update(X[i], float(i), valid, s < 0.5)
    assert live.explain(0, np.arange(4), s, names) == reasons
    # a model still warming up explains nothing
    assert pca().explain(0, np.arange(4), np.zeros(4), names) == [None] * 4


def test_replayed_alert_says_which_tag_broke_the_relation(tmp_path: Path) -> None:
    """Through the daemon's replay path: the demo's spoofed discharge pressure (inside its range,
    no longer following the pump) fires a PCA alert whose journaled reason names it first."""
    result = replay(load_config(ROOT / "config" / "demo.yaml"), RECORDING, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    fired = [r for r in records if r["detector"] == "pca" and r["event"] == "firing"]
    assert [r["tag"] for r in fired] == ["PT101.PRESSURE"], fired
    reason = fired[0]["reason"]
    assert reason.startswith("pca model of source 0 ") and "x limit (T2 " in reason, reason
    assert reason.split("; ")[1].startswith("PT101.PRESSURE "), reason
    card = result.scorecard
    assert card is not None and "pca" in card.steps[0].detectors


def test_a_healthy_plant_raises_no_pca_alert_with_the_defaults(tmp_path: Path) -> None:
    """Three hours of the simulated reactor, its operating point wandering as it does (feed and
    coolant temperatures over half an hour, the feed header by the minute), through its shipped
    config: the model warms up, keeps learning, and raises nothing. The detector's default off-switch
    came from exactly this plant's false alerts."""
    from sim_plant.plants import PLANTS
    from sim_plant.record import record

    cfg = load_config(ROOT / "config" / "chemical.yaml")
    assert build_bank(cfg).enabled_tags()["pca"] == 13  # every analog tag but the three setpoints
    recording = record(PLANTS["chemical"](seed=2), 3 * 3600, tmp_path / "healthy.csv")
    result = replay(cfg, recording, tmp_path / "out", progress=False)
    pca_alerts = [t for t in result.trace.transitions if t.detector == "pca"]
    assert pca_alerts == []
    assert result.trace.worst.max() < 0.5  # nor anything else
