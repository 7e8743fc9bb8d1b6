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
    tags = cfg.tags
    names = [t.name for t in tags]
    n = len(tags)
    defaults = getattr(cfg.detectors.defaults, name).model_dump()
    arrays = {k: np.full(n, np.nan if v is None else float(v)) for k, v in defaults.items()}
    for override in cfg.detectors.overrides:
        part = getattr(override, name)
        if part is None:
            continue
        matched = sorted(
            {i for pattern in override.tags for i, tag in enumerate(names) if fnmatch.fnmatch(tag, pattern)}
        )
        for key, value in overridden(part).items():
            arrays[key][matched] = float(value)
    for j, tag in enumerate(tags):
        for key, value in overridden(getattr(tag.detectors, name)).items():
            arrays[key][j] = float(value)
    return arrays


def build_bank(cfg: PlantConfig) -> DetectorBank:
    limits = tag_limits(cfg)
    detectors = [cls(detector_params(cfg, name), limits) for name, cls in DETECTORS.items()]
    return DetectorBank(
        detectors, protect_threshold=cfg.detectors.protect_threshold, protection=cfg.detectors.protection
    )
