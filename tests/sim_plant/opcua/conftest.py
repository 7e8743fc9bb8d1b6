"""Real OPC-UA servers on loopback for the tests, each on its own event-loop thread.

A server takes ~1 s to start (asyncua builds its standard address space), so
tests share one per module where they can. The server runs on a background
loop; a test drives its asyncua client with ``run`` (``asyncio.run``) and
publishes through ``Served.publish``, which hands the coroutine to the
server's loop. ``WriteLog`` is thread-safe for exactly this.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from sim_plant.plants import PLANTS
from sim_plant.servers.base import WriteLog
from sim_plant.servers.certs import CertFiles, make_client_cert, make_server_cert
from sim_plant.servers.opcua import OpcUaPlantServer

T = TypeVar("T")
TIMEOUT = 20.0


def run(coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
    """Run a client coroutine to completion on a fresh loop, failing (not hanging) after ``timeout``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Served:
    """A started ``OpcUaPlantServer`` living on its own event loop in a daemon thread."""

    def __init__(self, server: OpcUaPlantServer) -> None:
        self.server = server
        self.writes = server.writes
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="opcua-test-server", daemon=True)
        self._thread.start()

    @classmethod
    def started(cls, server: OpcUaPlantServer) -> Served:
        """``server`` started on its own loop: what a test calls again to restart a server on the same port."""
        served = cls(server)
        served.call(server.start())
        return served

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(self, ts: float, values: np.ndarray) -> None:
        self.call(self.server.publish(ts, values))

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def node_id(self, tag: str) -> str:
        return self.server.node_id(tag)

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@contextmanager
def serving(plant: str, **options: Any) -> Iterator[Served]:
    """An OPC-UA server for ``plant``'s catalog with a fresh WriteLog, started and stopped around the block."""
    server = OpcUaPlantServer(plant, PLANTS[plant].TAGS, WriteLog(), **options)
    served = Served(server)
    try:
        served.call(server.start())
        yield served
    finally:
        served.close()


@dataclass(frozen=True)
class Pki:
    server: CertFiles  # the oil server's certificate
    client: CertFiles  # a client certificate


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder: Path = tmp_path_factory.mktemp("pki")
    return Pki(server=make_server_cert(folder, "oil"), client=make_client_cert(folder))
