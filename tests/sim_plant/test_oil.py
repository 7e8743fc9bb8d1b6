"""Oil: tank mass balance, leaks, the level loop, and the pump's hydraulics."""

from __future__ import annotations

import numpy as np
import pytest

from sim_plant.plants.oil import AREA, HEIGHT, HIGH_HIGH, OilPlant
from tests.sim_plant.conftest import column, twins

HOURS = 4


@pytest.mark.parametrize("seed", [0, 7])
def test_mass_balance_closes_without_a_leak(seed: int) -> None:
    plant = OilPlant(seed)
    v0 = plant.true_values()[plant.index["TK101.LEVEL"]] * AREA
    true, measured = plant.run(HOURS * 3600)
    v1 = column(plant, true, "TK101.LEVEL")[-1] * AREA
    flows = column(plant, true, "FT101.FLOW_IN") - column(plant, true, "FT102.FLOW_OUT")
    assert flows.sum() * plant.dt / 3600 == pytest.approx(v1 - v0, abs=1e-6)
    metered = (column(plant, measured, "FT101.FLOW_IN") - column(plant, measured, "FT102.FLOW_OUT")).sum() / 3600
    assert metered == pytest.approx(v1 - v0, abs=0.5), "meter noise averages out over hours"


def test_leak_breaks_the_metered_balance_by_the_leak() -> None:
    leak = 20.0  # m3/h
    plant = OilPlant(3)
    plant.leak_m3h = leak
    v0 = plant.level * AREA
    true, measured = plant.run(HOURS * 3600)
    v1 = plant.level * AREA
    true_in_out = (column(plant, true, "FT101.FLOW_IN") - column(plant, true, "FT102.FLOW_OUT")).sum() / 3600
    assert true_in_out - leak * HOURS == pytest.approx(v1 - v0, abs=1e-6), "mass is conserved, leak included"
    metered = (column(plant, measured, "FT101.FLOW_IN") - column(plant, measured, "FT102.FLOW_OUT")).sum() / 3600
    missing_per_hour = (metered - (v1 - v0)) / HOURS
    assert missing_per_hour == pytest.approx(leak, rel=0.03)
    # The level loop hides the leak from the level: it is still at setpoint, the pump just runs slower.
    assert abs(column(plant, true, "TK101.LEVEL")[-600:].mean() - 5.0) < 0.02


def test_inflow_step_is_rejected_within_45_minutes() -> None:
    """+30 m3/h from the pipeline: the level rises a few cm and the pump takes it back within 45 min."""
    base, stepped = twins(OilPlant, seed=1, warmup=600)
    stepped.inflow_m3h += 30.0
    a, _ = base.run(5400)
    b, _ = stepped.run(5400)
    effect = column(base, b, "TK101.LEVEL") - column(base, a, "TK101.LEVEL")
    assert 0.01 < effect.max() < 0.1
    assert np.abs(effect[45 * 60 :]).max() < 0.005
    flow = column(base, b, "FT102.FLOW_OUT") - column(base, a, "FT102.FLOW_OUT")
    assert flow[-600:].mean() == pytest.approx(30.0, abs=1.0), "the export flow takes the whole step"


def test_level_setpoint_change_is_reached_within_50_minutes() -> None:
    base, moved = twins(OilPlant, seed=2, warmup=600)
    moved.setpoints["LIC101.SP"] = 5.5
    a, _ = base.run(5400)
    b, _ = moved.run(5400)
    effect = column(base, b, "TK101.LEVEL") - column(base, a, "TK101.LEVEL")
    assert effect.max() < 0.5 * 1.2, "overshoot under 20 %"
    assert np.abs(effect[50 * 60 :] - 0.5).max() < 0.01


def test_stopped_pump_fills_the_tank_until_it_overflows() -> None:
    plant = OilPlant(4)
    v0 = plant.level * AREA
    plant.actuator_overrides["P101.RUNNING"] = 0.0
    true, _ = plant.run(2 * 3600)
    assert column(plant, true, "P101.RUNNING")[-1] == 0.0
    assert column(plant, true, "FT102.FLOW_OUT")[-1] == 0.0
    assert column(plant, true, "P101.POWER")[-1] == 0.0
    level = column(plant, true, "TK101.LEVEL")
    full = int(np.argmax(level >= HEIGHT))
    assert full > 0 and np.all(np.diff(level[60:full]) > 0)
    alarm = column(plant, true, "LSHH101.ALARM")
    assert alarm[level < HIGH_HIGH].max() == 0.0 and alarm[level >= HIGH_HIGH].min() == 1.0
    # What did not fit went over the top, and is accounted for.
    inflow = column(plant, true, "FT101.FLOW_IN").sum() / 3600 - column(plant, true, "FT102.FLOW_OUT").sum() / 3600
    assert plant.spilled_m3 > 0
    assert inflow == pytest.approx(HEIGHT * AREA - v0 + plant.spilled_m3, abs=1e-6)


def test_pump_follows_the_affinity_laws() -> None:
    """Forced faster, the pump pumps more, at a higher discharge pressure, for more power."""
    plant = OilPlant(5)
    for speed, _ in ((70.0, 0), (90.0, 1)):
        plant.actuator_overrides["P101.SPEED"] = speed
        plant.run(120)
        v = dict(zip(plant.tag_names(), plant.true_values(), strict=True))
        if speed == 70.0:
            slow = v
    fast = v
    assert fast["FT102.FLOW_OUT"] > slow["FT102.FLOW_OUT"] * 1.2
    assert fast["PT102.DISCHARGE"] > slow["PT102.DISCHARGE"] + 1.0
    assert fast["P101.POWER"] > slow["P101.POWER"] * 1.5
    # Head rises with the square of speed: shut-off pressure at 90 % vs 70 % is (9/7)^2 above suction.
    plant.actuator_overrides["XV101.POSITION"] = 0.0
    plant.run(120)
    shut = dict(zip(plant.tag_names(), plant.true_values(), strict=True))
    assert shut["FT102.FLOW_OUT"] == 0.0
    assert shut["PT102.DISCHARGE"] > fast["PT102.DISCHARGE"], "a closed valve dead-heads the pump"


def test_low_low_level_trips_the_pump() -> None:
    plant = OilPlant(6)
    plant.inflow_m3h = 0.0
    plant.leak_m3h = 0.0
    plant.actuator_overrides["P101.SPEED"] = 100.0
    true, _ = plant.run(3600)
    level = column(plant, true, "TK101.LEVEL")
    assert level.min() > 0.5, "the trip must leave suction head in the tank"
    assert column(plant, true, "P101.RUNNING")[-1] == 0.0
