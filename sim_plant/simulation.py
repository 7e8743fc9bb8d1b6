"""The live simulator loop: step the plant at its fixed dt, serve each scan, optionally record it.

At ``speed`` 1 one plant second takes one wall second; at ``speed`` N it takes
1/N. The served source timestamps are the wall clock at the moment of serving,
as a controller stamps its values, so a daemon watching a fast simulation
sees a process that simply moves faster. The recording keeps the plant's own
timeline (its start plus plant time), so a run recorded at any speed replays
the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sim_plant.plants import Plant
from sim_plant.record import RecordingWriter
from sim_plant.servers import PlantServer

YIELD_EVERY = 256  # steps between yields to the event loop when running flat out


class Simulation:
    def __init__(
        self,
        plant: Plant,
        servers: Sequence[PlantServer] = (),
        *,
        speed: float = 1.0,
        recorder: RecordingWriter | None = None,
        start: datetime | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.plant = plant
        self.servers = list(servers)
        self.speed = speed
        self.recorder = recorder
        self.start = start or datetime.now(UTC).replace(microsecond=0)
        self.clock = clock
        self.steps = 0

    async def run(self, stop: asyncio.Event, steps: int | None = None) -> int:
        """Serve scans until ``stop`` is set or ``steps`` scans were served; returns the count."""
        plant = self.plant
        wall0 = self.clock()
        period = plant.dt / self.speed
        while not stop.is_set() and (steps is None or self.steps < steps):
            values = plant.measured()
            served_at = self.clock()
            for server in self.servers:
                await server.publish(served_at, values)
            if self.recorder is not None:
                true = plant.true_values().tolist() if self.recorder.include_true else ()
                self.recorder.write(self.start + timedelta(seconds=plant.t), values.tolist(), true)
            plant.step()
            self.steps += 1
            delay = wall0 + self.steps * period - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            elif self.steps % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return self.steps
