"""Every write a client attempts is counted in the WriteLog and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from asyncua import Client, ua

from sim_plant.plants import PLANTS
from sim_plant.servers.base import WriteAttempt
from tests.sim_plant.opcua.conftest import Served, run, serving

OIL = PLANTS["oil"]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serving("oil") as s:
        plant = OIL(seed=5)
        plant.run(2)
        s.publish(500.0, plant.measured())
        yield s


def new_attempts(served: Served, before: int) -> list[WriteAttempt]:
    return served.writes.attempts[before:]


def test_value_writes_are_counted_and_refused(served: Served) -> None:
    before = len(served.writes)
    tags = ["TK101.LEVEL", "LIC101.SP", "P101.RUNNING"]

    async def scenario() -> tuple[list[ua.DataValue], list[ua.DataValue], list[str]]:
        async with Client(served.endpoint) as client:
            nodes = [client.get_node(served.node_id(tag)) for tag in tags]
            was = [await node.read_data_value() for node in nodes]
            errors = []
            with pytest.raises(ua.UaStatusCodeError) as single:
                await nodes[0].write_value(ua.DataValue(ua.Variant(9.5, ua.VariantType.Double)))
            errors.append(type(single.value).__name__)
            with pytest.raises(ua.UaStatusCodeError) as setpoint:
                await nodes[1].write_value(ua.Variant(6.0, ua.VariantType.Double))
            errors.append(type(setpoint.value).__name__)
            # one Write request with three items: three attempts
            results = await client.uaclient.write_attributes(
                [n.nodeid for n in nodes],
                [
                    ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)),
                    ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)),
                    ua.DataValue(ua.Variant(False, ua.VariantType.Boolean)),
                ],
                ua.AttributeIds.Value,
            )
            errors += [r.name for r in results]
            now = [await node.read_data_value() for node in nodes]
            return was, now, errors

    was, now, errors = run(scenario())
    assert errors == ["BadNotWritable"] * 2 + ["BadNotWritable"] * 3
    assert [dv.Value for dv in now] == [dv.Value for dv in was]
    assert [dv.SourceTimestamp for dv in now] == [dv.SourceTimestamp for dv in was]
    attempts = new_attempts(served, before)
    assert [(a.protocol, a.kind) for a in attempts] == [("opcua", "Write")] * 5
    assert [a.target for a in attempts] == [served.node_id(t) for t in (tags[0], tags[1], *tags)]
    assert all(a.peer.startswith("127.0.0.1:") for a in attempts)


def test_attribute_writes_are_counted_and_refused(served: Served) -> None:
    before = len(served.writes)
    tag = served.node_id("FT101.FLOW_IN")

    async def scenario() -> tuple[str, str, int]:
        async with Client(served.endpoint) as client:
            node = client.get_node(tag)
            for attr, value in [
                (ua.AttributeIds.DisplayName, ua.LocalizedText("hacked")),
                (ua.AttributeIds.Description, ua.LocalizedText("hacked")),
                (ua.AttributeIds.AccessLevel, ua.Variant(3, ua.VariantType.Byte)),
            ]:
                with pytest.raises(ua.UaStatusCodeError):
                    await node.write_attribute(attr, ua.DataValue(value))
            with pytest.raises(ua.UaStatusCodeError):  # a property is a node too
                await client.get_node(f"{tag}.EURange").write_value(ua.Range(Low=0.0, High=1e9))
            return (
                (await node.read_display_name()).Text,
                (await node.read_description()).Text,
                (await node.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value,
            )

    display, description, level = run(scenario())
    assert (display, description) == ("FT101.FLOW_IN", "pipeline inflow to the tank")
    assert level == ua.AccessLevel.CurrentRead.mask
    attempts = new_attempts(served, before)
    assert [(a.kind, a.target) for a in attempts] == [("Write", tag)] * 3 + [("Write", f"{tag}.EURange")]


def test_method_calls_are_counted_and_refused(served: Served) -> None:
    before = len(served.writes)

    async def scenario() -> list[str]:
        names = []
        async with Client(served.endpoint) as client:
            server = client.nodes.server
            for method in ("0:GetMonitoredItems", "0:ResendData"):
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await server.call_method(method, ua.Variant(1, ua.VariantType.UInt32))
                names.append(type(refused.value).__name__)
        return names

    assert run(scenario()) == ["BadUserAccessDenied", "BadUserAccessDenied"]
    attempts = new_attempts(served, before)
    assert [(a.protocol, a.kind) for a in attempts] == [("opcua", "Call")] * 2
    assert [a.target for a in attempts] == [
        ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems).to_string(),
        ua.NodeId(ua.ObjectIds.Server_ResendData).to_string(),
    ]


def test_node_management_is_counted_and_refused(served: Served) -> None:
    before = len(served.writes)
    idx = served.server.namespace_index
    level = served.node_id("TK101.LEVEL")

    async def scenario() -> tuple[list[str], str]:
        async with Client(served.endpoint) as client:
            plant = client.get_node(f"ns={idx};s=oil")
            with pytest.raises(ua.UaStatusCodeError):
                await plant.add_variable(idx, "INJECTED", 1.0)
            _, results = await client.delete_nodes([client.get_node(level)])
            assert [r.is_bad() for r in results] == [True]
            names = [(await n.read_browse_name()).Name for n in await plant.get_children()]
            browse = (await client.get_node(level).read_browse_name()).Name
            return names, browse

    names, browse = run(scenario())
    assert "INJECTED" not in names and browse == "TK101.LEVEL"
    kinds = [(a.kind, a.target) for a in new_attempts(served, before)]
    assert ("AddNodes", f"ns={idx};s=oil") in kinds
    assert ("DeleteNodes", level) in kinds


def test_publishing_is_not_a_write(served: Served) -> None:
    before = len(served.writes)
    served.publish(501.0, np.full(len(OIL.TAGS), 1.0))
    assert len(served.writes) == before
