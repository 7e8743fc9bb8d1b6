"""plantwatch configs for the simulated plants, written from the tag catalog.

Each plant's tags are split over the three protocols the simulator serves,
as a real site mixes them: process measurements over OPC-UA, setpoints and
actuator outputs from the PLC's Modbus registers, discrete states over MQTT.
The shipped ``config/<plant>.yaml`` files are this module's output (a test
checks they are current), and ``plantwatch demo`` writes the same document
with its own ports.

    python -m sim_plant.configs            # rewrite config/oil.yaml, chemical.yaml, radiological.yaml
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim_plant.catalog import TagSpec, as_config_tags
from sim_plant.plants import PLANTS, chemical, oil, radiological
from sim_plant.servers.mqtt import topic_for
from sim_plant.servers.register_map import register_map, unit_id_for

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class Ports:
    opcua: int = 4840
    modbus: int = 5020
    mqtt: int = 11883
    metrics: int = 9108


def protocol_of(spec: TagSpec) -> str:
    if spec.role in ("setpoint", "actuator"):
        return "modbus"
    if spec.role == "status":
        return "mqtt"
    return "opcua"


def _config_tags(specs: list[TagSpec]) -> list[dict[str, Any]]:
    """``as_config_tags``, with the range of a transmitter that rests on its floor opened below it.

    A makeup valve that is shut or a flow meter at its low-flow cut-off reads
    exactly ``min_reading``; when that is also the bottom of its normal range,
    a closed valve would sit on the alarm limit and warn at every shut-off.
    """
    tags = as_config_tags(specs)
    for spec, tag in zip(specs, tags, strict=True):
        if _rests_on_floor(spec):
            assert spec.min_reading is not None
            tag["range"] = [spec.min_reading - 0.05 * (spec.hi - spec.lo), spec.hi]
    return tags


def _rests_on_floor(spec: TagSpec) -> bool:
    return spec.min_reading is not None and spec.lo <= spec.min_reading


def detector_settings(tags: tuple[TagSpec, ...]) -> dict[str, Any]:
    """Overrides that fit the tags' roles, so that a healthy plant raises no alert.

    A setpoint sits still by design, so flatline must not watch it (a tampered
    setpoint still trips limits and ewma), and one that moves more than a few
    times in ten minutes is not an operator's doing: the command watch counts
    its changes, and a status's (a pump started and stopped over and over). A valve or flow that rests on its
    floor and opens in bursts (a makeup line) has no Gaussian baseline for
    ewma to learn, and its short bursts from a clipped controller output repeat
    closely enough to look replayed; limits and rate watch it.

    The PCA model is one per plant area (a unit), across the protocols its tags come over: the
    relations worth watching (a pump's speed against its flow and power, a valve against the flow
    it passes) join a PLC's outputs to the transmitters. Setpoints stay out of it: they are the
    operators' inputs, not the process, and the command watch counts their changes.
    """
    overrides: list[dict[str, Any]] = []
    for number, area in enumerate(dict.fromkeys(t.area for t in tags), start=1):
        overrides.append({"tags": [t.name for t in tags if t.area == area], "pca": {"group": number}})
    setpoints = [t.name for t in tags if t.role == "setpoint"]
    if setpoints:
        overrides.append(
            {
                "tags": setpoints,
                "flatline": {"enabled": False},
                "command": {"enabled": True},
                "pca": {"enabled": False},
            }
        )
    statuses = [t.name for t in tags if t.role == "status"]
    if statuses:  # a pump started or stopped, a switch that trips: a few times a day, not every few minutes
        overrides.append({"tags": statuses, "command": {"enabled": True, "deadband": 0.5}})
    bursty = [t.name for t in tags if _rests_on_floor(t)]
    if bursty:
        overrides.append({"tags": bursty, "ewma": {"enabled": False}, "replay": {"enabled": False}})
    return {"overrides": overrides} if overrides else {}


BALANCE_TICKS = 300
"""Window of the balances, in ticks: long enough that a level's or a temperature's scan-to-scan noise
averages out of the difference it makes, short enough to be learned before the first attack."""


def _tracking(pv: str, sp: str, band: float) -> dict[str, Any]:
    """A controller holds its process value at the setpoint: a lasting gap wider than ``band`` is not normal."""
    return {"name": f"{sp.split('.')[0].lower()}_tracking", "expression": f"{pv} - {sp}", "tolerance": band}


def _running(status: str, measured: str, rated: float, band: float) -> dict[str, Any]:
    """A pump reported running moves ``rated`` (give or take ``band``); one reported stopped moves nothing.

    The status is averaged over half a minute so that a legitimate start or stop, whose flow and power
    take seconds to follow, stays within the band.
    """
    unit = status.split(".")[0].lower()
    what = measured.split(".")[1].lower()
    return {
        "name": f"{unit}_running_vs_{what}",
        "expression": f"{measured} - RATED * avg({status}, 30)",
        "constants": {"RATED": rated},
        "tolerance": band,
    }


def invariants(plant: str) -> list[dict[str, Any]]:
    """Relations the plant's physics and controls keep, each ~0 (or constant) when the plant is healthy.

    Balances over ``BALANCE_TICKS`` see a slow false-data drift the tag-by-tag detectors learn along
    with; the tracking and running checks catch a controller or a pump that does not do what it is told.
    """
    n = BALANCE_TICKS
    if plant == "oil":
        return [
            {
                "name": "tk101_mass_balance",
                "expression": f"(TK101.LEVEL - lag(TK101.LEVEL, {n})) * AREA * 3600 / {n}"
                f" - avg(FT101.FLOW_IN - FT102.FLOW_OUT, {n})",
                "constants": {"AREA": oil.AREA},
                "warmup": n,
            },
            _tracking("TK101.LEVEL", "LIC101.SP", 0.3),
            _running("P101.RUNNING", "FT102.FLOW_OUT", 250.0, 200.0),
            _running("P101.RUNNING", "P101.POWER", 60.0, 45.0),
        ]
    if plant == "chemical":
        return [
            {
                "name": "jacket_energy_balance",
                "expression": f"UA * avg(TT201.TEMP - TT204.COOLANT_OUT, {n})"
                f" - RHO_CP_W / 3600 * avg(FT202.COOLANT_FLOW * (TT204.COOLANT_OUT - TT203.COOLANT_IN), {n})"
                f" - RHO_CP_W * V_JACKET * (TT204.COOLANT_OUT - lag(TT204.COOLANT_OUT, {n})) / {n}",
                "constants": {"UA": chemical.UA, "RHO_CP_W": chemical.RHO_CP_W, "V_JACKET": chemical.V_JACKET},
                "tolerance": 3.0,  # kW: twice the worst a healthy run shows (the outlet's lag, the averaged noise)
                "warmup": n,
            },
            _tracking("TT201.TEMP", "TIC201.SP", 1.0),
            _tracking("FT201.FEED_FLOW", "FIC201.SP", 0.5),
            _tracking("LT201.LEVEL", "LIC201.SP", 0.05),
            _running("P202.RUNNING", "FT202.COOLANT_FLOW", 5.0, 3.5),
        ]
    if plant == "radiological":
        return [
            {
                "name": "hx301_energy_balance",
                "expression": "RHO_CP / 3600 * avg(FT301.PRIMARY_FLOW * (TT301.POOL_TEMP - TT302.HX_PRIMARY_OUT)"
                f" - FT302.SECONDARY_FLOW * (TT304.HX_SECONDARY_OUT - TT303.HX_SECONDARY_IN), {n})",
                "constants": {"RHO_CP": radiological.RHO_CP},
                "tolerance": 60.0,  # kW of ~2 MW: twice the worst a healthy run shows (the outlets' thermal lag)
                "warmup": n,
            },
            _tracking("TT301.POOL_TEMP", "TIC301.SP", 1.0),
            _tracking("LT301.POOL_LEVEL", "LIC301.SP", 0.05),
            _running("P301.RUNNING", "FT301.PRIMARY_FLOW", 400.0, 300.0),
        ]
    return []


def plant_config(plant: str, ports: Ports = Ports(), state_dir: str = "../state/{plant}") -> dict[str, Any]:
    tags = PLANTS[plant].TAGS
    by_protocol = {p: [t for t in tags if protocol_of(t) == p] for p in ("opcua", "modbus", "mqtt")}
    sources: list[dict[str, Any]] = []
    if by_protocol["opcua"]:
        opc_tags = _config_tags(by_protocol["opcua"])
        for tag in opc_tags:
            tag["column"] = f"{plant}.{tag['name']}"
        sources.append(
            {
                "name": f"{plant}-opcua",
                "kind": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{ports.opcua}/plantwatch/{plant}",
                "namespace_uri": f"urn:plantwatch:sim:{plant}",
                "publishing_interval_ms": 500,
                "tags": opc_tags,
            }
        )
    if by_protocol["modbus"]:
        names = {t.name for t in by_protocol["modbus"]}
        registers = [
            {"tag": e.tag, "table": "holding", "address": e.address, "type": "float32", "order": "ABCD"}
            for e in register_map(tags, "big")
            if e.table == "holding" and e.tag in names
        ]
        sources.append(
            {
                "name": f"{plant}-plc",
                "kind": "modbus",
                "host": "127.0.0.1",
                "port": ports.modbus,
                "unit_id": unit_id_for(plant),
                "poll_interval_s": 1.0,
                "tags": _config_tags(by_protocol["modbus"]),
                "registers": registers,
            }
        )
    if by_protocol["mqtt"]:
        sources.append(
            {
                "name": f"{plant}-mqtt",
                "kind": "mqtt",
                "host": "127.0.0.1",
                "port": ports.mqtt,
                "client_id": f"plantwatch-{plant}",
                "protocol": "v311",  # the embedded broker (amqtt) speaks MQTT 3.1.1 only
                "topics": [
                    {"filter": topic_for(plant, t), "tag_from": "topic_segment", "segment": -1}
                    for t in by_protocol["mqtt"]
                ],
                "tags": _config_tags(by_protocol["mqtt"]),
            }
        )
    return {
        "site": f"sim-{plant}",
        "state_dir": state_dir.format(plant=plant),
        "exporter": {"listen": f"127.0.0.1:{ports.metrics}"},
        "pipeline": {"tick_s": 1.0, "lateness_s": 2.0, "snapshot_interval_s": 30},
        "sources": sources,
        **({"detectors": settings} if (settings := detector_settings(tags)) else {}),
        "alerting": {"pending_s": 5, "clear_s": 30},
        **({"invariants": found} if (found := invariants(plant)) else {}),
    }


def render(plant: str, ports: Ports = Ports(), state_dir: str = "../state/{plant}") -> str:
    head = (
        f"# plantwatch watching the simulated {plant} plant over OPC-UA, Modbus TCP and MQTT.\n"
        f"# Written by `python -m sim_plant.configs` from the plant's tag catalog; edit that, not this.\n"
        f"# Start the plant with `plantwatch sim --plant {plant} --embedded-broker 127.0.0.1:{ports.mqtt}`,\n"
        f"# then `plantwatch run -c config/{plant}.yaml`; or run both at once with `plantwatch demo --plant {plant}`.\n"
    )
    return head + yaml.safe_dump(plant_config(plant, ports, state_dir), sort_keys=False, width=120)


def main() -> int:
    for plant in PLANTS:
        path = CONFIG_DIR / f"{plant}.yaml"
        path.write_text(render(plant), encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
