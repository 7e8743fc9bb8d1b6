"""The Modbus TCP server: the register map, values read back by pymodbus and by Debian's mbpoll, writes refused."""

from __future__ import annotations

import asyncio
import math
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient, AsyncModbusTlsClient
from pymodbus.pdu import ExceptionResponse

from sim_plant.plants import PLANTS, OilPlant
from sim_plant.servers.base import WriteLog
from sim_plant.servers.certs import make_tls_ca, make_tls_cert, server_tls_context
from sim_plant.servers.modbus import ModbusPlantServer
from sim_plant.servers.register_map import INT16_NO_VALUE, UNIT_IDS, RegisterEntry, markdown_table, register_map
from tests.conftest import ROOT, free_port
from tests.sim_plant.servers.conftest import require

FLOAT32 = AsyncModbusTcpClient.DATATYPE.FLOAT32
INT16 = AsyncModbusTcpClient.DATATYPE.INT16


def plant_values(name: str, steps: int = 30, seed: int = 3) -> np.ndarray:
    plant = PLANTS[name](seed)
    plant.run(steps)
    return plant.measured()


def entries(server: ModbusPlantServer, table: str) -> list[RegisterEntry]:
    return [e for e in server.map if e.table == table]


@asynccontextmanager
async def serving(name: str, word_order: str = "big", writes: WriteLog | None = None) -> AsyncIterator[Any]:
    server = ModbusPlantServer(
        name, PLANTS[name].TAGS, writes if writes is not None else WriteLog(), port=0, word_order=word_order
    )
    await server.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=3, retries=0)
    try:
        assert await client.connect(), f"cannot connect to {server.endpoint}"
        yield server, client
    finally:
        client.close()
        await server.stop()


async def read_all(server: ModbusPlantServer, client: AsyncModbusTcpClient) -> dict[str, Any]:
    """Every table as served, decoded per the register map: {table: {tag: value}}."""
    unit = server.unit_id
    n_analog = len(entries(server, "input"))
    n_status = len(entries(server, "coil"))
    holding = await client.read_holding_registers(0, count=2 * n_analog, device_id=unit)
    inputs = await client.read_input_registers(0, count=n_analog, device_id=unit)
    coils = await client.read_coils(0, count=n_status, device_id=unit)
    discretes = await client.read_discrete_inputs(0, count=n_status, device_id=unit)
    for response in (holding, inputs, coils, discretes):
        assert not response.isError(), response
    out: dict[str, dict[str, Any]] = {"holding": {}, "input": {}, "coil": {}, "discrete": {}}
    for e in server.map:
        if e.table == "holding":
            regs = holding.registers[e.address : e.address + 2]
            out["holding"][e.tag] = client.convert_from_registers(regs, FLOAT32, word_order=e.word_order)
        elif e.table == "input":
            raw = client.convert_from_registers(inputs.registers[e.address : e.address + 1], INT16)
            out["input"][e.tag] = (raw, raw * e.scale)
        elif e.table == "coil":
            out["coil"][e.tag] = coils.bits[e.address]
        else:
            out["discrete"][e.tag] = discretes.bits[e.address]
    return out


def check_served(served: dict[str, Any], name: str, values: np.ndarray) -> None:
    tags = PLANTS[name].TAGS
    for spec, value in zip(tags, values, strict=True):
        if spec.discrete:
            assert served["coil"][spec.name] is bool(value >= 0.5), spec.name
            assert served["discrete"][spec.name] is bool(value >= 0.5), spec.name
            continue
        assert served["holding"][spec.name] == float(np.float32(value)), spec.name
        raw, scaled = served["input"][spec.name]
        entry = next(e for e in register_map(tags) if e.tag == spec.name and e.table == "input")
        assert abs(scaled - value) <= entry.scale / 2 + 1e-9, (spec.name, raw, value)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 60))  # type: ignore[arg-type]


