"""A 10k-tag publish lets the server's event loop breathe; a 1k-tag one is still written in one go.

asyncua's ``write_attribute_value`` never suspends, so a row written in one
loop holds the server's event loop for the whole row: clients (and the
receiver's watchdog) would see the simulator hang, not the plant. These tests
run a second coroutine on the server's own loop while ``publish`` runs and
count its turns. A client subscribed to every tag makes each
write cost what it costs in the field (asyncua queues a data change per
monitored item), so a one-piece row stalls the loop for most of a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from asyncua import Client

import sim_plant.servers.opcua as opcua_server
from sim_plant.catalog import TagSpec
from sim_plant.servers.base import WriteLog
from sim_plant.servers.opcua import OpcUaPlantServer
from tests.sim_plant.opcua.conftest import Served, run

MAX_TICKS = 200_000  # bounds the ticker loops below whatever happens


def many_tags(n: int) -> tuple[TagSpec, ...]:
    # 50 tags per area: asyncua checks a new node against every sibling, so large areas make start() quadratic.
    return tuple(
        TagSpec(name=f"TT{i:05d}", unit="degC", lo=0.0, hi=100.0, description="temperature", area=f"A{i // 50:03d}")
        for i in range(n)
    )


def serve(n_tags: int) -> Served:
    served = Served(OpcUaPlantServer("bulk", many_tags(n_tags), WriteLog()))
    served.call(served.server.start(), timeout=120.0)
    return served


@pytest.fixture(scope="module")
def served_10k() -> Iterator[Served]:
    served = serve(10_000)
    try:
        yield served
    finally:
        served.close()


async def turns_during_publish(server: OpcUaPlantServer, row: np.ndarray) -> int:
    """How many times a coroutine that is always ready to run got the loop while ``publish`` ran."""
    turns = 0
    publishing = True

    async def always_ready() -> None:
        nonlocal turns
        while publishing and turns < MAX_TICKS:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(always_ready())
    await asyncio.sleep(0)
    before = turns
    await server.publish(1.0, row)
    during = turns - before
    publishing = False
    await other
    return during


def test_a_10k_tag_row_yields_between_chunks(served_10k: Served) -> None:
    row = np.linspace(0.0, 100.0, 10_000)
    turns = served_10k.call(turns_during_publish(served_10k.server, row))
    assert turns >= 9  # ten chunks of 1000, the loop served between each


class _Count:
    """Counts notifications, so that the test can wait until the client is idle before it measures."""

    def __init__(self) -> None:
        self.received = 0

    def datachange_notification(self, node: object, value: object, data: object) -> None:
        self.received += 1


def test_other_coroutines_get_the_loop_during_a_10k_tag_publish_to_subscribers(served_10k: Served) -> None:
    row = np.linspace(100.0, 0.0, 10_000)
    server = served_10k.server

    async def subscribed_publish() -> int:
        async with Client(served_10k.endpoint, timeout=60) as client:
            # 60 s publishing interval: after the initial values no notification is encoded while we count.
            handler = _Count()
            subscription = await client.create_subscription(60_000, handler)
            nodes = [client.get_node(server.node_id(spec.name)) for spec in server.tags]
            await subscription.subscribe_data_change(nodes)
            for _ in range(600):  # the client's thread decoding 10k initial values would share the GIL
                if handler.received >= len(nodes):
                    break
                await asyncio.sleep(0.05)
            return await asyncio.to_thread(served_10k.call, turns_during_publish(server, row))

    # Counted, not timed: with a subscriber each write costs more, and a wall-clock bound flakes on a busy
    # machine; what must hold is that the loop is let go between chunks (0 turns in one piece).
    assert run(subscribed_publish(), timeout=120.0) >= 9


def test_a_1k_tag_row_is_written_in_one_go() -> None:
    served = serve(opcua_server.PUBLISH_CHUNK)
    try:
        row = np.linspace(0.0, 100.0, opcua_server.PUBLISH_CHUNK)
        assert served.call(turns_during_publish(served.server, row)) == 0
    finally:
        served.close()
