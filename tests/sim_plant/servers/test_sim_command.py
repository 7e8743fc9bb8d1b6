"""``plantwatch sim`` as a tester runs it: one process serving a plant over all three protocols."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from asyncua import Client

from sim_plant.plants import PLANTS
from tests.sim_plant.servers.conftest import Broker, require
from tests.sim_plant.servers.test_modbus import mbpoll, mbpoll_values

ROOT = Path(__file__).resolve().parents[3]


def start_sim(tmp_path: Path, broker: Broker, plant: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    cmd = [
        sys.executable,
        "-m",
        "collector",
        "sim",
        "--plant",
        plant,
        "--opcua-port",
        "0",
        "--modbus-port",
        "0",
        "--mqtt-broker",
        f"127.0.0.1:{broker.port}",
        "--speed",
        "20",
        "--record",
        str(tmp_path / "sim.csv"),
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    endpoints: dict[str, str] = {}
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline and len(endpoints) < 3:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("endpoint "):
            _, protocol, address = line.split()
            endpoints[protocol] = address
    if len(endpoints) < 3:
        proc.kill()
        raise AssertionError(
            f"sim did not print its endpoints: {endpoints}\n{proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, endpoints


def test_sim_serves_one_plant_over_all_three_protocols(tmp_path: Path, mosquitto: Broker) -> None:
    plant = PLANTS["chemical"]
    tags = plant.TAGS
    proc, endpoints = start_sim(tmp_path, mosquitto, "chemical")
    try:
        # MQTT: mosquitto's own client receives JSON for the plant's topics.
        sub = subprocess.run(
            [
                require("mosquitto_sub"),
                "-h",
                "127.0.0.1",
                "-p",
                str(mosquitto.port),
                "-t",
                "plantwatch/chemical/#",
                "-C",
                str(2 * len(tags)),
                "-v",
                "-W",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert sub.returncode == 0, sub.stderr
        seen = {}
        for line in sub.stdout.splitlines():
            topic, payload = line.split(" ", 1)
            seen[topic.rsplit("/", 1)[1]] = json.loads(payload)
        assert set(seen) == {t.name for t in tags}
        assert all(p["quality"] == "good" for p in seen.values())

        # Modbus: mbpoll reads the float32 holding registers (ABCD), one per analog tag, inside its range.
        match = re.match(r"modbus-tcp://127\.0\.0\.1:(\d+)\?unit=(\d+)", endpoints["modbus"])
        assert match
        analog = [t for t in tags if not t.discrete]
        rc, out = asyncio.run(
            mbpoll(
                "-m",
                "tcp",
                "-a",
                match[2],
                "-0",
                "-r",
                "0",
                "-c",
                str(len(analog)),
                "-t",
                "4:float",
                "-B",
                "-1",
                "-o",
                "2",
                "-p",
                match[1],
                "127.0.0.1",
            )
        )
        assert rc == 0, out
        values = [float(v) for v in mbpoll_values(out).values()]
        assert len(values) == len(analog)
        for spec, value in zip(analog, values, strict=True):
            assert spec.lo - (spec.hi - spec.lo) <= value <= spec.hi + (spec.hi - spec.lo), (spec.name, value)

        # OPC-UA: an asyncua client reads every tag by its documented node id.
        async def read_all() -> list[object]:
            async with Client(endpoints["opcua"]) as client:
                ns = await client.get_namespace_index("urn:plantwatch:sim:chemical")
                return [await client.get_node(f"ns={ns};s=chemical.{t.name}").read_value() for t in tags]

        read = asyncio.run(read_all())
        assert len(read) == len(tags) and all(v is not None for v in read)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "write attempts by clients: 0 (none)" in out
    rows = (tmp_path / "sim.csv").read_text().splitlines()
    assert rows[0].split(",")[1:-1] == [t.name for t in tags]
    served = int(re.search(r"served (\d+) scans", out)[1])  # type: ignore[index]
    assert served >= 2 and len(rows) == served + 1


def test_sim_embedded_broker_needs_no_external_server(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "sim",
            "--plant",
            "radiological",
            "--no-opcua",
            "--no-modbus",
            "--embedded-broker",
            f"127.0.0.1:{port}",
            "--speed",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"endpoint broker mqtt://127.0.0.1:{port}"
        sub = subprocess.run(
            [
                require("mosquitto_sub"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                "plantwatch/radiological/#",
                "-C",
                "5",
                "-W",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert sub.returncode == 0, sub.stderr
        assert len([json.loads(line) for line in sub.stdout.splitlines()]) == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0