# -- the register map -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PLANTS))
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_register_map_follows_the_catalog(name: str, word_order: str) -> None:
    tags = PLANTS[name].TAGS
    mapping = register_map(tags, word_order)
    assert mapping == register_map(tags, word_order), "the map must be deterministic"
    analog = [t for t in tags if not t.discrete]
    status = [t for t in tags if t.discrete]
    by_table: dict[str, list[RegisterEntry]] = {}
    for e in mapping:
        by_table.setdefault(e.table, []).append(e)
    assert [e.tag for e in by_table["holding"]] == [t.name for t in analog]
    assert [e.address for e in by_table["holding"]] == list(range(0, 2 * len(analog), 2))
    assert {(e.count, e.type, e.scale, e.word_order) for e in by_table["holding"]} == {(2, "float32", 1.0, word_order)}
    assert [e.tag for e in by_table["input"]] == [t.name for t in analog]
    assert [e.address for e in by_table["input"]] == list(range(len(analog)))
    for spec, e in zip(analog, by_table["input"], strict=True):
        assert (e.count, e.type, e.word_order) == (1, "int16", None)
        assert e.scale == pytest.approx(10.0**-e.decimals)
        span = spec.hi - spec.lo
        extremes = (spec.lo - 10 * span, spec.hi + 10 * span)  # the range and ten spans of headroom each side
        for v in (*extremes, spec.lo, spec.hi):
            assert abs(round(v * 10**e.decimals)) <= 32767, (spec.name, v)
        finer = max(abs(round(v * 10 ** (e.decimals + 1))) for v in extremes)
        assert finer > 32767 or e.decimals == 6, f"{spec.name}: a finer scale would fit"
    for table in ("coil", "discrete"):
        assert [e.tag for e in by_table[table]] == [t.name for t in status]
        assert [e.address for e in by_table[table]] == list(range(len(status)))
        assert {(e.count, e.type) for e in by_table[table]} == {(1, "bool")}


def test_oil_register_map_addresses() -> None:
    """The documented oil map (README): spot checks that catch an accidental reordering."""
    mapping = {(e.table, e.tag): e for e in register_map(OilPlant.TAGS)}
    assert mapping["holding", "TK101.LEVEL"].address == 0
    assert mapping["holding", "P101.POWER"].address == 10  # the 6th analog tag: P101.RUNNING is a status
    assert mapping["holding", "TT101.TEMP"].address == 18
    assert mapping["input", "FT101.FLOW_IN"].address == 2
    assert mapping["input", "FT101.FLOW_IN"].decimals == 1
    assert mapping["input", "PT101.SUCTION"].decimals == 4
    assert mapping["coil", "P101.RUNNING"].address == 0
    assert mapping["discrete", "LSHH101.ALARM"].address == 1
    assert UNIT_IDS == {"oil": 1, "chemical": 2, "radiological": 3}


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="word_order"):
        ModbusPlantServer("oil", OilPlant.TAGS, WriteLog(), word_order="middle")
    with pytest.raises(ValueError, match="unit id"):
        ModbusPlantServer("water", OilPlant.TAGS, WriteLog())
    with pytest.raises(ValueError, match="shape"):
        asyncio.run(ModbusPlantServer("oil", OilPlant.TAGS, WriteLog()).publish(0.0, np.zeros(3)))


# -- values read back -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PLANTS))
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_pymodbus_reads_the_published_values(name: str, word_order: str) -> None:
    async def scenario() -> None:
        async with serving(name, word_order) as (server, client):
            assert server.unit_id == UNIT_IDS[name]
            assert server.port and server.endpoint == f"modbus-tcp://127.0.0.1:{server.port}?unit={server.unit_id}"
            first = plant_values(name, steps=10)
            await server.publish(10.0, first)
            check_served(await read_all(server, client), name, first)
            # A second publish replaces every value; flip the statuses so the bits change too.
            second = plant_values(name, steps=40, seed=7)
            status = [i for i, t in enumerate(PLANTS[name].TAGS) if t.discrete]
            second[status] = 1.0 - first[status]
            await server.publish(40.0, second)
            check_served(await read_all(server, client), name, second)

    run(scenario)


