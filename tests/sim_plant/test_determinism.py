"""Same seed, same plant: arrays and recordings identical to the byte; another seed differs."""

from __future__ import annotations

import numpy as np
import pytest

from sim_plant.plants import PLANTS, Plant
from sim_plant.record import record


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_same_seed_same_arrays(cls: type[Plant]) -> None:
    a_true, a_meas = cls(seed=5).run(900)
    b_true, b_meas = cls(seed=5).run(900)
    assert np.array_equal(a_true, b_true)
    assert np.array_equal(a_meas, b_meas)


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_other_seed_differs(cls: type[Plant]) -> None:
    a_true, a_meas = cls(seed=5).run(300)
    b_true, b_meas = cls(seed=6).run(300)
    assert not np.array_equal(a_meas, b_meas)
    assert not np.array_equal(a_true, b_true), "process disturbances must depend on the seed too"


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_reading_does_not_change_the_run(cls: type[Plant]) -> None:
    """Servers poll at their own pace; that must not shift the random streams."""
    quiet, busy = cls(seed=2), cls(seed=2)
    for _ in range(200):
        quiet.step()
        busy.step()
        first = busy.measured()
        assert np.array_equal(first, busy.measured())
        busy.true_values()
    assert np.array_equal(quiet.measured(), busy.measured())


@pytest.mark.parametrize("name", PLANTS)
def test_same_seed_same_csv_bytes(name: str, tmp_path) -> None:
    a = record(PLANTS[name](seed=9), 600, tmp_path / "a.csv", include_true=True)
    b = record(PLANTS[name](seed=9), 600, tmp_path / "b.csv", include_true=True)
    c = record(PLANTS[name](seed=10), 600, tmp_path / "c.csv", include_true=True)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_returned_arrays_are_copies() -> None:
    plant = PLANTS["oil"](seed=1)
    values = plant.measured()
    values[:] = -1.0
    assert plant.measured()[0] != -1.0
