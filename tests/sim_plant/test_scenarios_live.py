"""``plantwatch sim --scenario`` against real clients: a DoS seen by asyncua and pymodbus, forged MQTT by mosquitto."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient

from tests.sim_plant.servers.conftest import Broker, require

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


class Sim:
    """``plantwatch sim`` in a child process, its stdout lines read by a thread so a wait never blocks forever."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "sim", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def wait_line(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        stderr = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"no line starting {prefix!r}; saw {self.seen}\n{stderr}")

    def endpoints(self, protocols: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        while set(found) != protocols:
            _, protocol, address = self.wait_line("endpoint ").split()
            found[protocol] = address
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def sims() -> Iterator[list[Sim]]:
    started: list[Sim] = []
    yield started
    for sim in started:
        sim.stop()


def write_scenario(path: Path, plant: str, *steps: dict[str, Any]) -> Path:
    doc = {"plant": plant, "description": "a live test", "stealth": "overt", "tail_s": 5, "steps": list(steps)}
    path.write_text(yaml.safe_dump(doc))
    return path


async def read_level(url: str) -> float:
    async with Client(url, timeout=2) as client:
        ns = await client.get_namespace_index("urn:plantwatch:sim:oil")
        dv = await client.get_node(f"ns={ns};s=oil.TK101.LEVEL").read_data_value()
        assert dv.StatusCode.is_good()
        return float(dv.Value.Value)


async def modbus_answers(port: int) -> bool:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
    try:
        return bool(await client.connect())
    finally:
        client.close()


def test_dos_stops_the_opcua_and_modbus_servers_for_the_window_and_they_return_on_their_ports(
    tmp_path: Path, sims: list[Sim]
) -> None:
    window = {"start_s": 40, "duration_s": 60}
    scenario = write_scenario(
        tmp_path / "dos.yaml",
        "oil",
        {"id": "opcua_down", "kind": "dos", "target": "opcua", **window},
        {"id": "modbus_down", "kind": "dos", "target": "modbus", **window},
    )
    sim = Sim("--scenario", str(scenario), "--opcua-port", "0", "--modbus-port", "0", "--speed", "10",
              "--record", str(tmp_path / "live.csv"))  # fmt: skip
    sims.append(sim)
    endpoints = sim.endpoints({"opcua", "modbus"})
    url = endpoints["opcua"]
    modbus_port = int(endpoints["modbus"].rsplit(":", 1)[1].split("?")[0])
    sim.wait_line("playing scenario dos")

    async def before() -> None:
        assert 4.0 < await read_level(url) < 6.0
        assert await modbus_answers(modbus_port)

    asyncio.run(before())
    sim.wait_line("attack start modbus_down", timeout=20)

    async def during() -> None:
        with pytest.raises((OSError, TimeoutError)):
            await read_level(url)
        assert not await modbus_answers(modbus_port)

    asyncio.run(during())
    sim.wait_line("attack end modbus_down", timeout=20)

    async def after() -> None:
        deadline = time.monotonic() + 15
        while True:  # the servers rebind within a second or two; a client retries as SCADA would
            try:
                assert 4.0 < await read_level(url) < 6.0
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        assert await modbus_answers(modbus_port)

    asyncio.run(after())
    sim.stop()
    with (tmp_path / "live.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    attacked = [r for r in rows if r["label"] == "1"]
    assert len(attacked) == 60 and {r["attack"] for r in attacked} == {"opcua_down+modbus_down"}
    assert all(r["TK101.LEVEL"] == "" and r["LIC101.SP"] == "" and r["P101.RUNNING"] for r in attacked)


def test_forged_mqtt_values_come_from_a_foreign_client_on_the_plants_topic(
    tmp_path: Path, sims: list[Sim], mosquitto: Broker
) -> None:
    scenario = write_scenario(
        tmp_path / "forge.yaml",
        "oil",
        {"id": "forge_running", "kind": "forged_mqtt", "target": "P101.RUNNING", "start_s": 20, "duration_s": 2000,
         "params": {"value": 0}},
    )  # fmt: skip
    sim = Sim("--scenario", str(scenario), "--no-opcua", "--no-modbus", "--speed", "20",
              "--mqtt-broker", f"127.0.0.1:{mosquitto.port}", "--record", str(tmp_path / "live.csv"))  # fmt: skip
    sims.append(sim)
    sim.endpoints({"mqtt"})
    sim.wait_line("attack start forge_running", timeout=20)
    sub = subprocess.run(
        [require("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t",
         "plantwatch/oil/tank_farm/P101.RUNNING", "-C", "30", "-W", "20"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    values = [json.loads(line)["value"] for line in sub.stdout.splitlines()]
    assert len(values) == 30, sub.stderr
    # The plant's own publisher says the pump runs; the intruder's messages on the same topic say it stopped.
    assert set(values) == {0.0, 1.0}, values
    mosquitto.wait_for_log(r"New client connected .* as intruder")
    sim.stop()
    with (tmp_path / "live.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    forged = [r for r in rows if r["attack"] == "forge_running"]
    assert forged and all(r["P101.RUNNING"] == "0" for r in forged)
    assert all(r["P101.RUNNING"] == "1" for r in rows[:20])
