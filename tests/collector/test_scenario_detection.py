"""Every shipped attack scenario, recorded offline and replayed through its plant's default config.

Overt scenarios must be caught, every step, with no false alert outside the attack windows (plus
grace); stealthy ones are scored and their figures printed (``pytest -s``), not held to a bar.
Each scenario is recorded and replayed once per module, in-process, and shared by its cases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from collector.config import load_config
from collector.replay import ReplayResult, replay
from collector.scoring.truth import from_scenario
from sim_plant.record import record_scenario
from sim_plant.scenarios import load_scenario, shipped
from tests.conftest import ROOT

SCENARIOS = shipped()


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], ReplayResult]:
    """Record and replay a scenario on first use; later cases reuse the result."""
    cache: dict[Path, ReplayResult] = {}
    folder = tmp_path_factory.mktemp("scenarios")

    def get(path: Path) -> ReplayResult:
        if path not in cache:
            scenario = load_scenario(path)
            recording = record_scenario(scenario, folder / f"{scenario.plant}_{path.stem}.csv", seed=0)
            cfg = load_config(ROOT / "config" / f"{scenario.plant}.yaml")
            cache[path] = replay(cfg, recording, folder / f"{scenario.plant}_{path.stem}", progress=False)
        return cache[path]

    return get


def test_every_plant_ships_scenarios_from_overt_to_stealthy() -> None:
    plants: dict[str, set[str]] = {}
    for path in SCENARIOS:
        scenario = load_scenario(path)
        plants.setdefault(scenario.plant, set()).add(scenario.stealth)
    assert set(plants) == {"oil", "chemical", "radiological"}
    assert all(kinds == {"overt", "stealthy"} for kinds in plants.values()), plants


@pytest.mark.parametrize("path", SCENARIOS, ids=_id)
def test_scenario_is_scored_against_its_own_steps(path: Path, scored: Callable[[Path], ReplayResult]) -> None:
    result = scored(path)
    scenario = load_scenario(path)
    card, truth = result.scorecard, result.truth
    assert card is not None and truth is not None, "a scenario recording carries its label and attack columns"
    # The recording's attack column and the scenario file agree on every step's id and window.
    from_file = from_scenario(path, truth.ts, result.trace.tick_s)
    assert {s.id: (s.start, s.end) for s in truth.steps} == {s.id: (s.start, s.end) for s in from_file.steps}
    assert [s.step.id for s in card.steps] == [s.id for s in truth.steps]
    assert len({s.id for s in truth.steps}) == len(scenario.steps)
    nab = card.nab["standard"]["score"]
    assert nab is not None and -1000 < nab <= 100
    for s in card.steps:
        assert s.detected == (s.time_to_detect_s is not None)
        assert s.time_to_detect_s is None or 0 <= s.time_to_detect_s < s.step.duration_s + card.grace_s
    fah = card.false_alerts_per_hour
    print(
        f"\n{_id(path)} ({scenario.stealth}): {card.detected}/{len(card.steps)} steps detected, "
        + ", ".join(f"{s.step.id} {s.time_to_detect_s if s.detected else 'missed'}" for s in card.steps)
        + f"; false alerts {card.alerts_false} ({fah if fah is None else round(fah, 2)}/h), NAB {nab:.1f}"
    )
    if scenario.stealth == "overt":
        missed = [s.step.id for s in card.steps if not s.detected]
        assert not missed, f"overt steps missed: {missed}"
        false = [f"{a.detector} on {a.tag} at +{a.start - result.trace.ticks[0]:g} s" for a in card.false_alerts]
        assert not false, f"false alerts outside the attack windows: {false}"
        assert card.event_precision == 1.0 and card.event_recall == 1.0
        assert np.isfinite(card.normal_hours) and card.normal_hours > 0


def test_a_config_that_only_lists_tags_gets_a_multivariate_model_that_catches_an_attack(tmp_path: Path) -> None:
    """No ``detectors`` section at all: PCA is on by default, one model per source, and once past its
    warm-up (1,200 ticks, hence the lead-in) it is among the detectors that catch a throttled export valve."""
    doc = yaml.safe_load((ROOT / "config" / "oil.yaml").read_text())
    for section in ("detectors", "invariants", "alerting"):
        doc.pop(section)
    doc["state_dir"] = str(tmp_path / "state")
    config = tmp_path / "tags_only.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    path = ROOT / "sim_plant" / "scenarios" / "oil" / "valve_close.yaml"
    scenario = load_scenario(path).delayed(1500)
    recording = record_scenario(scenario, tmp_path / "valve_close.csv", seed=0)
    result = replay(load_config(config), recording, tmp_path / "out", progress=False)  # steps from its labels
    assert result.scorecard is not None
    (step,) = result.scorecard.steps
    assert step.detected and "pca" in step.detectors, step
