"""Helpers shared by the simulator tests."""

from __future__ import annotations

import numpy as np

from sim_plant.plants import Plant


def column(plant: Plant, rows: np.ndarray, tag: str) -> np.ndarray:
    """One tag's column of a ``run()`` result."""
    return rows[:, plant.index[tag]]


def twins(cls: type[Plant], seed: int, warmup: int) -> tuple[Plant, Plant]:
    """Two identical plants after ``warmup`` steps: change one, and the difference is the change's effect.

    Same seed, same number of steps, so both see the same disturbances and sensor noise.
    """
    a, b = cls(seed), cls(seed)
    a.run(warmup)
    b.run(warmup)
    return a, b
