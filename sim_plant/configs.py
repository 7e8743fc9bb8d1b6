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
from sim_plant.plants import PLANTS
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
    setpoint still trips limits and ewma). A valve or flow that rests on its
    floor and opens in bursts (a makeup line) has no Gaussian baseline for
    ewma to learn; limits and rate watch it.
    """
    overrides: list[dict[str, Any]] = []
    setpoints = [t.name for t in tags if t.role == "setpoint"]
    if setpoints:
        overrides.append({"tags": setpoints, "flatline": {"enabled": False}})
    bursty = [t.name for t in tags if _rests_on_floor(t)]
    if bursty:
        overrides.append({"tags": bursty, "ewma": {"enabled": False}})
    return {"overrides": overrides} if overrides else {}


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