def test_modbus_tls_serves_the_same_image_to_a_verifying_client_only(tmp_path: Path) -> None:
    """With ``tls`` the server is a Modbus/TLS device: a client trusting its CA (and showing a certificate
    the device trusts) reads exactly what the TCP server serves; a client with another CA gets nothing."""
    ca = make_tls_ca(tmp_path, "plant-ca")
    device = make_tls_cert(tmp_path, "plc", ca)
    client_pair = make_tls_cert(tmp_path, "reader", ca, client=True, hostnames=["reader"], ips=[])
    rogue = make_tls_ca(tmp_path, "rogue-ca")

    def client_context(anchor: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(anchor))
        context.load_cert_chain(str(client_pair.cert), str(client_pair.key))
        return context

    async def scenario() -> None:
        values = plant_values("oil", steps=10)
        server = ModbusPlantServer(
            "oil", OilPlant.TAGS, WriteLog(), port=0, tls=server_tls_context(device, client_ca=ca.cert)
        )
        await server.start()
        try:
            await server.publish(10.0, values)
            assert server.endpoint == f"modbus-tls://127.0.0.1:{server.port}?unit=1"
            client = AsyncModbusTlsClient("127.0.0.1", port=server.port, sslctx=client_context(ca.cert), retries=0)
            try:
                assert await client.connect()
                check_served(await read_all(server, client), "oil", values)
            finally:
                client.close()
            stranger = AsyncModbusTlsClient(
                "127.0.0.1", port=server.port, sslctx=client_context(rogue.cert), retries=0, timeout=2
            )
            try:
                assert not await stranger.connect()  # the device's certificate is not signed by its CA
            finally:
                stranger.close()
        finally:
            await server.stop()

    run(scenario)


def test_word_orders_differ_on_the_wire() -> None:
    """ABCD serves the high word first, CDAB the low word first: the raw registers are swapped pairs."""

    async def scenario() -> None:
        values = plant_values("oil")
        raw = {}
        for order in ("big", "little"):
            async with serving("oil", order) as (server, client):
                await server.publish(0.0, values)
                raw[order] = (await client.read_holding_registers(0, count=4, device_id=1)).registers
        big, little = raw["big"], raw["little"]
        assert big == [little[1], little[0], little[3], little[2]]
        assert big[:2] == AsyncModbusTcpClient.convert_to_registers(float(values[0]), FLOAT32, word_order="big")

    run(scenario)


def test_nan_and_out_of_range_values() -> None:
    """NaN: quiet NaN in float32, -32768 in int16, a bit keeps its state; beyond int16 the register saturates."""

    async def scenario() -> None:
        async with serving("oil") as (server, client):
            names = OilPlant.tag_names()
            values = plant_values("oil")
            values[names.index("P101.RUNNING")] = 1.0
            await server.publish(0.0, values)
            values[names.index("TK101.LEVEL")] = np.nan
            values[names.index("FT101.FLOW_IN")] = 1e6  # 10^7 raw at one decimal
            values[names.index("FT102.FLOW_OUT")] = -np.inf
            values[names.index("P101.RUNNING")] = np.nan
            await server.publish(1.0, values)
            served = await read_all(server, client)
            assert math.isnan(served["holding"]["TK101.LEVEL"])
            assert served["input"]["TK101.LEVEL"][0] == INT16_NO_VALUE
            assert served["holding"]["FT101.FLOW_IN"] == 1e6
            assert served["input"]["FT101.FLOW_IN"][0] == 32767
            assert served["holding"]["FT102.FLOW_OUT"] == -math.inf
            assert served["input"]["FT102.FLOW_OUT"][0] == -32767
            assert served["coil"]["P101.RUNNING"] is True
            assert served["discrete"]["P101.RUNNING"] is True
            hi = await client.read_holding_registers(0, count=2, device_id=1)
            assert hi.registers == [0x7FC0, 0x0000]

    run(scenario)


def test_before_the_first_publish_everything_reads_no_value() -> None:
    async def scenario() -> None:
        async with serving("chemical") as (server, client):
            served = await read_all(server, client)
            assert all(math.isnan(v) for v in served["holding"].values())
            assert {raw for raw, _ in served["input"].values()} == {INT16_NO_VALUE}
            assert not any(served["coil"].values())

    run(scenario)


