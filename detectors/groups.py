"""What the multivariate detectors (``pca``, ``iforest``) share: tags gathered into groups, one model each.

A group is a unit of the plant (one per source by default, see ``collector.detection``); its settings
are read from its first tag, and its learning mode is one of the detector's ``modes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import Detector, TagLimits


def make_groups(group: np.ndarray, enabled: np.ndarray, max_size: np.ndarray) -> list[np.ndarray]:
    """Tag indices of each group, in tag order, groups ordered by their first tag; big groups split."""
    out: list[np.ndarray] = []
    seen: dict[float, list[int]] = {}
    for i in np.flatnonzero(enabled):
        seen.setdefault(float(group[i]), []).append(int(i))
    for members in sorted(seen.values(), key=lambda m: m[0]):
        size = max(1, int(max_size[members[0]]))
        out.extend(np.array(members[j : j + size]) for j in range(0, len(members), size))
    return out


class GroupedModel(Detector):
    """A detector with one model per group of tags: ``groups``, each tag's group, and per-group settings."""

    modes: ClassVar[tuple[str, ...]]
    """The learning modes the detector knows; ``mode`` is stored as an index into them."""
    multivariate: ClassVar[bool] = True

    @classmethod
    def encode(cls, key: str, value: Any) -> float:
        return float(cls.modes.index(value)) if key == "mode" else super().encode(key, value)

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        p = self.params
        self.groups = make_groups(np.asarray(p["group"]), self.enabled, np.asarray(p["max_group_size"]))
        self._tag_group = np.full(self.n_tags, -1, dtype=np.intp)  # -1: in no group
        for g, m in enumerate(self.groups):
            self._tag_group[m] = g
        self._first = np.array([m[0] for m in self.groups], dtype=np.intp)

    def per_group(self, key: str) -> np.ndarray:
        """A setting per group, as its first tag has it."""
        return np.asarray(self.params[key], dtype=np.float64)[self._first]
