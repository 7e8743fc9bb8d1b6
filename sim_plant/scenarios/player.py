"""Plays a scenario against a running plant: the one attack code path of the live simulator and the recorder.

Each kind acts where a real attacker would:

- at the **transmitter** (``at: transmitter``, the default of bias, ramp, noise
  and freeze): the field instrument itself is spoofed, so the PLC's loop reads
  the false value and moves its actuator (a level reading biased high makes
  LIC101 speed the pump up and really drain the tank); the plant's
  ``transmitter_tamper`` hook applies it inside the scan;
- on the **wire** (``at: wire``, the default of replay): only what the
  protocol servers hand to SCADA is falsified; the PLC keeps controlling on
  the real reading (the Stuxnet pattern: the operator watches a recorded
  normal window while the process is manipulated underneath);
- on the **controller's inputs from outside**: ``setpoint`` writes
  ``plant.setpoints``, ``actuator`` forces ``plant.actuator_overrides``;
- on the **network**: ``dos`` silences a protocol (its tags are empty in a
  recording; live, the server stops answering), ``forged_mqtt`` is a foreign
  publisher on the plant's topics (its values replace the served ones in a
  recording; live, a second MQTT client publishes them).

The simulator and ``record_scenario`` both call ``scan()`` then ``advance()``
once per tick, nothing else, so a live run and an offline recording of one
scenario and seed apply the very same attacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim_plant.configs import protocol_of
from sim_plant.plants import Plant
from sim_plant.scenarios.model import PROTOCOLS, SENSOR_KINDS, Scenario, Step


@dataclass(frozen=True)
class Scan:
    """One tick as the attacked plant shows it.

    ``served`` is what the simulator's own servers publish (wire attacks
    applied), ``seen`` what a client of the site receives (forged values in,
    a silenced protocol's tags empty): the recording holds ``seen``.
    """

    t: float
    served: np.ndarray
    seen: np.ndarray
    active: tuple[Step, ...]
    down: frozenset[str] = frozenset()
    forged: dict[int, float] = field(default_factory=dict)

    @property
    def label(self) -> int:
        return 1 if self.active else 0

    @property
    def attack(self) -> str:
        return "+".join(step.id for step in self.active)


class _SensorAttack:
    """A falsified reading of one tag (bias, ramp, noise, freeze, replay), with what it must remember."""

    def __init__(self, step: Step, index: int, dt: float, seed: int, ordinal: int) -> None:
        self.step = step
        self.index = index
        self.dt = dt
        self.at = step.params["at"]
        self.frozen: float | None = step.params.get("value")
        self.window: list[float] = []
        self._rng = np.random.default_rng([seed, ordinal]) if step.kind == "noise" else None

    def apply(self, t: float, row: np.ndarray) -> None:
        step, i = self.step, self.index
        if step.kind == "replay" and step.start_s - step.params["window_s"] <= t < step.start_s:
            self.window.append(float(row[i]))  # the normal window the attacker records, then plays back
        if not step.active(t):
            return
        kind = step.kind
        if kind == "bias":
            row[i] += step.params["offset"]
        elif kind == "ramp":
            row[i] += step.params["offset"] + step.params["rate"] * (t - step.start_s)
        elif kind == "noise":
            assert self._rng is not None
            row[i] += step.params["sd"] * self._rng.standard_normal()
        elif kind == "freeze":
            if self.frozen is None:
                self.frozen = float(row[i])
            row[i] = self.frozen
        elif kind == "replay" and self.window:
            # Back through the recorded window from its newest reading, then forward, and so on: every turn
            # joins two neighbouring readings, so the playback has no seam for a rate check to catch.
            n = len(self.window)
            k = round((t - step.start_s) / self.dt) % (2 * n)
            row[i] = self.window[n - 1 - k] if k < n else self.window[k - n]


class ScenarioPlayer:
    """Applies a scenario to ``plant`` from now on: scenario time 0 is the plant's time at construction."""

    def __init__(self, scenario: Scenario, plant: Plant, seed: int = 0) -> None:
        if plant.name != scenario.plant:
            raise ValueError(f"scenario {scenario.name} is for the {scenario.plant} plant, not {plant.name}")
        self.scenario = scenario
        self.plant = plant
        self.t0 = plant.t
        self._sensor = [
            _SensorAttack(step, plant.index[step.target], plant.dt, seed, k)
            for k, step in enumerate(scenario.steps)
            if step.kind in SENSOR_KINDS
        ]
        self._at_transmitter = [a for a in self._sensor if a.at == "transmitter"]
        self._on_wire = [a for a in self._sensor if a.at == "wire"]
        self._by_protocol = {
            p: np.array([i for i, spec in enumerate(plant.TAGS) if protocol_of(spec) == p], dtype=np.intp)
            for p in PROTOCOLS
        }
        self._setpoint_base: dict[str, float] = {}  # the operator's setpoint, restored when the tampering ends
        self._forced: set[str] = set()
        if self._at_transmitter:
            plant.transmitter_tamper = self._tamper_transmitters

    @property
    def t(self) -> float:
        """Scenario time: plant seconds since the player started."""
        return self.plant.t - self.t0

    @property
    def finished(self) -> bool:
        """Past the last step and its tail: the timeline has been played."""
        return self.t >= self.scenario.length_s

    def _tamper_transmitters(self, plant_t: float, row: np.ndarray) -> None:
        t = plant_t - self.t0
        for attack in self._at_transmitter:
            attack.apply(t, row)

    def scan(self) -> Scan:
        """The current tick, attacked: call once per tick, before ``advance()``."""
        t = self.t
        served = self.plant.measured()
        for attack in self._on_wire:
            attack.apply(t, served)
        active = tuple(self.scenario.active(t))
        seen = served.copy()
        down = frozenset(step.target for step in active if step.kind == "dos")
        forged: dict[int, float] = {}
        for step in active:
            if step.kind == "forged_mqtt":
                i = self.plant.index[step.target]
                value = step.params.get("value")
                forged[i] = float(served[i] + step.params["offset"]) if value is None else float(value)
                seen[i] = forged[i]
        for protocol in down:
            seen[self._by_protocol[protocol]] = np.nan
        return Scan(t, served, seen, active, down, forged)

    def advance(self) -> None:
        """Apply this tick's setpoint and actuator commands, then step the plant one ``dt``."""
        self._command(self.t)
        self.plant.step()

    def _command(self, t: float) -> None:
        plant = self.plant
        wanted_sp: dict[str, float] = {}
        wanted_force: dict[str, float] = {}
        for step in self.scenario.steps:
            if not step.active(t):
                continue
            if step.kind == "setpoint":
                base = self._setpoint_base.setdefault(step.target, plant.setpoints[step.target])
                value = step.params.get("value")
                wanted_sp[step.target] = base + step.params["offset"] if value is None else value
            elif step.kind == "actuator":
                wanted_force[step.target] = step.params["value"]
        for tag in list(self._setpoint_base):
            if tag in wanted_sp:
                plant.setpoints[tag] = wanted_sp[tag]
            else:
                plant.setpoints[tag] = self._setpoint_base.pop(tag)
        for tag in self._forced - set(wanted_force):
            plant.actuator_overrides.pop(tag, None)
        plant.actuator_overrides.update(wanted_force)
        self._forced = set(wanted_force)


def warm_up(plant: Plant, seconds: float) -> None:
    """Run the plant unattacked for ``seconds``: its slow disturbances settle into their normal wander."""
    for _ in range(round(seconds / plant.dt)):
        plant.step()


__all__ = ["Scan", "ScenarioPlayer", "warm_up"]
