"""Attack scenarios offline: loading and its errors, each kind's effect against an unattacked twin, ground truth."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim_plant.configs import CONFIG_DIR, protocol_of
from sim_plant.plants import PLANTS
from sim_plant.record import DEFAULT_START, RecordingWriter, record_scenario
from sim_plant.scenarios import (
    KINDS,
    SCENARIO_DIR,
    Scan,
    ScenarioError,
    ScenarioPlayer,
    load_scenario,
    parse_scenario,
    shipped,
    warm_up,
)
from sim_plant.simulation import Simulation

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "scenariocases"
WARMUP = 120


def scenario(plant: str, *steps: dict[str, Any], stealth: str = "overt") -> dict[str, Any]:
    return {"plant": plant, "description": "a test timeline", "stealth": stealth, "tail_s": 10, "steps": list(steps)}


def play(doc: dict[str, Any] | None, plant: str = "oil", ticks: int = 200, seed: int = 3) -> tuple[list[Scan], Any]:
    """Scans of a plant warmed up ``WARMUP`` s, with the scenario (or none: the unattacked twin)."""
    model = PLANTS[plant](seed=seed)
    warm_up(model, WARMUP)
    player = ScenarioPlayer(parse_scenario(doc or scenario(plant, NEVER[plant])), model, seed=seed)
    scans = []
    for _ in range(ticks):
        scans.append(player.scan())
        player.advance()
    return scans, model


# A step that never starts within the runs below: the twin runs the same player code with nothing active.
NEVER = {
    name: {"id": "never", "kind": "dos", "target": "opcua", "start_s": 10_000, "duration_s": 1}
    for name in ("oil", "chemical", "radiological")
}


def served(scans: list[Scan], index: int) -> np.ndarray:
    return np.array([s.served[index] for s in scans])


def seen(scans: list[Scan]) -> np.ndarray:
    return np.array([s.seen for s in scans])


# -- loading ----------------------------------------------------------------------------------


def test_shipped_scenarios_load_and_cover_every_plant_from_overt_to_stealthy() -> None:
    files = shipped()
    assert files == sorted(files)
    by_plant: Counter[str] = Counter()
    stealth: dict[str, set[str]] = {}
    for path in files:
        sc = load_scenario(path)
        assert path.parent.name == sc.plant and path.stem == sc.name, path
        assert len(sc.description) > 40, f"{path}: say what threat it models"
        assert all(step.description for step in sc.steps), path
        assert sc.length_s >= max(step.end_s for step in sc.steps), path
        by_plant[sc.plant] += 1
        stealth.setdefault(sc.plant, set()).add(sc.stealth)
        if sc.name != "pump_stop":
            assert min(step.start_s for step in sc.steps) >= 600, f"{path}: leave the detectors a lead-in"
    assert all(by_plant[p] >= 5 for p in PLANTS), by_plant
    assert all(stealth[p] == {"overt", "stealthy"} for p in PLANTS), stealth
    kinds = {step.kind for path in files for step in load_scenario(path).steps}
    assert kinds == set(KINDS), f"every kind is shipped at least once; missing {set(KINDS) - kinds}"


def test_pump_stop_is_the_overt_live_demo_scenario() -> None:
    sc = load_scenario(SCENARIO_DIR / "oil" / "pump_stop.yaml")
    assert (sc.plant, sc.stealth) == ("oil", "overt")
    first = min(sc.steps, key=lambda s: s.start_s)
    assert (first.kind, first.target, first.start_s) == ("actuator", "P101.RUNNING", 60.0)
    assert first.duration_s >= 120 and first.params["value"] == 0


def test_a_scenario_of_every_kind_loads_with_its_defaults() -> None:
    doc = scenario(
        "oil",
        {"id": "b", "kind": "bias", "target": "TK101.LEVEL", "start_s": 400, "duration_s": 10, "params": {"offset": 1}},
        {"id": "r", "kind": "ramp", "target": "TK101.LEVEL", "start_s": 400, "duration_s": 10, "params": {"rate": 1}},
        {"id": "n", "kind": "noise", "target": "FT101.FLOW_IN", "start_s": 400, "duration_s": 10, "params": {"sd": 1}},
        {"id": "f", "kind": "freeze", "target": "PT101.SUCTION", "start_s": 400, "duration_s": 10},
        {"id": "p", "kind": "replay", "target": "P101.POWER", "start_s": 400, "duration_s": 10},
        {"id": "s", "kind": "setpoint", "target": "LIC101.SP", "start_s": 0, "duration_s": 5, "params": {"offset": 1}},
        {"id": "a", "kind": "actuator", "target": "XV101.POSITION", "start_s": 0, "duration_s": 5,
         "params": {"value": 0}},
        {"id": "d", "kind": "dos", "target": "modbus", "start_s": 0, "duration_s": 5},
        {"id": "m", "kind": "forged_mqtt", "target": "LSHH101.ALARM", "start_s": 0, "duration_s": 5,
         "params": {"value": 1}},
    )  # fmt: skip
    sc = parse_scenario(doc)
    params = {step.id: step.params for step in sc.steps}
    assert params["b"] == {"offset": 1.0, "at": "transmitter"}
    assert params["r"] == {"rate": 1.0, "offset": 0.0, "at": "transmitter"}
    assert params["p"] == {"window_s": 300.0, "at": "wire"}
    assert params["d"] == {}
    assert sc.length_s == 410 + 10
    assert [s.id for s in sc.active(402)] == ["b", "r", "n", "f", "p"]


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_scenario_files_name_the_file_the_step_and_the_field(case: Path) -> None:
    expect = case.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ScenarioError) as err:
        load_scenario(case)
    message = str(err.value)
    assert message.startswith(f"{case}: "), message
    assert expect in message, message


def test_a_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_a_player_refuses_another_plants_scenario() -> None:
    with pytest.raises(ValueError, match="for the oil plant, not chemical"):
        ScenarioPlayer(parse_scenario(scenario("oil", NEVER["oil"])), PLANTS["chemical"](seed=0))


# -- each kind against an unattacked twin (same seed: the difference is the attack alone) ------------------


def step(kind: str, target: str, start: float = 20, duration: float = 60, **params: Any) -> dict[str, Any]:
    return {"id": f"{kind}_step", "kind": kind, "target": target, "start_s": start, "duration_s": duration,
            "params": params}  # fmt: skip


def test_runs_are_deterministic_and_the_twin_is_untouched() -> None:
    doc = scenario("oil", step("noise", "TK101.LEVEL", sd=0.05))
    a, _ = play(doc)
    b, _ = play(doc)
    assert np.array_equal(seen(a), seen(b))
    twin, _ = play(None)
    plain = PLANTS["oil"](seed=3)
    warm_up(plain, WARMUP)
    rows = [plain.measured()]
    for _ in range(len(twin) - 1):
        plain.step()
        rows.append(plain.measured())
    assert np.array_equal(seen(twin), np.array(rows)), "a player with nothing active changes nothing"


def test_bias_at_the_transmitter_moves_the_loop_and_on_the_wire_does_not() -> None:
    names = PLANTS["oil"].tag_names()
    level, speed = names.index("TK101.LEVEL"), names.index("P101.SPEED")
    twin, _ = play(None)
    field, _ = play(scenario("oil", step("bias", "TK101.LEVEL", offset=0.3, at="transmitter")))
    wire, _ = play(scenario("oil", step("bias", "TK101.LEVEL", offset=0.3, at="wire")))
    before = slice(0, 20)
    assert np.array_equal(seen(field)[before], seen(twin)[before])
    # The first falsified scan reads exactly 0.3 m high; the transmitter's lie then drives LIC101.
    assert served(field, level)[20] - served(twin, level)[20] == pytest.approx(0.3)
    assert served(field, speed)[40:80].mean() > served(twin, speed)[40:80].mean() + 5, "the pump speeds up"
    # On the wire only the served level changes, by exactly the offset; the process is the twin's.
    diff = seen(wire) - seen(twin)
    assert np.allclose(diff[20:80, level], 0.3) and not diff[:20].any() and not diff[80:].any()
    assert not np.delete(diff, level, axis=1).any()


def test_ramp_grows_from_its_offset_at_its_rate() -> None:
    twin, _ = play(None)
    ramped, _ = play(scenario("oil", step("ramp", "FT101.FLOW_IN", rate=0.5, offset=2.0, at="wire")))
    i = PLANTS["oil"].tag_names().index("FT101.FLOW_IN")
    diff = served(ramped, i) - served(twin, i)
    assert np.allclose(diff[20:80], 2.0 + 0.5 * np.arange(60))
    assert not diff[:20].any() and not diff[80:].any()


def test_noise_adds_seeded_noise_of_its_sd() -> None:
    twin, _ = play(None, ticks=1200)
    noisy, _ = play(scenario("oil", step("noise", "FT101.FLOW_IN", duration=1000, sd=4.0, at="wire")), ticks=1200)
    i = PLANTS["oil"].tag_names().index("FT101.FLOW_IN")
    diff = served(noisy, i) - served(twin, i)
    assert diff[20:1020].std() == pytest.approx(4.0, rel=0.1)
    assert not diff[:20].any() and not diff[1020:].any()


def test_freeze_holds_the_reading_at_the_steps_start() -> None:
    twin, _ = play(None)
    frozen, _ = play(scenario("oil", step("freeze", "PT102.DISCHARGE", at="wire")))
    i = PLANTS["oil"].tag_names().index("PT102.DISCHARGE")
    held = served(frozen, i)[20:80]
    assert (held == served(twin, i)[20]).all()
    assert np.array_equal(served(frozen, i)[80:], served(twin, i)[80:])


def test_replay_plays_the_recorded_window_back_without_a_seam_while_the_pump_stops_underneath() -> None:
    names = PLANTS["oil"].tag_names()
    flow, running, power = (names.index(n) for n in ("FT102.FLOW_OUT", "P101.RUNNING", "P101.POWER"))
    stop = step("actuator", "P101.RUNNING", start=100, duration=60, value=0)
    replays = [
        {**step("replay", tag, start=100, duration=100, window_s=40), "id": f"replay{k}"}
        for k, tag in enumerate(("FT102.FLOW_OUT", "P101.RUNNING"))
    ]
    twin, _ = play(None)
    attacked, model = play(scenario("oil", stop, *replays))
    recorded = served(twin, flow)[60:100]
    played = served(attacked, flow)[100:200]
    # Backwards from the newest reading, then forwards: 99, 98, ..., 60, 60, 61, ...
    expected = np.concatenate([recorded[::-1], recorded, recorded[::-1]])[:100]
    assert np.array_equal(played, expected)
    assert (served(attacked, running)[100:200] == 1.0).all(), "SCADA sees the pump running"
    assert served(attacked, power)[110:160].max() < 5.0, "the un-replayed power shows the pump is off"
    assert model.true_values()[running] == 1.0 and "P101.RUNNING" not in model.actuator_overrides


def test_setpoint_tampering_writes_the_setpoint_and_restores_the_operators_value() -> None:
    names = PLANTS["chemical"].tag_names()
    sp, valve = names.index("TIC201.SP"), names.index("FV202.POSITION")
    twin, _ = play(None, plant="chemical")
    attacked, model = play(scenario("chemical", step("setpoint", "TIC201.SP", offset=5.0)), plant="chemical")
    assert served(attacked, sp)[21:81].tolist() == [85.0] * 60  # written at 20, on the wire from the next scan
    assert served(attacked, sp)[81] == 80.0 and model.setpoints["TIC201.SP"] == 80.0
    assert served(attacked, valve)[40:80].mean() < served(twin, valve)[40:80].mean() - 5, "TIC201 cuts the coolant"


def test_actuator_injection_forces_the_pump_against_its_controller_then_releases_it() -> None:
    names = PLANTS["radiological"].tag_names()
    running, flow = names.index("P301.RUNNING"), names.index("FT301.PRIMARY_FLOW")
    attacked, model = play(scenario("radiological", step("actuator", "P301.RUNNING", value=0)), plant="radiological")
    assert (served(attacked, running)[21:81] == 0).all() and served(attacked, running)[81] == 1
    assert served(attacked, flow)[79] < 50, "the primary flow coasts down"
    assert model.actuator_overrides == {}


def test_dos_empties_the_protocols_tags_for_clients_and_serves_on_regardless() -> None:
    twin, _ = play(None)
    attacked, _ = play(scenario("oil", step("dos", "opcua")))
    on_opcua = np.array([protocol_of(t) == "opcua" for t in PLANTS["oil"].TAGS])
    window = seen(attacked)[20:80]
    assert np.isnan(window[:, on_opcua]).all() and not np.isnan(window[:, ~on_opcua]).any()
    assert np.array_equal(seen(attacked)[80:], seen(twin)[80:]), "the process never noticed"
    assert all(s.down == {"opcua"} for s in attacked[20:80]) and not attacked[80].down


def test_forged_mqtt_values_replace_what_clients_see_but_not_what_the_plant_publishes() -> None:
    i = PLANTS["oil"].tag_names().index("LSHH101.ALARM")
    attacked, _ = play(scenario("oil", step("forged_mqtt", "LSHH101.ALARM", value=1)))
    assert all(s.forged == {i: 1.0} and s.seen[i] == 1.0 and s.served[i] == 0.0 for s in attacked[20:80])
    assert not attacked[80].forged and attacked[80].seen[i] == 0.0


# -- ground truth ----------------------------------------------------------------------------------


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def test_a_scenario_recording_carries_label_and_attack_per_tick(tmp_path: Path) -> None:
    doc = scenario(
        "oil",
        {**step("bias", "TK101.LEVEL", start=10, duration=20, offset=0.1), "id": "first"},
        {**step("dos", "modbus", start=25, duration=10), "id": "second"},
    )
    sc = parse_scenario(doc)
    out = record_scenario(sc, tmp_path / "rec.csv", seed=1, warmup_s=60)
    header, rows = read(out)
    assert header[-2:] == ["label", "attack"] and header[1:-2] == PLANTS["oil"].tag_names()
    assert len(rows) == sc.length_s == 45
    assert rows[0][0] == DEFAULT_START.replace(tzinfo=None).isoformat()
    truth = [(row[-2], row[-1]) for row in rows]
    assert truth[:10] == [("0", "")] * 10
    assert truth[10:25] == [("1", "first")] * 15
    assert truth[25:30] == [("1", "first+second")] * 5
    assert truth[30:35] == [("1", "second")] * 5
    assert truth[35:] == [("0", "")] * 10
    sp = header.index("LIC101.SP")
    assert rows[26][sp] == "" and rows[35][sp] == "5", "a silenced Modbus server leaves its tags empty"
    assert record_scenario(sc, tmp_path / "again.csv", seed=1, warmup_s=60).read_bytes() == out.read_bytes()


def test_a_plain_recording_keeps_its_old_columns(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "plain.csv", ["A"]) as writer:
        writer.write(DEFAULT_START, [1.0])
    assert (tmp_path / "plain.csv").read_text().splitlines() == ["timestamp,A,label", "2026-01-15T00:00:00,1,0"]


def test_the_live_simulation_applies_exactly_what_the_recorder_applies(tmp_path: Path) -> None:
    """One code path: Simulation (no servers, flat out) and record_scenario write the same rows."""
    sc = load_scenario(SCENARIO_DIR / "oil" / "level_bias.yaml")
    steps = 1000
    offline = record_scenario(sc, tmp_path / "offline.csv", seed=4)
    plant = PLANTS["oil"](seed=4)
    warm_up(plant, 600)
    player = ScenarioPlayer(sc, plant, seed=4)
    recorder = RecordingWriter(tmp_path / "live.csv", plant.tag_names(), attack_column=True)
    simulation = Simulation(plant, speed=1e9, recorder=recorder, player=player, start=DEFAULT_START)
    with recorder:
        asyncio.run(simulation.run(asyncio.Event(), steps))
    assert read(tmp_path / "live.csv")[1] == read(offline)[1][:steps]
    assert read(offline)[1][900][-1] == "bias_tk101_level"


def test_record_cli_writes_a_scenario_and_refuses_a_disagreeing_plant(tmp_path: Path) -> None:
    path = SCENARIO_DIR / "oil" / "pump_stop.yaml"
    run = [sys.executable, "-m", "sim_plant.record", "--scenario", str(path)]
    done = subprocess.run([*run, str(tmp_path / "r.csv"), "--seed", "2"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "scenario pump_stop" in done.stdout
    _, rows = read(tmp_path / "r.csv")
    assert len(rows) == load_scenario(path).length_s and sum(r[-2] == "1" for r in rows) == 180
    bad = subprocess.run([*run, "--plant", "chemical", str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert bad.returncode == 2 and "disagrees" in bad.stderr


def test_a_lead_in_moves_every_step_later_offline_and_live(tmp_path: Path) -> None:
    """``--lead-in S``: the same attack S seconds later, so learned models are warm when it starts."""
    path = SCENARIO_DIR / "oil" / "pump_stop.yaml"
    scenario = load_scenario(path)
    first = int(scenario.steps[0].start_s)
    record = [sys.executable, "-m", "sim_plant.record", "--scenario", str(path), "--seed", "2"]
    done = subprocess.run([*record, str(tmp_path / "r.csv"), "--lead-in", "120"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _, rows = read(tmp_path / "r.csv")
    attacked = [i for i, r in enumerate(rows) if r[-2] == "1"]
    assert len(rows) == scenario.length_s + 120 and len(attacked) == 180
    assert attacked[0] == first + 120 and rows[attacked[0]][-1] == "stop_p101"
    # Live: the simulator plays it as fast as it can, with no server, and records what it served.
    sim = [sys.executable, "-m", "collector", "sim", "--scenario", str(path), "--no-opcua", "--no-modbus"]
    steps = str(first + 130)
    live = [*sim, "--lead-in", "120", "--speed", "1e6", "--steps", steps, "--record", str(tmp_path / "live.csv")]
    done = subprocess.run(live, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    _, served = read(tmp_path / "live.csv")
    assert [i for i, r in enumerate(served) if r[-2] == "1"] == attacked[:10]
    out = str(tmp_path / "x.csv")
    refused = {
        "lead-in must be a finite number": [*record, out, "--lead-in", "-5"],
        "--lead-in delays a scenario's steps": [*record[:3], "--plant", "oil", out, "--lead-in", "9"],
    }
    for expected, args in refused.items():
        bad = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert bad.returncode == 2 and expected in bad.stderr, (args, bad.stderr)
    bad = subprocess.run([*sim[:4], "--plant", "oil", "--lead-in", "9", "--steps", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--lead-in delays a scenario's steps" in bad.stderr, bad.stderr


def test_pump_stop_replays_with_its_labels_and_is_caught_in_time(tmp_path: Path) -> None:
    """The replay reader takes the attack column in its stride; the default config catches the stop."""
    rec = record_scenario(load_scenario(SCENARIO_DIR / "oil" / "pump_stop.yaml"), tmp_path / "rec.csv")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "collector", "replay", str(rec), "-c", str(CONFIG_DIR / "oil.yaml"), "-o", str(out),
         "--label-column", "label", "--no-progress", "--log-level", "warning"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labelled_ticks"] == 840 and summary["malformed_cells"] == 0
    t0 = DEFAULT_START.timestamp()
    with (out / "alerts.csv").open() as handle:
        firing = [(float(r["timestamp"]) - t0, r["tag"]) for r in csv.DictReader(handle) if r["event"] == "firing"]
    assert firing and all(60 <= t <= 240 + 60 for t, _ in firing), firing
    assert min(t for t, _ in firing) <= 60 + 10
    assert "P101.RUNNING" in {tag for _, tag in firing}


def test_sim_cli_refuses_a_bad_or_disagreeing_scenario_before_serving() -> None:
    sim = [sys.executable, "-m", "collector", "sim", "--no-opcua", "--no-modbus", "--steps", "1"]
    pump_stop = str(SCENARIO_DIR / "oil" / "pump_stop.yaml")
    cases = {
        "disagrees with": ["--plant", "chemical", "--scenario", pump_stop],
        "steps[0].duration_s: must be positive": ["--scenario", str(CASES / "duration_not_positive.yaml")],
    }
    for expected, args in cases.items():
        done = subprocess.run([*sim, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 2 and expected in done.stderr, (args, done.stderr)
