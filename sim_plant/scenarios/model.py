"""Scenario files: a timeline of attack steps against one plant, read and checked before anything runs.

A scenario is YAML (format and every kind in ``README.md`` beside this file).
Loading checks the whole document against the plant's tag catalog and says
which step and field is wrong, so a tester's typo fails at load time with
``steps[2].duration_s: must be positive``, not half-way through an exercise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from sim_plant.catalog import TagSpec
from sim_plant.configs import protocol_of
from sim_plant.plants import PLANTS

Stealth = Literal["overt", "stealthy"]
STEALTH: tuple[Stealth, ...] = ("overt", "stealthy")
PROTOCOLS = ("opcua", "modbus", "mqtt")
LOCATIONS = ("transmitter", "wire")
DEFAULT_TAIL_S = 600.0
_ID = re.compile(r"^[A-Za-z0-9_\-]+$")  # no "+": the recording joins active step ids with it


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message names the file, the step and the field."""


@dataclass(frozen=True)
class Param:
    """One parameter of an attack kind: its type, default (``None`` = required) and a check."""

    kind: type
    default: Any = None
    required: bool = False
    check: str = ""  # "positive", "non_negative", "location"


def _number(default: float | None = None, required: bool = False, check: str = "") -> Param:
    return Param(float, default, required, check)


_AT_TRANSMITTER = Param(str, "transmitter", check="location")
_AT_WIRE = Param(str, "wire", check="location")

# Every kind, its parameters, and which tag roles (or protocols) it may target.
KINDS: dict[str, dict[str, Param]] = {
    "bias": {"offset": _number(required=True), "at": _AT_TRANSMITTER},
    "ramp": {"rate": _number(required=True), "offset": _number(0.0), "at": _AT_TRANSMITTER},
    "noise": {"sd": _number(required=True, check="positive"), "at": _AT_TRANSMITTER},
    "freeze": {"value": _number(), "at": _AT_TRANSMITTER},
    "replay": {"window_s": _number(300.0, check="positive"), "at": _AT_WIRE},
    "setpoint": {"value": _number(), "offset": _number()},
    "actuator": {"value": _number(required=True)},
    "dos": {},
    "forged_mqtt": {"value": _number(), "offset": _number()},
}
SENSOR_KINDS = frozenset({"bias", "ramp", "noise", "freeze", "replay"})
_SENSOR_ROLES = ("measurement", "actuator", "status")


@dataclass(frozen=True)
class Step:
    """One attack step: ``kind`` against ``target`` from ``start_s`` for ``duration_s`` (scenario seconds)."""

    id: str
    kind: str
    target: str
    start_s: float
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, t: float) -> bool:
        """Active over ``[start_s, end_s)``: a tick at ``end_s`` is normal again."""
        return self.start_s <= t < self.end_s


@dataclass(frozen=True)
class Scenario:
    plant: str
    name: str
    description: str
    stealth: Stealth
    steps: tuple[Step, ...]
    tail_s: float = DEFAULT_TAIL_S
    path: Path | None = None

    @property
    def length_s(self) -> float:
        """Plant seconds to run: every step, then ``tail_s`` of normal operation to see the plant settle."""
        return max(step.end_s for step in self.steps) + self.tail_s

    def active(self, t: float) -> list[Step]:
        return [step for step in self.steps if step.active(t)]

    def delayed(self, lead_in_s: float) -> Scenario:
        """The same attack with ``lead_in_s`` more seconds of normal operation before every step.

        Learned models need their warm-up before they can see anything (PCA 1200 ticks by default),
        while the shipped files attack after 10 to 15 minutes, as a plant being watched from its first
        minute would be; an exercise on a plant watched for a while gives them a lead-in.
        """
        if isinstance(lead_in_s, bool) or not math.isfinite(lead_in_s) or lead_in_s < 0:
            raise ScenarioError(f"lead-in must be a finite number of seconds >= 0, not {lead_in_s!r}")
        if lead_in_s == 0:
            return self
        return replace(self, steps=tuple(replace(step, start_s=step.start_s + lead_in_s) for step in self.steps))


def _where(path: Path | str | None) -> str:
    return f"{path}: " if path is not None else ""


def _fail(path: Path | str | None, where: str, reason: str) -> ScenarioError:
    return ScenarioError(f"{_where(path)}{where}: {reason}")


def _as_number(value: Any, where: str, path: Path | str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, where, f"must be a finite number, not {value!r}")
    return float(value)


def _check_target(kind: str, target: Any, tags: dict[str, TagSpec], where: str, path: Path | str | None) -> str:
    if not isinstance(target, str) or not target:
        raise _fail(path, where, "must name a tag (or, for dos, a protocol)")
    if kind == "dos":
        if target not in PROTOCOLS:
            raise _fail(path, where, f"{target!r} is not a protocol; one of {', '.join(PROTOCOLS)}")
        return target
    spec = tags.get(target)
    if spec is None:
        raise _fail(path, where, f"{target!r} is not a tag of this plant; tags: {', '.join(tags)}")
    if kind == "setpoint" and spec.role != "setpoint":
        setpoints = [t for t, s in tags.items() if s.role == "setpoint"]
        raise _fail(path, where, f"{target!r} is a {spec.role}, not a setpoint; setpoints: {', '.join(setpoints)}")
    if kind == "actuator" and spec.role not in ("actuator", "status"):
        forceable = [t for t, s in tags.items() if s.role in ("actuator", "status")]
        raise _fail(path, where, f"{target!r} is a {spec.role}; actuator injection targets {', '.join(forceable)}")
    if kind in SENSOR_KINDS and spec.role not in _SENSOR_ROLES:
        raise _fail(path, where, f"{target!r} is a setpoint; tamper with it through kind setpoint")
    if kind == "forged_mqtt" and protocol_of(spec) != "mqtt":
        on_mqtt = [t for t, s in tags.items() if protocol_of(s) == "mqtt"]
        raise _fail(path, where, f"{target!r} is not served over MQTT; MQTT tags: {', '.join(on_mqtt)}")
    return target


