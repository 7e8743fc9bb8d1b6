"""The live simulator loop: step the plant at its fixed dt, serve each scan, optionally record it.

At ``speed`` 1 one plant second takes one wall second; at ``speed`` N it takes
1/N. The served source timestamps are the wall clock at the moment of serving,
as a controller stamps its values, so a daemon watching a fast simulation
sees a process that simply moves faster. The recording keeps the plant's own
timeline (its start plus plant time), so a run recorded at any speed replays
the same.

With a ``ScenarioPlayer`` each tick is the player's ``scan()`` (served values
with the wire attacks, the protocols knocked out, the forged MQTT values)
followed by its ``advance()``: the same two calls ``record_scenario`` makes
offline. A protocol under denial of service is paused (its server stops
answering; the MQTT publisher goes silent) and resumed on the same address
when the step ends; forged values go out through a second MQTT client, the
intruder's, beside the plant's own publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sim_plant.plants import Plant
from sim_plant.record import RecordingWriter
from sim_plant.scenarios import Scan, ScenarioPlayer
from sim_plant.servers import PlantServer
from sim_plant.servers.mqtt import MqttPlantServer

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
        player: ScenarioPlayer | None = None,
        intruder: MqttPlantServer | None = None,
        announce: Callable[[str], None] = lambda line: None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.plant = plant
        self.servers = list(servers)
        self.speed = speed
        self.recorder = recorder
        self.start = start or datetime.now(UTC).replace(microsecond=0)
        self.clock = clock
        self.player = player
        self.intruder = intruder
        self.announce = announce
        self.down: frozenset[str] = frozenset()
        self.steps = 0
        self._active: tuple[str, ...] = ()
        self._played = False
        if player is not None and player.plant is not plant:
            raise ValueError("the scenario player must play on this simulation's plant")
        forges = player is not None and any(s.kind == "forged_mqtt" for s in player.scenario.steps)
        if forges and intruder is None:
            raise ValueError(f"scenario {player.scenario.name} forges MQTT messages: it needs an MQTT broker")

    async def run(self, stop: asyncio.Event, steps: int | None = None) -> int:
        """Serve scans until ``stop`` is set or ``steps`` scans were served; returns the count."""
        plant = self.plant
        wall0 = self.clock()
        period = plant.dt / self.speed
        player = self.player
        while not stop.is_set() and (steps is None or self.steps < steps):
            scan = player.scan() if player is not None else None
            values = scan.served if scan is not None else plant.measured()
            if scan is not None:
                await self._follow(scan)
            served_at = self.clock()
            for server in self.servers:
                if server.protocol not in self.down:
                    await server.publish(served_at, values)
            if scan is not None and scan.forged and self.intruder is not None:
                await self.intruder.publish_tags(served_at, scan.forged)
            if self.recorder is not None:
                true = plant.true_values().tolist() if self.recorder.include_true else ()
                if scan is None:
                    self.recorder.write(self.start + timedelta(seconds=plant.t), values.tolist(), true)
                else:
                    moment = self.start + timedelta(seconds=scan.t)
                    self.recorder.write(moment, scan.seen.tolist(), true, scan.label, scan.attack)
            if player is not None:
                player.advance()
            else:
                plant.step()
            self.steps += 1
            delay = wall0 + self.steps * period - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            elif self.steps % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return self.steps

    async def _follow(self, scan: Scan) -> None:
        """Pause and resume servers as denial-of-service steps begin and end, then announce the steps that did."""
        if scan.down != self.down:
            for server in self.servers:
                if server.protocol in scan.down and server.protocol not in self.down:
                    await server.pause()
                elif server.protocol in self.down and server.protocol not in scan.down:
                    await server.resume()
            self.down = scan.down
        active = tuple(step.id for step in scan.active)
        if active != self._active:
            for step_id in self._active:
                if step_id not in active:
                    self.announce(f"attack end {step_id} t={scan.t:g}")
            for step in scan.active:
                if step.id not in self._active:
                    self.announce(f"attack start {step.id} {step.kind} {step.target} t={scan.t:g}")
            self._active = active
        if self.player is not None and not self._played and self.player.finished:
            self._played = True
            self.announce(f"scenario {self.player.scenario.name} played to its end at t={scan.t:g}; normal operation")
