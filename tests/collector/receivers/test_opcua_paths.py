"""OPC-UA tags named by browse path, against the simulator's address space (Objects/<plant>/<area>/<tag>).

Paths are translated by the server after every connect: a restarted server is followed, and a path that
leads nowhere makes only its own tag BAD, counted as ``bad_node``, while every other tag keeps coming.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from collector.receivers.opcua.nodes import NodeIdError, parse_browse_path, parse_node_key
from collector.samples import Quality
from sim_plant.servers.base import WriteLog
from sim_plant.servers.opcua import OpcUaPlantServer
from tests.collector.receivers.conftest_opcua import NAMES, OIL, bounded, options, running
from tests.conftest import free_port
from tests.sim_plant.opcua.conftest import Served

AREAS = {spec.name: spec.area for spec in OIL.TAGS}
GHOST = "path=/0:Objects/oil/tank_farm/NO.SUCH.TAG"


def path_tags(ns: int) -> list[dict[str, str]]:
    """Half the oil tags by numbered browse names, half by bare names in namespace_uri, and one ghost."""
    tags = []
    for k, name in enumerate(NAMES):
        if k % 2:
            column = f"path=/0:Objects/{ns}:oil/{ns}:{AREAS[name]}/{ns}:{name}"
        else:
            column = f"path=/0:Objects/oil/{AREAS[name]}/{name}"
        tags.append({"name": name, "column": column})
    return [*tags, {"name": "GHOST", "column": GHOST}]


def scan(seed: int) -> np.ndarray:
    plant = OIL(seed=seed)
    plant.run(2)
    return plant.measured()


def test_browse_paths_parse_or_say_why() -> None:
    assert parse_browse_path("/0:Objects/2:oil/TK101.LEVEL", "k") == ((0, "Objects"), (2, "oil"), (None, "TK101.LEVEL"))
    assert parse_browse_path("/a:b", "k") == ((None, "a:b"),)  # only digits make a namespace index
    assert parse_node_key("path=/0:Objects/2:oil").is_path
    assert not parse_node_key("ns=2;s=oil.TK101.LEVEL").is_path
    for bad, reason in [
        ("path=0:Objects/2:oil", "starts at the Root"),
        ("path=/0:Objects//2:oil", "empty browse name"),
        ("path=/0:Objects/2:", "empty browse name"),
        ("path=/70000:Objects", "above 65535"),
    ]:
        with pytest.raises(NodeIdError, match=reason):
            parse_node_key(bad)


def test_tags_by_browse_path_resolve_after_each_connect_and_a_bad_path_is_only_its_tag() -> None:
    port = free_port()
    writes = WriteLog()

    def start() -> Served:
        return Served.started(OpcUaPlantServer("oil", OIL.TAGS, writes, port=port))

    first: Served | None = start()
    second: Served | None = None
    assert first is not None
    ns = first.server.namespace_index
    assert ns is not None
    opts = options(
        first.endpoint,
        path_tags(ns),
        namespace_uri=first.server.namespace_uri,
        watchdog_s=2.0,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
    )
    n, ghost = len(NAMES), len(NAMES)

    async def scan_arrives(run, served: Served, t0: float, seed: int) -> None:  # type: ignore[no-untyped-def]
        row = scan(seed)
        await asyncio.to_thread(served.publish, t0, row)
        await run.until(lambda: int((run.samples()[2] == t0).sum()) >= n, 15, f"the scan at {t0}")
        tag, value, ts, q = run.samples()
        at = (ts == t0) & (q == Quality.GOOD)
        assert sorted(tag[at].tolist()) == list(range(n))  # every real tag, by either path form
        got = np.empty(n)
        got[tag[at]] = value[at]
        discrete = np.array([spec.discrete for spec in OIL.TAGS])
        row[discrete] = (row[discrete] >= 0.5).astype(float)
        np.testing.assert_allclose(got, row)

    async def scenario() -> None:
        nonlocal first, second
        assert first is not None
        async with running(opts) as run:
            await run.until(lambda: run.status.up, 20, "up")
            tag, _, _, q = run.samples()
            assert (tag == ghost).any() and (q[tag == ghost] == Quality.BAD).all()
            assert run.status.errors == {"bad_node": 1}
            t0 = float(int(time.time()))
            await scan_arrives(run, first, t0, seed=1)

            await asyncio.to_thread(first.close)
            first = None
            await run.until(lambda: not run.status.up, 10, "down")
            second = await asyncio.to_thread(start)
            await run.until(lambda: run.status.up, 30, "up again")
            assert run.status.errors["bad_node"] == 2  # translated again on the new session: still nowhere
            await scan_arrives(run, second, t0 + 1, seed=2)
            tag, _, _, q = run.samples()
            assert not (q[tag == ghost] == Quality.GOOD).any()

    try:
        bounded(scenario(), 90)
    finally:
        for served in (first, second):
            if served is not None:
                served.close()
    assert len(writes) == 0, writes.attempts