def test_unmapped_address_and_other_unit_are_errors() -> None:
    async def scenario() -> None:
        async with serving("oil") as (server, client):
            await server.publish(0.0, plant_values("oil"))
            n = len(entries(server, "holding"))
            past_end = await client.read_holding_registers(2 * n, count=2, device_id=1)
            assert isinstance(past_end, ExceptionResponse) and past_end.exception_code == 2  # ILLEGAL ADDRESS
            other = await client.read_holding_registers(0, count=2, device_id=2)
            assert isinstance(other, ExceptionResponse) and other.exception_code == 0x0A  # GATEWAY PATH UNAVAILABLE
            ok = await client.read_holding_registers(0, count=2, device_id=1)
            assert not ok.isError()

    run(scenario)


def test_start_stop_and_fixed_port() -> None:
    async def scenario() -> None:
        server = ModbusPlantServer("radiological", PLANTS["radiological"].TAGS, WriteLog(), port=free_port())
        await server.stop()  # before start: nothing to do
        await server.start()
        assert server.port == server._requested_port
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        assert await client.connect()
        client.close()
        await server.stop()
        await server.stop()
        with pytest.raises(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()

    run(scenario)


# -- writes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PLANTS))
def test_writes_are_recorded_and_refused(name: str) -> None:
    writes = WriteLog()

    async def scenario() -> None:
        async with serving(name, writes=writes) as (server, client):
            unit = server.unit_id
            values = plant_values(name)
            await server.publish(0.0, values)
            before = await read_all(server, client)
            attempts = [
                (client.write_register(4, 1234, device_id=unit), "fc6", "holding:4"),
                (client.write_registers(0, [1, 2, 3, 4], device_id=unit), "fc16", "holding:0-3"),
                (client.write_coil(0, False, device_id=unit), "fc5", "coil:0"),
                (client.write_coils(0, [False, True], device_id=unit), "fc15", "coil:0-1"),
                (
                    client.mask_write_register(address=2, and_mask=0, or_mask=0xFFFF, device_id=unit),
                    "fc22",
                    "holding:2",
                ),
                (
                    client.readwrite_registers(
                        read_address=0, read_count=2, write_address=6, values=[7, 7], device_id=unit
                    ),
                    "fc23",
                    "holding:6-7",
                ),
                (client.write_register(9999, 1, device_id=unit), "fc6", "holding:9999"),  # unmapped
                (client.write_coil(1, True, device_id=unit + 10), "fc5", "coil:1"),  # another unit id
            ]
            for request, _, _ in attempts:
                response = await request
                assert isinstance(response, ExceptionResponse), response
                assert response.exception_code == 1  # ILLEGAL FUNCTION
            assert [(a.protocol, a.kind, a.target) for a in writes.attempts] == [
                ("modbus", kind, target) for _, kind, target in attempts
            ]
            assert all(re.fullmatch(r"127\.0\.0\.1:\d+", a.peer) for a in writes.attempts)
            assert await read_all(server, client) == before
            check_served(before, name, values)

    run(scenario)
    assert writes.counts() == {
        ("modbus", "fc5"): 2,
        ("modbus", "fc6"): 2,
        ("modbus", "fc15"): 1,
        ("modbus", "fc16"): 1,
        ("modbus", "fc22"): 1,
        ("modbus", "fc23"): 1,
    }


def test_reads_are_not_recorded() -> None:
    writes = WriteLog()

    async def scenario() -> None:
        async with serving("oil", writes=writes) as (server, client):
            await server.publish(0.0, plant_values("oil"))
            for _ in range(3):
                await read_all(server, client)

    run(scenario)
    assert len(writes) == 0


# -- mbpoll, Debian's Modbus master -----------------------------------------------------------

MBPOLL_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)\s*$", re.MULTILINE)


