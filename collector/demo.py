"""``plantwatch demo``: a simulated plant and the daemon watching it, from one command.

The simulator runs as a child process (its own core for the physics and the
three servers, with an embedded MQTT broker); the daemon runs here with the
plant's config written from the simulator's tag catalog, reading all three
protocols. Stopping the demo (Ctrl-C, SIGTERM) stops both. With a scenario
the simulator plays its attack timeline from the first scan (``--speed``
plays it faster) and its ``attack start``/``attack end`` lines go to the
demo's log, so the alerts on /metrics can be read against the steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from collector.config import load_config
from collector.daemon import serve
from sim_plant.configs import Ports, render

log = logging.getLogger("plantwatch.demo")
PROTOCOLS = ("broker", "opcua", "modbus", "mqtt")


def sim_command(
    plant: str, ports: Ports, speed: float, seed: int, scenario: Path | None = None, lead_in_s: float = 0.0
) -> list[str]:
    """The simulator's command line: the plant on the demo's ports, its scenario if any."""
    cmd = [
        sys.executable, "-m", "collector", "sim", "--plant", plant,
        "--opcua-port", str(ports.opcua), "--modbus-port", str(ports.modbus),
        "--embedded-broker", f"127.0.0.1:{ports.mqtt}", "--speed", str(speed), "--seed", str(seed),
    ]  # fmt: skip
    if scenario is not None:
        cmd += ["--scenario", str(scenario.resolve()), "--lead-in", repr(float(lead_in_s))]
    return cmd


async def _start_sim(
    plant: str, ports: Ports, speed: float, seed: int, scenario: Path | None = None, lead_in_s: float = 0.0
) -> asyncio.subprocess.Process:
    cmd = sim_command(plant, ports, speed, seed, scenario, lead_in_s)
    # Its own session: Ctrl-C reaches the daemon only, which stops first and then ends the simulator.
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, env=os.environ.copy(), start_new_session=True
    )
    seen: set[str] = set()
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while seen != set(PROTOCOLS):
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"the simulator exited with {await proc.wait()} before serving")
            if line.startswith("endpoint "):
                _, protocol, address = line.split()
                seen.add(protocol)
                log.info("simulator serving", extra={"protocol": protocol, "endpoint": address})
    return proc


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        log.info("simulator", extra={"line": line.decode().strip()})


async def run_demo(
    plant: str,
    state_dir: Path,
    ports: Ports,
    speed: float = 1.0,
    seed: int = 0,
    scenario: Path | None = None,
    lead_in_s: float = 0.0,
) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / f"{plant}.yaml"
    config.write_text(render(plant, ports, state_dir=str(state_dir.resolve())), encoding="utf-8")
    cfg = load_config(config)
    sim = await _start_sim(plant, ports, speed, seed, scenario, lead_in_s)
    drain = asyncio.create_task(_drain(sim))
    print(
        f"plantwatch demo: the {plant} plant is served on OPC-UA :{ports.opcua}, Modbus :{ports.modbus}, "
        f"MQTT :{ports.mqtt}; metrics on http://127.0.0.1:{ports.metrics}/metrics (config {config})"
        + (f"; playing scenario {scenario}" if scenario is not None else ""),
        flush=True,
    )
    try:
        return await serve(cfg)
    finally:
        if sim.returncode is None:
            sim.terminate()
            try:
                await asyncio.wait_for(sim.wait(), 10)
            except TimeoutError:
                sim.kill()
                await sim.wait()
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
