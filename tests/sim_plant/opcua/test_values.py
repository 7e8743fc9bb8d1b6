"""Published values as a client sees them: read, subscribed, and NaN served as bad quality."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
from asyncua import Client, ua

from sim_plant.plants import PLANTS
from tests.sim_plant.opcua.conftest import Served, run, serving

OIL = PLANTS["oil"]
LEVEL = OIL.tag_names().index("TK101.LEVEL")
RUNNING = OIL.tag_names().index("P101.RUNNING")


def rows(n: int) -> np.ndarray:
    plant = OIL(seed=11)
    return plant.run(n)[1]


async def read(client: Client, served: Served, tag: str) -> ua.DataValue:
    return await client.get_node(served.node_id(tag)).read_data_value(raise_on_bad_status=False)


def test_nan_is_served_as_bad_quality_and_recovers() -> None:
    data = rows(2)
    with serving("oil") as served:

        async def before() -> ua.DataValue:
            async with Client(served.endpoint) as client:
                return await read(client, served, "TK101.LEVEL")

        first = run(before())
        assert first.StatusCode == ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)

        broken = data[0].copy()
        broken[LEVEL] = math.nan
        broken[RUNNING] = math.nan
        served.publish(100.0, broken)

        async def after_nan() -> dict[str, ua.DataValue]:
            async with Client(served.endpoint) as client:
                return {tag: await read(client, served, tag) for tag in OIL.tag_names()}

        got = run(after_nan())
        for tag in ("TK101.LEVEL", "P101.RUNNING"):
            assert got[tag].StatusCode == ua.StatusCode(ua.StatusCodes.BadSensorFailure), tag
            assert got[tag].Value is None or got[tag].Value.Value is None
            assert got[tag].SourceTimestamp == datetime.fromtimestamp(100.0, UTC)
        for i, tag in enumerate(OIL.tag_names()):
            if i not in (LEVEL, RUNNING):
                assert got[tag].StatusCode.is_good(), tag
                assert got[tag].Value.Value == (bool(broken[i] >= 0.5) if OIL.TAGS[i].discrete else broken[i])

        served.publish(101.0, data[1])
        recovered = run(after_nan())
        assert recovered["TK101.LEVEL"].StatusCode.is_good()
        assert recovered["TK101.LEVEL"].Value.Value == data[1][LEVEL]
        assert recovered["P101.RUNNING"].Value.Value is bool(data[1][RUNNING] >= 0.5)


class Collector:
    """Subscription handler keeping every notified DataValue per node id."""

    def __init__(self) -> None:
        self.seen: dict[str, list[ua.DataValue]] = defaultdict(list)

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.seen[node.nodeid.to_string()].append(data.monitored_item.Value)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def served_form(i: int, value: float) -> object:
    """What the server makes of a published value: None (bad), a bool (status tag) or the float."""
    if math.isnan(value):
        return None
    return bool(value >= 0.5) if OIL.TAGS[i].discrete else value


def test_subscription_delivers_each_change() -> None:
    """A subscribed client gets every published change (value or status), stamped with the published time.

    Per OPC-UA's default trigger (StatusValue) a value published again unchanged, with only a new
    timestamp, is not notified: a status tag that stays 1 produces no notification.
    """
    data = rows(3)
    data[1][LEVEL] = math.nan
    stamps = [1000.0, 1001.0, 1002.0]
    start = rows(4)[3]
    with serving("oil") as served:
        served.publish(999.0, start)
        node_ids = [served.node_id(tag) for tag in OIL.tag_names()]
        previous = [start, *data[:-1]]
        changed = [
            [i for i in range(len(node_ids)) if served_form(i, row[i]) != served_form(i, before[i])]
            for row, before in zip(data, previous, strict=True)
        ]

        async def scenario() -> Collector:
            handler = Collector()
            async with Client(served.endpoint) as client:
                sub = await client.create_subscription(50, handler)
                await sub.subscribe_data_change([client.get_node(n) for n in node_ids])
                await wait_for(lambda: all(handler.seen[n] for n in node_ids))
                for ts, row, expect in zip(stamps, data, changed, strict=True):
                    await asyncio.to_thread(served.publish, ts, row)
                    when = datetime.fromtimestamp(ts, UTC)
                    await wait_for(
                        lambda when=when, expect=expect: all(
                            any(dv.SourceTimestamp == when for dv in handler.seen[node_ids[i]]) for i in expect
                        )
                    )
                await sub.delete()
            return handler

        handler = run(scenario())

    assert LEVEL in changed[0] and LEVEL in changed[1] and LEVEL in changed[2]  # the NaN row is a change both ways
    for ts, row, expect in zip(stamps, data, changed, strict=True):
        when = datetime.fromtimestamp(ts, UTC)
        for i in expect:
            (dv,) = [dv for dv in handler.seen[node_ids[i]] if dv.SourceTimestamp == when]
            if math.isnan(row[i]):
                assert dv.StatusCode == ua.StatusCode(ua.StatusCodes.BadSensorFailure)
            else:
                assert dv.StatusCode.is_good() and dv.Value.Value == served_form(i, row[i])
    assert len(served.writes) == 0  # publishing and subscribing are not writes


def test_deadband_filters_value_moves_only_and_reports_every_status_change() -> None:
    """A deadband item subscribed before the first publish: a move inside the deadband is not reported,
    a change of status always is (OPC 10000-4, 7.22.2), also back to Good within the deadband after a NaN."""
    deadband = 5.0
    base = rows(1)[0]
    level_at = [base[LEVEL], math.nan, base[LEVEL] + 0.1, base[LEVEL] + 0.2, base[LEVEL] + 10.0]
    with serving("oil") as served:
        node_id = served.node_id("TK101.LEVEL")

        async def scenario() -> list[ua.DataValue]:
            handler = Collector()
            async with Client(served.endpoint) as client:
                sub = await client.create_subscription(50, handler)
                await sub.deadband_monitor(client.get_node(node_id), deadband)
                await wait_for(lambda: len(handler.seen[node_id]) == 1)  # BadWaitingForInitialData
                for k, level in enumerate(level_at):
                    row = base.copy()
                    row[LEVEL] = level
                    await asyncio.to_thread(served.publish, 1000.0 + k, row)
                last = datetime.fromtimestamp(1000.0 + len(level_at) - 1, UTC)
                await wait_for(lambda: handler.seen[node_id][-1].SourceTimestamp == last)
                await sub.delete()
            return handler.seen[node_id]

        seen = run(scenario())

    assert seen[0].StatusCode == ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
    stamps = [dv.SourceTimestamp.timestamp() for dv in seen[1:]]
    assert stamps == [1000.0, 1001.0, 1002.0, 1004.0]  # 1003 moved 0.1: inside the deadband
    assert [dv.StatusCode.is_good() for dv in seen[1:]] == [True, False, True, True]
    assert [dv.Value.Value for dv in seen[1:] if dv.StatusCode.is_good()] == [level_at[0], level_at[2], level_at[4]]
