"""Helpers for the OPC-UA receiver tests: certificates, a receiver wired to a queue, waiting on conditions.

The simulator's OPC-UA server runs on its own event-loop thread
(``tests.sim_plant.opcua.conftest.serving``); the receiver runs on the test's
loop (``asyncio.run``) like in the daemon, and the test drains its queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collector.queue import SampleQueue
from collector.receivers.base import ReceiverContext
from collector.receivers.opcua import OpcUaOptions, OpcUaReceiver
from collector.samples import SampleBatch
from sim_plant.plants import PLANTS
from sim_plant.servers.certs import CertFiles, make_client_cert, make_server_cert

OIL = PLANTS["oil"]
NAMES = OIL.tag_names()
TIMEOUT = 60.0


@dataclass(frozen=True)
class Pki:
    server: CertFiles  # the oil server's certificate
    impostor: CertFiles  # another certificate for the same server name and URI, other key
    client: CertFiles


def make_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates for a test module's ``pki`` fixture (tens of milliseconds to generate)."""
    folder: Path = tmp_path_factory.mktemp("opcua-pki")
    return Pki(
        server=make_server_cert(folder / "server", "oil"),
        impostor=make_server_cert(folder / "impostor", "oil"),
        client=make_client_cert(folder / "client"),
    )


def client_security(
    client: CertFiles, server_certificate: Path, mode: str = "SignAndEncrypt", policy: str = "Basic256Sha256"
) -> dict[str, str]:
    """A source's ``security`` section: this client's certificate, the server's pinned."""
    return {
        "policy": policy,
        "mode": mode,
        "certificate": str(client.cert),
        "private_key": str(client.key),
        "server_certificate": str(server_certificate),
    }


def oil_tags(node_id: Callable[[str], str]) -> list[dict[str, Any]]:
    return [{"name": name, "column": node_id(name)} for name in NAMES]


def options(endpoint: str, tags: list[dict[str, Any]], **extra: Any) -> OpcUaOptions:
    doc = {"name": "plc", "kind": "opcua", "endpoint": endpoint, "tags": tags, "publishing_interval_ms": 100, **extra}
    return OpcUaOptions.model_validate(doc)


class Run:
    """A receiver running as a task, its queue, and what it delivered so far."""

    def __init__(self, opts: OpcUaOptions, logger: logging.Logger) -> None:
        self.queue = SampleQueue(1_000_000)
        keys = [tag.source_key for tag in opts.tags]
        context = ReceiverContext(
            index=0, tag_index={k: i for i, k in enumerate(keys)}, queue=self.queue, tick_s=1.0, log=logger
        )
        self.receiver = OpcUaReceiver(opts, context)
        self.batches: list[SampleBatch] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def status(self):  # type: ignore[no-untyped-def]
        return self.receiver.status

    def take(self) -> list[SampleBatch]:
        new = self.queue.drain()
        self.batches.extend(new)
        return new

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tag, value, ts, quality) of everything delivered so far."""
        self.take()
        if not self.batches:
            empty = np.empty(0)
            return empty.astype(np.int32), empty, empty, empty.astype(np.uint8)
        return (
            np.concatenate([b.tag for b in self.batches]),
            np.concatenate([b.value for b in self.batches]),
            np.concatenate([b.ts for b in self.batches]),
            np.concatenate([b.quality for b in self.batches]),
        )

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait until ``condition()``; returns the seconds it took; fails the test after ``timeout``."""
        began = time.monotonic()
        while not condition():
            if self.task is not None and self.task.done():
                raise AssertionError(f"receiver task ended while waiting for {what}: {self.task!r}")
            if time.monotonic() - began > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; status {self.status}")
            await asyncio.sleep(0.02)
        return time.monotonic() - began


@asynccontextmanager
async def running(opts: OpcUaOptions, logger: logging.Logger | None = None) -> AsyncIterator[Run]:
    run = Run(opts, logger or logging.getLogger("plantwatch.test.opcua"))
    run.task = asyncio.create_task(run.receiver.run())
    try:
        yield run
    finally:
        run.task.cancel()
        results = await asyncio.gather(run.task, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError), f"run() ended with {results[0]!r}"
        run.take()


def bounded(coro: Any, timeout: float = TIMEOUT) -> Any:
    async def inner() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(inner())
