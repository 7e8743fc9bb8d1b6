"""What every plant model promises: honest ranges, exact statuses, working inputs."""

from __future__ import annotations

import numpy as np
import pytest

from sim_plant.plants import PLANTS, Plant

HOUR = 3600


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_normal_hour_stays_in_catalog_ranges(cls: type[Plant], seed: int) -> None:
    """A healthy hour under control stays in every tag's [lo, hi]; noise may poke out, rarely."""
    true, measured = cls(seed).run(HOUR)
    lo = np.array([t.lo for t in cls.TAGS])
    hi = np.array([t.hi for t in cls.TAGS])
    assert np.isfinite(measured).all() and np.isfinite(true).all()
    outside = ((measured < lo) | (measured > hi)).mean(axis=0)
    worst = {t.name: round(f, 4) for t, f in zip(cls.TAGS, outside, strict=True) if f > 0.001}
    assert not worst, f"tags out of their normal range more than 0.1 % of the time: {worst}"
    assert ((true >= lo) & (true <= hi)).all(), "the noise-free process must never leave a normal range"


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_statuses_and_setpoints_are_exact(cls: type[Plant]) -> None:
    plant = cls(3)
    _, measured = plant.run(300)
    for i, spec in enumerate(cls.TAGS):
        if spec.role == "status":
            assert set(np.unique(measured[:, i])) <= {0.0, 1.0}
        if spec.role == "setpoint":
            assert (measured[:, i] == plant.setpoints[spec.name]).all()


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_sensor_noise_matches_the_catalog(cls: type[Plant]) -> None:
    true, measured = cls(4).run(HOUR)
    noise = measured - true
    for i, spec in enumerate(cls.TAGS):
        if spec.counts_per_unit is None and spec.min_reading is None:
            assert noise[:, i].std() == pytest.approx(spec.noise_sd, rel=0.1, abs=1e-12), spec.name


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_a_tampered_setpoint_is_served_and_followed(cls: type[Plant]) -> None:
    plant = cls(1)
    name = next(iter(cls.SETPOINTS))
    spec = cls.TAGS[plant.index[name]]
    plant.setpoints[name] = spec.hi
    plant.step()
    assert plant.measured()[plant.index[name]] == spec.hi
    before = plant.true_values()
    plant.run(600)
    moved = plant.true_values() != before
    actuators = [i for i, t in enumerate(cls.TAGS) if t.role == "actuator" and t.loop == spec.loop]
    assert moved[actuators].any(), "the loop's actuator must react"


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_unknown_inputs_are_refused(cls: type[Plant]) -> None:
    plant = cls(0)
    plant.actuator_overrides["NO.SUCH_TAG"] = 1.0
    with pytest.raises(KeyError, match=r"NO\.SUCH_TAG"):
        plant.step()
    plant = cls(0)
    measurement = next(t.name for t in cls.TAGS if t.role == "measurement")
    plant.actuator_overrides[measurement] = 1.0  # sensors are spoofed elsewhere, not in the plant
    with pytest.raises(KeyError):
        plant.step()
    plant = cls(0)
    plant.setpoints["NOT.A_SETPOINT"] = 1.0
    with pytest.raises(KeyError):
        plant.step()


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_clock(cls: type[Plant]) -> None:
    plant = cls(0)
    assert plant.t == 0.0 and plant.dt > 0
    plant.run(10)
    assert plant.steps == 10 and plant.t == pytest.approx(10 * plant.dt)
