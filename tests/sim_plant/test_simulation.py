"""The live loop: served scans, pacing by speed, and recordings independent of speed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sim_plant.plants import PLANTS
from sim_plant.record import RecordingWriter
from sim_plant.servers import PlantServer, WriteLog
from sim_plant.simulation import Simulation

START = datetime(2026, 3, 1, tzinfo=UTC)


class Capture(PlantServer):
    protocol = "capture"

    def __init__(self, plant) -> None:  # type: ignore[no-untyped-def]
        super().__init__(plant.name, plant.TAGS, WriteLog())
        self.scans: list[tuple[float, np.ndarray]] = []

    @property
    def endpoint(self) -> str:
        return "memory"

    async def start(self) -> None: ...

    async def publish(self, ts: float, values: np.ndarray) -> None:
        self.scans.append((ts, values.copy()))

    async def stop(self) -> None: ...


def test_every_scan_is_served_and_recorded(tmp_path: Path) -> None:
    plant = PLANTS["oil"](seed=3)
    server = Capture(plant)
    with RecordingWriter(tmp_path / "run.csv", plant.tag_names()) as writer:
        sim = Simulation(plant, [server], speed=1e6, recorder=writer, start=START)
        assert asyncio.run(sim.run(asyncio.Event(), steps=50)) == 50
    lines = (tmp_path / "run.csv").read_text().splitlines()
    assert len(lines) == 51 and len(server.scans) == 50
    first = [float(c) for c in lines[1].split(",")[1:-1]]
    assert np.allclose(first, server.scans[0][1], rtol=1e-6)
    assert lines[1].startswith("2026-03-01T00:00:00,") and lines[2].startswith("2026-03-01T00:00:01,")


def test_speed_paces_the_wall_clock_and_not_the_recording(tmp_path: Path) -> None:
    recordings = []
    for speed, steps in ((20.0, 10), (1e6, 10)):
        plant = PLANTS["chemical"](seed=1)
        path = tmp_path / f"run{speed}.csv"
        with RecordingWriter(path, plant.tag_names()) as writer:
            sim = Simulation(plant, speed=speed, recorder=writer, start=START)
            began = time.monotonic()
            asyncio.run(sim.run(asyncio.Event(), steps=steps))
            elapsed = time.monotonic() - began
        if speed == 20.0:
            assert elapsed >= steps * plant.dt / speed * 0.9
        recordings.append(path.read_bytes())
    assert recordings[0] == recordings[1]


def test_stop_ends_the_loop_promptly() -> None:
    plant = PLANTS["radiological"](seed=0)
    sim = Simulation(plant, speed=1.0)

    async def scenario() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(sim.run(stop))
        await asyncio.sleep(0.2)
        stop.set()
        return await asyncio.wait_for(task, 2.0)

    assert asyncio.run(scenario()) == 1


def test_tag_page_is_current() -> None:
    """sim_plant/PLANTS.md is written from the catalog; regenerate with `python -m sim_plant.docs`."""
    from sim_plant.docs import PAGE, render

    assert PAGE.read_text() == render()
