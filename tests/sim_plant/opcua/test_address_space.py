"""Every plant's catalog, browsed and read over OPC-UA by a real asyncua client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import Client, Node, ua

from sim_plant.plants import PLANTS
from tests.sim_plant.opcua.conftest import Served, run, serving

TS = 1_700_000_000.25  # exactly representable in OPC-UA's 100 ns DateTime


@pytest.fixture(scope="module", params=sorted(PLANTS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serving(request.param) as s:
        yield s


def published_row(plant_name: str) -> np.ndarray:
    plant = PLANTS[plant_name](seed=7)
    plant.run(3)
    return plant.measured()


async def browse_tags(client: Client, idx: int, plant_name: str) -> dict[str, dict[str, Node]]:
    """{area: {tag: node}} found under Objects/<plant>, by browsing (not by constructing node ids)."""
    plant = await client.nodes.objects.get_child(f"{idx}:{plant_name}")
    found: dict[str, dict[str, Node]] = {}
    for area in await plant.get_children(refs=ua.ObjectIds.Organizes):
        area_name = (await area.read_browse_name()).Name
        assert await area.read_node_class() == ua.NodeClass.Object
        tags = {}
        for var in await area.get_children(refs=ua.ObjectIds.Organizes):
            tags[(await var.read_browse_name()).Name] = var
        found[area_name] = tags
    return found


def test_browse_and_read_every_tag(served: Served) -> None:
    name = served.server.plant_name
    specs = PLANTS[name].TAGS
    row = published_row(name)
    served.publish(TS, row)

    async def scenario() -> None:
        async with Client(served.endpoint) as client:
            idx = await client.get_namespace_index(f"urn:plantwatch:sim:{name}")
            assert idx == served.server.namespace_index
            found = await browse_tags(client, idx, name)
            expected: dict[str, set[str]] = {}
            for spec in specs:
                expected.setdefault(spec.area, set()).add(spec.name)
            assert {area: set(tags) for area, tags in found.items()} == expected

            for i, spec in enumerate(specs):
                node = found[spec.area][spec.name]
                assert node.nodeid.to_string() == f"ns={idx};s={name}.{spec.name}" == served.node_id(spec.name)
                dv = await node.read_data_value()
                assert dv.StatusCode is not None and dv.StatusCode.is_good()
                assert dv.SourceTimestamp == datetime.fromtimestamp(TS, UTC)
                assert dv.Value is not None
                if spec.discrete:
                    assert dv.Value.VariantType == ua.VariantType.Boolean
                    assert dv.Value.Value is bool(row[i] >= 0.5)
                    assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Boolean)
                else:
                    assert dv.Value.VariantType == ua.VariantType.Double
                    assert dv.Value.Value == row[i]
                    assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
                assert (await node.read_description()).Text == spec.description

                eu = await (await node.get_child("0:EngineeringUnits")).read_value()
                assert isinstance(eu, ua.EUInformation)
                assert (eu.DisplayName.Text or "") == spec.unit
                rng = await (await node.get_child("0:EURange")).read_value()
                assert isinstance(rng, ua.Range)
                assert (rng.Low, rng.High) == (spec.lo, spec.hi)

                for attr in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
                    level = (await node.read_attribute(attr)).Value.Value
                    assert level & ua.AccessLevel.CurrentRead.mask
                    assert not level & ua.AccessLevel.CurrentWrite.mask

    run(scenario())


def test_engineering_units_carry_unece_codes(served: Served) -> None:
    """Units with a UN/CEFACT code get its UnitId (what generic OPC-UA clients display); the rest say -1."""
    name = served.server.plant_name

    async def scenario() -> dict[str, int]:
        async with Client(served.endpoint) as client:
            ids = {}
            for spec in PLANTS[name].TAGS:
                eu_node = client.get_node(f"{served.node_id(spec.name)}.EngineeringUnits")
                eu = await eu_node.read_value()
                assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
                ids[spec.unit] = eu.UnitId
            return ids

    ids = run(scenario())
    if "degC" in ids:
        assert ids["degC"] == (ord("C") << 16) | (ord("E") << 8) | ord("L")
    if "m" in ids:
        assert ids["m"] == (ord("M") << 16) | (ord("T") << 8) | ord("R")
    assert ids.get("", -1) == -1
