"""Helpers for the Modbus receiver tests: the simulator's server, receivers run as tasks, batches drained.

Not a conftest.py (another receiver's helpers share this folder): test modules import from here.
Every test runs its coroutine under ``run_bounded``, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from collector.queue import SampleQueue
from collector.receivers.base import ReceiverContext
from collector.receivers.modbus import ModbusOptions, ModbusReceiver
from collector.samples import SampleBatch
from sim_plant.plants import PLANTS
from sim_plant.servers.base import WriteLog
from sim_plant.servers.modbus import ModbusPlantServer
from sim_plant.servers.register_map import INT16_NO_VALUE, RegisterEntry

# One write log for every simulator server the receiver tests start: it must stay empty for the whole run.
WRITES = WriteLog()


def run_bounded(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout))  # type: ignore[arg-type]


def plant_values(name: str = "oil", steps: int = 30, seed: int = 3) -> np.ndarray:
    plant = PLANTS[name](seed)
    plant.run(steps)
    return plant.measured()


class CountingServer(ModbusPlantServer):
    """The simulator's server, counting the read requests that reach its datastore (by function code)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: dict[int, int] = {}

    async def _on_access(self, function_code: int, *args: Any) -> Any:  # type: ignore[override]
        self.reads[function_code] = self.reads.get(function_code, 0) + 1
        return await super()._on_access(function_code, *args)

    @property
    def total_reads(self) -> int:
        return sum(self.reads.values())


@asynccontextmanager
async def plant_server(
    name: str = "oil",
    word_order: str = "big",
    port: int = 0,
    values: np.ndarray | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[CountingServer]:
    server = CountingServer(name, PLANTS[name].TAGS, WRITES, port=port, word_order=word_order, tls=tls)
    await server.start()
    try:
        if values is not None:
            await server.publish(time.time(), values)
        yield server
    finally:
        await server.stop()


def register_spec(entry: RegisterEntry, *, tag: str | None = None, order: str | None = None) -> dict[str, Any]:
    """A receiver register entry for one row of the simulator's register map."""
    spec: dict[str, Any] = {"tag": tag or entry.tag, "table": entry.table, "address": entry.address, "type": entry.type}
    if entry.type == "float32":
        spec["order"] = order or ("ABCD" if entry.word_order == "big" else "CDAB")
    if entry.type == "int16":
        spec["scale"] = entry.scale
        spec["no_value"] = INT16_NO_VALUE
    return spec


def options(port: int, registers: Iterable[dict[str, Any]], *, name: str = "plc", **extra: Any) -> ModbusOptions:
    regs = list(registers)
    doc: dict[str, Any] = {
        "name": name,
        "kind": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "poll_interval_s": 0.2,
        "timeout_s": 1.0,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1.0,
        "tags": [{"name": r["tag"]} for r in regs],
        "registers": regs,
        **extra,
    }
    return ModbusOptions.model_validate(doc)


def make_receiver(opts: ModbusOptions, index: int = 0, queue: SampleQueue | None = None) -> ModbusReceiver:
    context = ReceiverContext(
        index=index,
        tag_index={tag.source_key: j for j, tag in enumerate(opts.tags)},
        queue=queue if queue is not None else SampleQueue(1_000_000),
        tick_s=1.0,
        log=logging.getLogger(f"test.modbus.{opts.name}"),
    )
    return ModbusReceiver(opts, context)


class Running:
    """A receiver running as its own task; ``batches`` collects what it queued."""

    def __init__(self, receiver: ModbusReceiver) -> None:
        self.receiver = receiver
        self.batches: list[SampleBatch] = []
        self.task = asyncio.create_task(receiver.run(), name=f"receiver:{receiver.name}")

    def drain(self) -> list[SampleBatch]:
        new = self.receiver.context.queue.drain()
        self.batches.extend(new)
        return new

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait until ``predicate()`` holds (draining meanwhile); the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            if self.task.done():
                raise AssertionError(f"receiver task ended: {self.task!r}")
            if predicate():
                return time.monotonic()
            await asyncio.sleep(0.01)
        raise AssertionError(f"not within {timeout} s: {what}; status {self.receiver.status}")

    async def wait_for_batch(self, predicate: Callable[[SampleBatch], bool], timeout: float, what: str) -> SampleBatch:
        """The first batch queued from now on that satisfies ``predicate``."""
        start = len(self.batches)
        found: list[SampleBatch] = []

        def seen() -> bool:
            found.extend(b for b in self.batches[start:] if predicate(b))
            return bool(found)

        await self.wait_for(seen, timeout, what)
        return found[0]

    async def stop(self, within: float = 5.0) -> None:
        """Cancel; the task must still have been running (run() never ends on its own), and end promptly."""
        assert not self.task.done(), f"receiver task ended on its own: {self.task!r}"
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=within)
        assert done, f"receiver still running {within} s after cancel: {self.task!r}"
        assert self.task.cancelled(), f"run() did not end with CancelledError: {self.task!r}"
        self.drain()


def as_dict(batch: SampleBatch, names: list[str]) -> dict[str, tuple[float, int]]:
    """{tag name: (value, quality)} of a batch (last sample per tag)."""
    return {names[int(t)]: (float(v), int(q)) for t, v, q in zip(batch.tag, batch.value, batch.quality, strict=True)}
