"""The interface every protocol server of the simulator keeps, and the write log they share."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from sim_plant.catalog import TagSpec


@dataclass(frozen=True)
class WriteAttempt:
    """One attempt by a client to change something in the plant."""

    protocol: str  # "modbus" | "opcua" | "mqtt"
    kind: str  # e.g. "fc6", "fc16", "Write", "Call", "publish"
    target: str  # register address, node id or topic
    peer: str  # client address when known
    time: float


@dataclass
class WriteLog:
    """Every write attempt, counted and kept, thread-safe; tests read it to prove plantwatch never writes."""

    attempts: list[WriteAttempt] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, protocol: str, kind: str, target: str, peer: str = "") -> None:
        with self._lock:
            self.attempts.append(WriteAttempt(protocol, kind, target, peer, time.time()))

    def counts(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter((a.protocol, a.kind) for a in self.attempts)

    def __len__(self) -> int:
        with self._lock:
            return len(self.attempts)


class PlantServer(ABC):
    """A protocol server over one plant's tags.

    ``start`` binds (127.0.0.1 by default) and returns once clients can
    connect; ``publish`` sets the served values (NaN = the tag has no value
    now, served as bad quality or left unchanged, as the protocol allows);
    ``stop`` is safe to call twice or without ``start``.
    """

    protocol: str

    def __init__(self, plant_name: str, tags: tuple[TagSpec, ...], writes: WriteLog) -> None:
        self.plant_name = plant_name
        self.tags = tags
        self.writes = writes

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where a client connects, e.g. opc.tcp://127.0.0.1:4840/plantwatch/oil."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def publish(self, ts: float, values: np.ndarray) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def pause(self) -> None:
        """Stop answering, as a denial of service does, and keep the address ``resume`` serves on again.

        A server asked for port 0 got a free one; it is pinned so that clients reconnect where they were.
        """
        port = getattr(self, "port", None)
        if isinstance(port, int) and port > 0 and hasattr(self, "_requested_port"):
            self._requested_port = port
        await self.stop()

    async def resume(self) -> None:
        """Serve again after ``pause``."""
        await self.start()
