"""Chemical: the CSTR's energy balance, its runaway without cooling, and its loops."""

from __future__ import annotations

import numpy as np
import pytest

from sim_plant.plants.chemical import AREA, CONC_FEED, DH, E_R, K0, K0C, RHO_CP, RHO_CP_W, ChemicalPlant
from tests.sim_plant.conftest import column, twins

ADIABATIC_RISE = -DH * CONC_FEED / RHO_CP  # K, all of the feed's A reacted with no heat removed


def test_steady_energy_balance_closes_from_the_tags() -> None:
    """Reaction heat (from T, c_A, level) = heat carried off by feed + coolant, all from served tags."""
    plant = ChemicalPlant(1)
    true, measured = plant.run(3600)
    for rows in (true, measured):
        temp = column(plant, rows, "TT201.TEMP")
        reaction = (-DH * K0 * np.exp(-E_R / (temp + K0C)) * column(plant, rows, "AT201.CONC_A")) * (
            column(plant, rows, "LT201.LEVEL") * AREA
        )
        feed = RHO_CP * column(plant, rows, "FT201.FEED_FLOW") / 3600 * (column(plant, rows, "TT202.FEED_TEMP") - temp)
        coolant = (
            RHO_CP_W
            * column(plant, rows, "FT202.COOLANT_FLOW")
            / 3600
            * (column(plant, rows, "TT204.COOLANT_OUT") - column(plant, rows, "TT203.COOLANT_IN"))
        )
        assert reaction.mean() > 500 and coolant.mean() > 100 and feed.mean() < -100
        assert (reaction + feed - coolant).mean() == pytest.approx(0.0, abs=0.01 * reaction.mean())


@pytest.mark.parametrize("loss", [{"P202.RUNNING": 0.0}, {"FV202.POSITION": 0.0}], ids=["pump trip", "valve shut"])
def test_loss_of_cooling_runs_away(loss: dict[str, float]) -> None:
    cooled, lost = twins(ChemicalPlant, seed=3, warmup=600)
    lost.actuator_overrides.update(loss)
    ref, _ = cooled.run(3 * 3600)
    true, _ = lost.run(3 * 3600)
    temp = column(lost, true, "TT201.TEMP")
    assert column(lost, true, "FT202.COOLANT_FLOW")[120:].max() < 1e-3
    assert np.all(np.diff(temp[120 : 45 * 60]) > 0), "heats up at every step once the coolant has stopped"
    assert temp[3600] - temp[0] > 25.0
    assert column(lost, true, "PT201.PRESSURE")[3600] > column(lost, true, "PT201.PRESSURE")[0] + 1.0
    assert np.abs(column(cooled, ref, "TT201.TEMP") - 80.0).max() < 0.5, "the cooled twin stays put"
    # Three hours on it is near the adiabatic steady state: the feed carries off what the reaction releases.
    conversion = 1 - column(lost, true, "AT201.CONC_A")[-600:].mean() / CONC_FEED
    assert conversion > 0.95
    adiabatic = column(lost, true, "TT202.FEED_TEMP")[-600:].mean() + ADIABATIC_RISE * conversion
    assert temp[-600:].mean() == pytest.approx(adiabatic, abs=3.0)


def test_energy_balance_sign_during_runaway() -> None:
    """Every step of the runaway: reaction + feed - jacket > 0, and it is what raised the temperature."""
    plant = ChemicalPlant(4)
    plant.run(600)
    plant.actuator_overrides["P202.RUNNING"] = 0.0
    plant.run(120)
    t_i, l_i = plant.index["TT201.TEMP"], plant.index["LT201.LEVEL"]
    released = []
    for _ in range(30 * 60):
        before = plant.true_values()
        plant.step()
        after = plant.true_values()
        net = plant.heat_kw["reaction"] + plant.heat_kw["feed"] - plant.heat_kw["jacket"]
        assert net > 0
        stored = RHO_CP * before[l_i] * AREA * (after[t_i] - before[t_i]) / plant.dt
        assert stored == pytest.approx(net, rel=1e-9)
        released.append(plant.heat_kw["reaction"])
    assert max(released) > 1.1 * released[0], "Arrhenius outpaces depletion: the reaction speeds up as it heats"


def test_coolant_supply_step_is_rejected_within_20_minutes() -> None:
    base, warm = twins(ChemicalPlant, seed=1, warmup=600)
    warm.coolant_supply_c += 5.0
    a, _ = base.run(3600)
    b, _ = warm.run(3600)
    effect = column(base, b, "TT201.TEMP") - column(base, a, "TT201.TEMP")
    assert 0.02 < effect.max() < 0.5
    assert np.abs(effect[20 * 60 :]).max() < 0.05
    valve = column(base, b, "FV202.POSITION") - column(base, a, "FV202.POSITION")
    assert valve[-600:].mean() > 2.0, "warmer coolant needs more of it"


def test_temperature_setpoint_change_within_15_minutes() -> None:
    base, moved = twins(ChemicalPlant, seed=1, warmup=600)
    moved.setpoints["TIC201.SP"] = 78.0
    a, _ = base.run(3600)
    b, _ = moved.run(3600)
    effect = column(base, b, "TT201.TEMP") - column(base, a, "TT201.TEMP")
    assert effect.min() > -2.0 * 1.3, "overshoot under 30 %"
    assert np.abs(effect[15 * 60 :] + 2.0).max() < 0.05


def test_feed_setpoint_change_within_2_minutes_and_temperature_held() -> None:
    base, moved = twins(ChemicalPlant, seed=1, warmup=600)
    moved.setpoints["FIC201.SP"] = 11.0
    a, _ = base.run(3600)
    b, _ = moved.run(3600)
    flow = column(base, b, "FT201.FEED_FLOW") - column(base, a, "FT201.FEED_FLOW")
    assert np.abs(flow[120:] - 1.0).max() < 0.05
    temp = column(base, b, "TT201.TEMP") - column(base, a, "TT201.TEMP")
    assert np.abs(temp).max() < 0.5 and np.abs(temp[-600:]).max() < 0.05


def test_level_setpoint_change_within_45_minutes() -> None:
    base, moved = twins(ChemicalPlant, seed=1, warmup=600)
    moved.setpoints["LIC201.SP"] = 2.2
    a, _ = base.run(3600)
    b, _ = moved.run(3600)
    level = column(base, b, "LT201.LEVEL") - column(base, a, "LT201.LEVEL")
    assert level.max() < 0.2 * 1.2
    assert np.abs(level[45 * 60 :] - 0.2).max() < 0.01


def test_pressure_follows_temperature() -> None:
    plant = ChemicalPlant(2)
    plant.setpoints["TIC201.SP"] = 85.0
    true, _ = plant.run(1800)
    temp, pressure = column(plant, true, "TT201.TEMP"), column(plant, true, "PT201.PRESSURE")
    assert pressure[-1] > pressure[0]
    assert np.corrcoef(temp, pressure)[0, 1] > 0.99