async def mbpoll(*args: str) -> tuple[int, str]:
    exe = require("mbpoll")
    proc = await asyncio.create_subprocess_exec(
        exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode(errors="replace")


def mbpoll_values(output: str) -> dict[int, str]:
    return {int(ref): text for ref, text in MBPOLL_LINE.findall(output)}


@pytest.mark.parametrize("name", sorted(PLANTS))
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_mbpoll_reads_the_float_registers(name: str, word_order: str) -> None:
    """``mbpoll -t 4:float``: ``-B`` for ABCD, none for CDAB (mbpoll's default); ``-0`` for 0-based addresses."""
    require("mbpoll")

    async def scenario() -> None:
        async with serving(name, word_order) as (server, _client):
            values = plant_values(name)
            await server.publish(0.0, values)
            holding = entries(server, "holding")
            args = ["-m", "tcp", "-a", str(server.unit_id), "-0", "-r", "0", "-c", str(len(holding))]
            args += ["-t", "4:float", *(["-B"] if word_order == "big" else []), "-1", "-o", "2"]
            rc, out = await mbpoll(*args, "-p", str(server.port), "127.0.0.1")
            assert rc == 0, out
            read = mbpoll_values(out)
            assert sorted(read) == [e.address for e in holding], out
            index = {t.name: i for i, t in enumerate(PLANTS[name].TAGS)}
            for e in holding:  # mbpoll prints 6 significant digits
                assert float(read[e.address]) == pytest.approx(values[index[e.tag]], rel=1e-5), (e.tag, out)

            # 1-based references (mbpoll's default): reference = address + 1.
            last = holding[-1]
            one_based = ["-m", "tcp", "-a", str(server.unit_id), "-r", str(last.address + 1), "-c", "1"]
            one_based += ["-t", "4:float", *(["-B"] if word_order == "big" else []), "-1", "-o", "2"]
            rc, out = await mbpoll(*one_based, "-p", str(server.port), "127.0.0.1")
            assert rc == 0, out
            assert float(mbpoll_values(out)[last.address + 1]) == pytest.approx(values[index[last.tag]], rel=1e-5)

    run(scenario)


def test_mbpoll_reads_int16_and_bits_and_cannot_write() -> None:
    require("mbpoll")
    writes = WriteLog()

    async def scenario() -> None:
        async with serving("oil", writes=writes) as (server, client):
            values = plant_values("oil")
            await server.publish(0.0, values)
            base = ["-m", "tcp", "-a", "1", "-0", "-1", "-o", "2", "-p", str(server.port)]
            inputs = entries(server, "input")
            rc, out = await mbpoll(*base, "-t", "3", "-r", "0", "-c", str(len(inputs)), "127.0.0.1")
            assert rc == 0, out
            raw = mbpoll_values(out)
            index = {t.name: i for i, t in enumerate(OilPlant.TAGS)}
            for e in inputs:
                assert int(raw[e.address]) == round(values[index[e.tag]] * 10**e.decimals), (e.tag, out)
            coils = entries(server, "coil")
            for table in ("0", "1"):  # coils, discrete inputs
                rc, out = await mbpoll(*base, "-t", table, "-r", "0", "-c", str(len(coils)), "127.0.0.1")
                assert rc == 0, out
                bits = mbpoll_values(out)
                for e in coils:
                    assert int(bits[e.address]) == int(values[index[e.tag]] >= 0.5), (e.tag, out)

            before = await read_all(server, client)
            rc, out = await mbpoll(*base, "-t", "4", "-r", "2", "127.0.0.1", "1234")
            assert rc != 0 and "Illegal function" in out, out
            rc, out = await mbpoll(*base, "-t", "0", "-r", "1", "127.0.0.1", "1")
            assert rc != 0 and "Illegal function" in out, out
            assert await read_all(server, client) == before

    run(scenario)
    assert [(a.kind, a.target) for a in writes.attempts] == [("fc6", "holding:2"), ("fc5", "coil:1")]


def test_readme_shows_the_current_register_maps() -> None:
    readme = (ROOT / "sim_plant" / "servers" / "README.md").read_text()
    for name in sorted(PLANTS):
        assert f"### {name} (unit id {UNIT_IDS[name]})\n\n{markdown_table(PLANTS[name].TAGS)}\n" in readme, (
            f"sim_plant/servers/README.md: the {name} register map is out of date; regenerate it with markdown_table"
        )
