"""Turning the config's detector settings into per-tag parameter arrays and a bank.

Settings resolve per tag in this order, later winning: the defaults, each
matching entry of ``detectors.overrides`` (glob patterns on tag names) in
file order, then the tag's own ``detectors`` block. This runs once at start,
so its Python loops are over config entries, never over samples.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from collector.config import PlantConfig
from collector.detector_settings import overridden
from detectors import DETECTORS, Detector, DetectorBank, TagLimits
from detectors.invariants import Invariant, InvariantDetector


def tag_limits(cfg: PlantConfig) -> TagLimits:
    tags = cfg.tags

    def column(pick) -> np.ndarray:  # type: ignore[no-untyped-def]
        return np.array([np.nan if pick(t) is None else pick(t) for t in tags], dtype=np.float64)

    return TagLimits(
        lo=column(lambda t: t.range[0] if t.range else None),
        hi=column(lambda t: t.range[1] if t.range else None),
        lolo=column(lambda t: t.alarm_range[0] if t.alarm_range else None),
        hihi=column(lambda t: t.alarm_range[1] if t.alarm_range else None),
        discrete=np.array([t.type == "discrete" for t in tags], dtype=bool),
    )


def detector_params(cfg: PlantConfig, name: str) -> dict[str, np.ndarray]:
    cls = DETECTORS[name]
    tags = cfg.tags
    names = [t.name for t in tags]
    n = len(tags)
    defaults = getattr(cfg.detectors.defaults, name).model_dump()
    arrays = {k: np.full(n, cls.encode(k, v)) for k, v in defaults.items()}
    for override in cfg.detectors.overrides:
        part = getattr(override, name)
        if part is None:
            continue
        matched = sorted(
            {i for pattern in override.tags for i, tag in enumerate(names) if fnmatch.fnmatch(tag, pattern)}
        )
        for key, value in overridden(part).items():
            arrays[key][matched] = cls.encode(key, value)
    for j, tag in enumerate(tags):
        for key, value in overridden(getattr(tag.detectors, name)).items():
            arrays[key][j] = cls.encode(key, value)
    if "group" in arrays:
        # A multivariate detector's default grouping: one model per source (a PLC, a unit's server),
        # as source -1, -2, ... so that a config that only lists tags gets a model per unit.
        sources = np.asarray(cfg.tag_units(), dtype=np.float64)
        unset = arrays["group"] == -1.0
        arrays["group"][unset] = -1.0 - sources[unset]
    return arrays


def invariants(cfg: PlantConfig) -> list[Invariant]:
    """The config's invariants, each score capped just under the severity above the one it may raise."""
    thresholds = {s.name: i for i, s in enumerate(cfg.alerting.severities)}
    levels = [s.threshold for s in cfg.alerting.severities]
    out = []
    for inv in cfg.invariants:
        rank = thresholds.get(inv.severity, len(levels) - 1) if inv.severity else len(levels) - 1
        cap = levels[rank + 1] - 1e-4 if rank + 1 < len(levels) else 1.0
        settings = inv.model_dump(exclude={"severity"})
        out.append(Invariant(**settings, max_score=cap))
    return out


def build_bank(cfg: PlantConfig) -> DetectorBank:
    limits = tag_limits(cfg)
    detectors: list[Detector] = [cls(detector_params(cfg, name), limits) for name, cls in DETECTORS.items()]
    if cfg.invariants:  # one more detector, "invariant", scoring the tags of each broken relation
        detectors.append(InvariantDetector(invariants(cfg), [t.name for t in cfg.tags], limits))
    return DetectorBank(
        detectors, protect_threshold=cfg.detectors.protect_threshold, protection=cfg.detectors.protection
    )
