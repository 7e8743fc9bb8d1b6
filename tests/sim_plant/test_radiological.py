"""Radiological: pool heat and water balances, cooling control, and what the monitors count."""

from __future__ import annotations

import numpy as np
import pytest

from sim_plant.plants.radiological import AREA, FUEL_TOP, MONITOR_MAX, RHO_CP, RadiologicalPlant
from tests.sim_plant.conftest import column, twins

MONITORS = ("RM301.DOSE_RATE", "RM302.DOSE_RATE", "RM303.DOSE_RATE", "RM310.STACK")


def mean(plant: RadiologicalPlant, rows: np.ndarray, tag: str) -> float:
    return float(column(plant, rows, tag).mean())


def test_dose_rate_rises_as_the_pool_level_falls() -> None:
    normal, leaking = twins(RadiologicalPlant, seed=1, warmup=600)
    leaking.pool_leak_m3h = 30.0  # three times what the makeup can give
    _, before = leaking.run(600)
    leaking.run(2 * 3600)
    true, after = leaking.run(600)
    drop = 11.8 - mean(leaking, true, "LT301.POOL_LEVEL")
    assert 0.4 < drop < 0.7
    assert column(leaking, true, "LV301.POSITION").min() > 99.9, "makeup wide open, losing anyway"
    bridge = mean(leaking, after, "RM301.DOSE_RATE") / mean(leaking, before, "RM301.DOSE_RATE")
    assert bridge > 3.0, "less water over the fuel, more shine on the bridge"
    # RM302 sees the water's activity only, not the shine through the pool.
    assert mean(leaking, after, "RM302.DOSE_RATE") == pytest.approx(mean(leaking, before, "RM302.DOSE_RATE"), rel=0.05)
    # The expected reading rises steadily as the level falls, until the monitor's scale ends.
    rates = []
    for level in np.linspace(11.9, 9.0, 30):
        normal.level = level
        rates.append(normal.dose_rates()[0])
    assert np.all(np.diff(rates) > 0)
    assert rates[-1] > 1e4, "three metres of water lost: tens of mSv/h on the bridge"
    normal.level = FUEL_TOP + 0.5
    assert normal.dose_rates()[0] == MONITOR_MAX


def test_dose_rates_follow_the_source_term() -> None:
    base, hot = twins(RadiologicalPlant, seed=2, warmup=600)
    hot.decay_heat_mw *= 2.0
    _, a = base.run(1800)
    _, b = hot.run(1800)
    for tag in MONITORS:
        background = {"RM310.STACK": 5.0}.get(tag, 0.12)
        ratio = (mean(base, b, tag) - background) / (mean(base, a, tag) - background)
        assert ratio == pytest.approx(2.0, rel=0.1), tag
    assert mean(base, b, "JT301.DECAY_HEAT") == pytest.approx(4.0, rel=0.02)


def test_fuel_failure_raises_water_activity_not_heat() -> None:
    base, failed = twins(RadiologicalPlant, seed=2, warmup=600)
    failed.water_activity = 5.0
    ta, a = base.run(1800)
    tb, b = failed.run(1800)
    assert mean(base, b, "RM302.DOSE_RATE") > 4.0 * mean(base, a, "RM302.DOSE_RATE")
    assert mean(base, b, "RM310.STACK") > 4.0 * mean(base, a, "RM310.STACK")
    assert np.array_equal(column(base, ta, "TT301.POOL_TEMP"), column(base, tb, "TT301.POOL_TEMP"))


@pytest.mark.parametrize("tag", MONITORS)
def test_monitors_have_poisson_counting_noise(tag: str) -> None:
    plant = RadiologicalPlant(5)
    true, measured = plant.run(3600)
    spec = plant.TAGS[plant.index[tag]]
    counts = column(plant, measured, tag) * spec.counts_per_unit
    assert np.allclose(counts, np.round(counts)), "a reading is a whole number of counts"
    expected = column(plant, true, tag) * spec.counts_per_unit
    assert counts.mean() == pytest.approx(expected.mean(), rel=0.02)
    assert counts.var() == pytest.approx(expected.mean(), rel=0.1), "Poisson: variance = mean"


@pytest.mark.parametrize("seed", [0, 1])
def test_pool_temperature_held_through_a_heat_step(seed: int) -> None:
    base, hot = twins(RadiologicalPlant, seed=seed, warmup=600)
    hot.decay_heat_mw *= 1.2
    a, _ = base.run(6 * 3600)
    b, _ = hot.run(6 * 3600)
    spec = hot.TAGS[hot.index["TT301.POOL_TEMP"]]
    temp = column(hot, b, "TT301.POOL_TEMP")
    assert spec.lo < temp.min() and temp.max() < spec.hi
    assert np.abs(temp - column(base, a, "TT301.POOL_TEMP")).max() < 0.1
    assert mean(hot, b[-3600:], "TV302.POSITION") > mean(base, a[-3600:], "TV302.POSITION") + 5.0


def test_pool_temperature_setpoint_change_within_3_hours() -> None:
    base, moved = twins(RadiologicalPlant, seed=1, warmup=600)
    moved.setpoints["TIC301.SP"] = 33.0
    a, _ = base.run(4 * 3600)
    b, _ = moved.run(4 * 3600)
    effect = column(base, b, "TT301.POOL_TEMP") - column(base, a, "TT301.POOL_TEMP")
    assert effect.min() > -2.0 * 1.1
    assert np.abs(effect[3 * 3600 :] + 2.0).max() < 0.05
    assert column(base, b, "TV302.POSITION")[1800:3600].min() > 99.9, "full cooling on the way down"


def test_pool_level_setpoint_change_within_an_hour() -> None:
    base, moved = twins(RadiologicalPlant, seed=1, warmup=600)
    moved.setpoints["LIC301.SP"] = 11.85
    a, _ = base.run(2 * 3600)
    b, _ = moved.run(2 * 3600)
    effect = column(base, b, "LT301.POOL_LEVEL") - column(base, a, "LT301.POOL_LEVEL")
    assert effect.max() < 0.05 + 0.005
    assert np.abs(effect[3600:] - 0.05).max() < 0.005


def test_primary_pump_trip_heats_the_pool_at_the_decay_heat_rate() -> None:
    plant = RadiologicalPlant(3)
    plant.actuator_overrides["P301.RUNNING"] = 0.0
    true, _ = plant.run(3 * 3600)
    assert column(plant, true, "P301.RUNNING")[-1] == 0.0
    assert column(plant, true, "FT301.PRIMARY_FLOW")[300] < 1.0
    temp = column(plant, true, "TT301.POOL_TEMP")
    rate = (temp[-1] - temp[3600]) / 2.0  # K/h, once the coolant in the loop has stopped
    adiabatic = plant.decay_heat_mw * 1000 / (RHO_CP * AREA * 11.8) * 3600
    assert rate == pytest.approx(adiabatic, rel=0.1), "evaporation takes only a few per cent"
    assert rate < adiabatic