def _params(kind: str, raw: Any, where: str, path: Path | str | None) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be a mapping of parameter names to values")
    known = KINDS[kind]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        allowed = ", ".join(known) or "none"
        raise _fail(path, f"{where}.{unknown[0]}", f"unknown parameter for kind {kind}; allowed: {allowed}")
    out: dict[str, Any] = {}
    for name, param in known.items():
        here = f"{where}.{name}"
        if name not in raw:
            if param.required:
                raise _fail(path, here, f"required for kind {kind}")
            if param.default is not None:
                out[name] = param.default
            continue
        value = raw[name]
        if param.kind is float:
            value = _as_number(value, here, path)
            if param.check == "positive" and value <= 0:
                raise _fail(path, here, "must be positive")
        elif param.check == "location" and value not in LOCATIONS:
            raise _fail(path, here, f"must be one of {', '.join(LOCATIONS)}, not {value!r}")
        out[name] = value
    if kind in ("setpoint", "forged_mqtt") and ("value" in out) == ("offset" in out):
        raise _fail(path, where, f"kind {kind} takes exactly one of value and offset")
    return out


_STEP_FIELDS = ("id", "kind", "target", "start_s", "duration_s", "params", "description")
_TOP_FIELDS = ("plant", "name", "description", "stealth", "tail_s", "steps")


def parse_scenario(doc: Any, path: Path | str | None = None, default_name: str = "scenario") -> Scenario:
    """A checked ``Scenario`` from a parsed YAML document; ``ScenarioError`` names what is wrong and where."""
    if not isinstance(doc, dict):
        raise _fail(path, "(top)", "a scenario is a mapping with plant, description, stealth and steps")
    unknown = sorted(set(doc) - set(_TOP_FIELDS))
    if unknown:
        raise _fail(path, unknown[0], f"unknown field; allowed: {', '.join(_TOP_FIELDS)}")
    plant = doc.get("plant")
    if plant not in PLANTS:
        raise _fail(path, "plant", f"{plant!r} is not a plant; one of {', '.join(PLANTS)}")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not _ID.match(name):
        raise _fail(path, "name", "must be letters, digits, _ or -")
    description = doc.get("description")
    if not isinstance(description, str) or not description.strip():
        raise _fail(path, "description", "required: say what threat the scenario models")
    stealth = doc.get("stealth")
    if stealth not in STEALTH:
        raise _fail(path, "stealth", f"must be one of {', '.join(STEALTH)}, not {stealth!r}")
    tail_s = _as_number(doc.get("tail_s", DEFAULT_TAIL_S), "tail_s", path)
    if tail_s < 0:
        raise _fail(path, "tail_s", "must not be negative")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _fail(path, "steps", "a non-empty list of attack steps is required")
    tags = {spec.name: spec for spec in PLANTS[plant].TAGS}
    steps: list[Step] = []
    for k, raw in enumerate(raw_steps):
        where = f"steps[{k}]"
        if not isinstance(raw, dict):
            raise _fail(path, where, "must be a mapping")
        extra = sorted(set(raw) - set(_STEP_FIELDS))
        if extra:
            raise _fail(path, f"{where}.{extra[0]}", f"unknown field; allowed: {', '.join(_STEP_FIELDS)}")
        step_id = raw.get("id", f"step{k + 1}")
        if not isinstance(step_id, str) or not _ID.match(step_id):
            raise _fail(path, f"{where}.id", "must be letters, digits, _ or -")
        if any(s.id == step_id for s in steps):
            raise _fail(path, f"{where}.id", f"{step_id!r} is used by an earlier step")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise _fail(path, f"{where}.kind", f"{kind!r} is not a kind; one of {', '.join(KINDS)}")
        target = _check_target(kind, raw.get("target"), tags, f"{where}.target", path)
        if "start_s" not in raw:
            raise _fail(path, f"{where}.start_s", "required")
        start_s = _as_number(raw["start_s"], f"{where}.start_s", path)
        if start_s < 0:
            raise _fail(path, f"{where}.start_s", "must not be negative")
        if "duration_s" not in raw:
            raise _fail(path, f"{where}.duration_s", "required")
        duration_s = _as_number(raw["duration_s"], f"{where}.duration_s", path)
        if duration_s <= 0:
            raise _fail(path, f"{where}.duration_s", "must be positive")
        params = _params(kind, raw.get("params"), f"{where}.params", path)
        if kind == "replay" and params["window_s"] > start_s:
            raise _fail(path, f"{where}.params.window_s", "the recorded window must end at start_s and begin at >= 0")
        text = raw.get("description", "")
        if not isinstance(text, str):
            raise _fail(path, f"{where}.description", "must be text")
        steps.append(Step(step_id, kind, target, start_s, duration_s, params, text.strip()))
    return Scenario(plant, name, description.strip(), stealth, tuple(steps), tail_s, Path(path) if path else None)


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    return parse_scenario(doc, path, default_name=path.stem)


__all__ = ["KINDS", "PROTOCOLS", "STEALTH", "Scenario", "ScenarioError", "Step", "load_scenario", "parse_scenario"]
