"""Attack scenarios: timelines of attack steps against a simulated plant, and the player that applies them.

``load_scenario(path)`` reads and checks a scenario file (``ScenarioError``
names the file, the step and the field); ``shipped()`` lists the scenarios
that come with the simulator, ``<plant>/<name>.yaml`` under ``SCENARIO_DIR``;
``ScenarioPlayer`` applies one to a running plant, for the live simulator and
the recorder alike. The file format and every kind are in ``README.md`` here.
"""

from __future__ import annotations

from pathlib import Path

from sim_plant.scenarios.model import KINDS, Scenario, ScenarioError, Step, load_scenario, parse_scenario
from sim_plant.scenarios.player import Scan, ScenarioPlayer, warm_up

SCENARIO_DIR = Path(__file__).resolve().parent


def shipped() -> list[Path]:
    """Every shipped scenario file, sorted by path."""
    return sorted(SCENARIO_DIR.glob("*/*.yaml"))


__all__ = [
    "KINDS",
    "SCENARIO_DIR",
    "Scan",
    "Scenario",
    "ScenarioError",
    "ScenarioPlayer",
    "Step",
    "load_scenario",
    "parse_scenario",
    "shipped",
    "warm_up",
]
