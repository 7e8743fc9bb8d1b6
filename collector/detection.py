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
from detectors import DETECTORS, DetectorBank, TagLimits


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
        sources = np.asarray(cfg.tag_sources(), dtype=np.float64)
        unset = arrays["group"] == -1.0
        arrays["group"][unset] = -1.0 - sources[unset]
    return arrays


def build_bank(cfg: PlantConfig) -> DetectorBank:
    limits = tag_limits(cfg)
    detectors = [cls(detector_params(cfg, name), limits) for name, cls in DETECTORS.items()]
    return DetectorBank(
        detectors, protect_threshold=cfg.detectors.protect_threshold, protection=cfg.detectors.protection
    )
