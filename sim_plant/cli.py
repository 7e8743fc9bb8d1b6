"""``plantwatch sim``: a simulated plant served over OPC-UA, Modbus TCP and MQTT until stopped.

It prints one ``endpoint <protocol> <address>`` line per server as soon as
clients can connect, so people and scripts alike know where to look, and at
the end the number of write attempts clients made (plantwatch must make none).
With ``--scenario`` it plays an attack timeline (``sim_plant/scenarios/``)
from the first served scan on, announcing ``attack start <id> ...`` and
``attack end <id>`` lines as steps begin and end, and ``--record`` writes the
ground truth (``label``, ``attack``) beside the served values.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from sim_plant.plants import PLANTS
from sim_plant.record import DEFAULT_WARMUP_S, RecordingWriter
from sim_plant.scenarios import Scenario, ScenarioError, ScenarioPlayer, load_scenario, warm_up
from sim_plant.servers import PlantServer, WriteLog

log = logging.getLogger("plantwatch.sim")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sim", help="run a simulated plant served over OPC-UA, Modbus TCP and MQTT")
    p.add_argument("--plant", choices=sorted(PLANTS), help="required unless --scenario names the plant")
    p.add_argument("--scenario", type=Path, help="play this attack scenario file (see sim_plant/scenarios/)")
    p.add_argument(
        "--lead-in",
        type=float,
        default=0.0,
        metavar="S",
        help="with --scenario: every step S seconds later, so learned models are warm (PCA: 1200 s)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address the servers bind (default 127.0.0.1)")
    p.add_argument("--opcua-port", type=int, default=4840, help="0 picks a free port")
    p.add_argument("--no-opcua", action="store_true")
    p.add_argument("--modbus-port", type=int, default=5020, help="0 picks a free port")
    p.add_argument("--modbus-word-order", choices=["big", "little"], default="big")
    p.add_argument("--no-modbus", action="store_true")
    p.add_argument("--mqtt-broker", metavar="HOST:PORT", help="publish to this broker (no MQTT without it)")
    p.add_argument(
        "--embedded-broker", metavar="HOST:PORT", help="run an MQTT broker in this process and publish to it"
    )
    p.add_argument("--mqtt-username")
    p.add_argument("--mqtt-password-env", metavar="NAME", help="environment variable holding the MQTT password")
    p.add_argument("--speed", type=float, default=1.0, help="plant seconds per wall second (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="stop after this many scans (default: run until stopped)")
    p.add_argument("--record", type=Path, help="write the served values to this CSV recording")
    p.add_argument("--record-true", action="store_true", help="add the noise-free values to the recording")
    p.set_defaults(func=cmd_sim)


def build_servers(args: argparse.Namespace, plant_name: str, tags, writes: WriteLog) -> list[PlantServer]:  # type: ignore[no-untyped-def]
    servers: list[PlantServer] = []
    if not args.no_opcua:
        from sim_plant.servers.opcua import OpcUaPlantServer

        servers.append(OpcUaPlantServer(plant_name, tags, writes, host=args.host, port=args.opcua_port))
    if not args.no_modbus:
        from sim_plant.servers.modbus import ModbusPlantServer

        servers.append(
            ModbusPlantServer(
                plant_name, tags, writes, host=args.host, port=args.modbus_port, word_order=args.modbus_word_order
            )
        )
    broker = args.mqtt_broker or args.embedded_broker
    if broker:
        from sim_plant.servers.mqtt import MqttPlantServer

        host, _, port = broker.rpartition(":")
        password = os.environ.get(args.mqtt_password_env) if args.mqtt_password_env else None
        servers.append(
            MqttPlantServer(
                plant_name,
                tags,
                writes,
                host=host or "127.0.0.1",
                port=int(port),
                username=args.mqtt_username,
                password=password,
            )
        )
    return servers


def resolve_scenario(args: argparse.Namespace) -> Scenario | None:
    """Load ``--scenario`` and settle the plant: named by either, and they must agree."""
    scenario = load_scenario(args.scenario).delayed(args.lead_in) if args.scenario is not None else None
    if scenario is None and args.lead_in:
        raise ScenarioError("--lead-in delays a scenario's steps: give --scenario")
    if scenario is not None:
        if args.plant is not None and args.plant != scenario.plant:
            raise ScenarioError(f"--plant {args.plant} disagrees with {args.scenario}, a scenario for {scenario.plant}")
        args.plant = scenario.plant
    if args.plant is None:
        raise ScenarioError("--plant is required without --scenario")
    return scenario


async def serve(args: argparse.Namespace, scenario: Scenario | None = None) -> int:
    from sim_plant.simulation import Simulation

    plant = PLANTS[args.plant](seed=args.seed)
    player = None
    if scenario is not None:
        warm_up(plant, DEFAULT_WARMUP_S)  # as record_scenario does, so live and offline runs match
        player = ScenarioPlayer(scenario, plant, seed=args.seed)
    writes = WriteLog()
    servers = build_servers(args, plant.name, plant.TAGS, writes)
    intruder = None
    broker_address = args.mqtt_broker or args.embedded_broker
    if scenario is not None and broker_address and any(s.kind == "forged_mqtt" for s in scenario.steps):
        from sim_plant.servers.mqtt import MqttPlantServer

        host, _, port = broker_address.rpartition(":")
        intruder = MqttPlantServer(
            plant.name, plant.TAGS, WriteLog(), host=host or "127.0.0.1", port=int(port), client_id="intruder"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    recorder = (
        RecordingWriter(args.record, plant.tag_names(), args.record_true, attack_column=scenario is not None)
        if args.record
        else None
    )
    started: list[PlantServer] = []
    broker = None
    try:
        if args.embedded_broker:
            from sim_plant.broker import EmbeddedBroker

            host, _, port = args.embedded_broker.rpartition(":")
            broker = EmbeddedBroker(host or "127.0.0.1", int(port))
            await broker.start()
            print(f"endpoint broker {broker.endpoint}", flush=True)
        for server in servers:
            await server.start()
            started.append(server)
            print(f"endpoint {server.protocol} {server.endpoint}", flush=True)
        if intruder is not None:
            await intruder.start()
            started.append(intruder)
        print(
            f"serving the {args.plant} plant ({len(plant.TAGS)} tags) at speed {args.speed:g}; Ctrl-C stops", flush=True
        )
        if scenario is not None:
            print(
                f"playing scenario {scenario.name} ({scenario.stealth}, {len(scenario.steps)} steps, "
                f"{scenario.length_s:g} plant seconds)",
                flush=True,
            )
        simulation = Simulation(
            plant,
            servers,
            speed=args.speed,
            recorder=recorder,
            player=player,
            intruder=intruder,
            announce=lambda line: print(line, flush=True),
        )
        steps = await simulation.run(stop, args.steps)
    finally:
        for server in reversed(started):
            await server.stop()
        if broker is not None:
            await broker.stop()
        if recorder is not None:
            recorder.close()
    counts = writes.counts()
    detail = ", ".join(f"{p} {k}: {n}" for (p, k), n in sorted(counts.items())) or "none"
    print(f"served {steps} scans; write attempts by clients: {len(writes)} ({detail})", flush=True)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        scenario = resolve_scenario(args)
        forges = scenario is not None and any(step.kind == "forged_mqtt" for step in scenario.steps)
        if forges and not (args.mqtt_broker or args.embedded_broker):
            raise ScenarioError(f"{args.scenario} forges MQTT messages: give --mqtt-broker or --embedded-broker")
    except ScenarioError as exc:
        print(f"plantwatch sim: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(args, scenario))
