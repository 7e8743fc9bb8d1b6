"""The Modbus receiver against the simulator's real server on 127.0.0.1: values, grouping, faults, never a write.

Every simulator server started here logs into the shared ``WRITES``; each test checks it is still empty,
and the last test checks it once more after everything else ran.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu.register_message import WriteSingleRegisterRequest

from collector.receivers.modbus.receiver import WriteRefused
from collector.samples import Quality, SampleBatch
from sim_plant.plants import PLANTS
from sim_plant.servers.base import WriteLog
from sim_plant.servers.modbus import ModbusPlantServer, ReadFault
from tests.collector.receivers.conftest_modbus import (
    WRITES,
    Running,
    as_dict,
    make_receiver,
    options,
    plant_server,
    plant_values,
    register_spec,
    run_bounded,
)
from tests.conftest import free_port

OIL = PLANTS["oil"].TAGS
OIL_INDEX = {t.name: i for i, t in enumerate(OIL)}


def covers_all(n: int) -> object:
    return lambda b: len(b) == n


def good_batch(n: int):  # type: ignore[no-untyped-def]
    return lambda b: len(b) == n and bool((b.quality == Quality.GOOD).all())


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("word_order", "order"), [("big", "ABCD"), ("little", "CDAB")])
def test_values_read_equal_the_served_values(word_order: str, order: str) -> None:
    """float32 in the server's word order, scaled int16, coils and discrete inputs, two publishes apart."""

    async def scenario() -> None:
        first, second = plant_values(steps=30), plant_values(steps=300, seed=5)
        async with plant_server(word_order=word_order, values=first) as server:
            float_regs = [register_spec(e, order=order) for e in server.map if e.table in ("holding", "coil")]
            int_regs = [register_spec(e) for e in server.map if e.table in ("input", "discrete")]
            a = Running(make_receiver(options(server.port, float_regs, name="floats"), index=0))
            b = Running(make_receiver(options(server.port, int_regs, name="ints"), index=1))
            try:
                for values in (first, second):
                    await server.publish(time.time(), values)
                    published = time.time()
                    for running, regs, kind in ((a, float_regs, "float"), (b, int_regs, "int")):
                        names = [r["tag"] for r in regs]
                        batch = await running.wait_for_batch(
                            after(published, len(regs)), 5.0, f"a {kind} poll after the publish"
                        )
                        check(batch, names, regs, values)
                assert a.receiver.status.up and b.receiver.status.up
                for r in (a.receiver, b.receiver):
                    assert not r.status.errors, r.status.errors
                    assert r.status.reconnects == 0 and r.connections == 1
            finally:
                await a.stop()
                await b.stop()
        assert len(WRITES) == 0, WRITES.attempts

    run_bounded(scenario)


def after(published: float, n: int):  # type: ignore[no-untyped-def]
    """A complete poll whose reads were all answered after ``published``."""
    return lambda b: len(b) == n and float(b.ts.min()) > published + 0.01


def check(batch: SampleBatch, names: list[str], regs: list[dict], values: np.ndarray) -> None:
    got = as_dict(batch, names)
    assert set(got) == set(names)
    for reg in regs:
        value, quality = got[reg["tag"]]
        served = values[OIL_INDEX[reg["tag"]]]
        assert quality == Quality.GOOD, reg
        if reg["type"] == "float32":
            assert value == float(np.float32(served)), (reg, value, served)
        elif reg["type"] == "int16":
            assert abs(value - served) <= reg["scale"] / 2 + 1e-12, (reg, value, served)
            assert value != 0.0 or served == 0.0
        else:
            assert value == float(served >= 0.5), (reg, value, served)
    # timestamps are receive times: close to now, never the epoch
    assert abs(float(batch.ts.max()) - time.time()) < 5 and (batch.recv_ts == batch.ts).all()


def test_before_the_first_publish_no_value_reads_bad_never_zero() -> None:
    """The server sends int16 -32768 and float NaN before any publish: BAD/NaN, not 0 and not -3276.8."""

    async def scenario() -> None:
        async with plant_server() as server:
            regs = [register_spec(e) for e in server.map if e.table in ("holding", "input") and e.address < 2]
            # holding 0 (float NaN) and input 0, 1 (int16 no-value) have distinct tags
            regs = [dict(r, tag=f"{r['tag']}.{r['table']}") for r in regs]
            running = Running(make_receiver(options(server.port, regs)))
            try:
                batch = await running.wait_for_batch(covers_all(len(regs)), 5.0, "a poll")
            finally:
                await running.stop()
            assert np.isnan(batch.value).all(), batch.value
            got = as_dict(batch, [r["tag"] for r in regs])
            assert got["TK101.LEVEL.input"][1] == Quality.BAD  # the no-value marker
            assert not running.receiver.status.errors
        assert len(WRITES) == 0

    run_bounded(scenario)


# -- grouping ----------------------------------------------------------------------------------


def all_tables(server: ModbusPlantServer) -> list[dict]:
    """Every row of the map as its own tag: 10 floats, 10 int16, 2 coils, 2 discrete inputs."""
    return [register_spec(e, tag=f"{e.tag}.{e.table}") for e in server.map]


@pytest.mark.parametrize(
    ("limit", "per_poll"),
    [
        (125, {3: 1, 4: 1, 1: 1, 2: 1}),  # one read per table
        (7, {3: 4, 4: 2, 1: 1, 2: 1}),  # floats 3 per read: 6+6+6+2 registers; int16 7+3
    ],
)
def test_grouping_produces_the_expected_requests(limit: int, per_poll: dict[int, int]) -> None:
    """Requests counted twice: by the server (reads reaching its datastore) and by the receiver's interlock."""

    async def scenario() -> None:
        async with plant_server(values=plant_values()) as server:
            regs = all_tables(server)
            running = Running(make_receiver(options(server.port, regs, max_registers_per_read=limit)))
            receiver = running.receiver
            try:
                # Stop only once the device has served every request sent: the receiver counts a request as it
                # frames it, the device as it serves it, and a cancel between the two would split the counts.
                await running.wait_for(
                    lambda: receiver.polls >= 4 and server.reads == dict(receiver.requests), 10.0, "four polls served"
                )
            finally:
                await running.stop()
            assert len(receiver.blocks) == sum(per_poll.values())
            polls = receiver.polls
            full = {fc: n * (polls - 1) for fc, n in per_poll.items()}  # the last poll may have been cut short
            sent = dict(receiver.requests)
            for fc, n in per_poll.items():
                assert full[fc] <= sent[fc] <= n * polls, (fc, sent, polls)
            assert server.reads == sent, (server.reads, sent)
            assert set(sent) <= {1, 2, 3, 4}
            complete = [b for b in running.batches if len(b) == len(regs)]
            assert len(complete) >= polls - 1 and all((b.quality == Quality.GOOD).all() for b in complete)
            assert not receiver.status.errors
        assert len(WRITES) == 0

    run_bounded(scenario)


# -- exception responses -------------------------------------------------------------------------


def test_exception_for_an_unmapped_address_marks_only_its_block_bad() -> None:
    async def scenario() -> None:
        values = plant_values()
        async with plant_server(values=values) as server:
            floats = [register_spec(e) for e in server.map if e.table == "holding"]
            far = {"tag": "GHOST.FAR", "table": "holding", "address": 200, "type": "float32"}  # its own read
            near = {"tag": "GHOST.NEAR", "table": "holding", "address": 24, "type": "int16"}  # joins 0-19 via a gap
            regs = [*floats, far, near]
            names = [r["tag"] for r in regs]
            running = Running(make_receiver(options(server.port, regs, max_gap=10)))
            receiver = running.receiver
            try:
                assert len(receiver.blocks) == 2  # 0..24 spanning the gap, and 200..201
                first = await running.wait_for_batch(covers_all(len(regs)), 5.0, "the first poll")
                # the first poll: the device refuses both reads; every tag BAD, none of them a 0
                assert (first.quality == Quality.BAD).all() and np.isnan(first.value).all()
                await running.wait_for(lambda: receiver.polls >= 4, 5.0, "four polls")
                last = await running.wait_for_batch(covers_all(len(regs)), 5.0, "another poll")
                assert receiver.status.up  # the device answers, with values for most tags
            finally:
                await running.stop()
            # from the second poll the gapped read is split: 0..19 reads fine, only 24 stays refused
            assert [(b.start, b.count) for b in receiver.blocks] == [(0, 20), (24, 1), (200, 2)]
            got = as_dict(last, names)
            for reg in floats:
                assert got[reg["tag"]] == (float(np.float32(values[OIL_INDEX[reg["tag"]]])), Quality.GOOD)
            for ghost in ("GHOST.FAR", "GHOST.NEAR"):
                assert math.isnan(got[ghost][0]) and got[ghost][1] == Quality.BAD
            ghost_values = np.concatenate([b.value[b.tag >= len(floats)] for b in running.batches])
            assert np.isnan(ghost_values).all() and (ghost_values != 0).all()
            errors = receiver.status.errors
            polls = receiver.polls
            # per poll: one refusal of the far read, one of the near one (or of the joint read, first poll)
            assert set(errors) == {"exception_2"}, errors
            assert 2 * (polls - 1) <= errors["exception_2"] <= 2 * polls
            assert receiver.status.reconnects == 0 and not receiver.status.up  # stopped
        assert len(WRITES) == 0

    run_bounded(scenario)


def test_wrong_unit_id_is_gateway_path_unavailable_on_every_read() -> None:
    async def scenario() -> None:
        async with plant_server(values=plant_values()) as server:
            regs = all_tables(server)
            running = Running(make_receiver(options(server.port, regs, unit_id=9)))
            receiver = running.receiver
            try:
                await running.wait_for(lambda: receiver.polls >= 3, 5.0, "three polls")
                assert not receiver.status.up  # connected, but the device gives nothing: down
            finally:
                await running.stop()
            assert set(receiver.status.errors) == {"exception_10"}
            assert receiver.status.errors["exception_10"] >= 4 * (receiver.polls - 1)
            values = np.concatenate([b.value for b in running.batches])
            quality = np.concatenate([b.quality for b in running.batches])
            assert values.size and np.isnan(values).all() and (quality == Quality.BAD).all()
            assert receiver.status.samples == 0
        assert len(WRITES) == 0

    run_bounded(scenario)


def test_device_busy_marks_only_the_busy_block_bad_never_zero_until_it_clears() -> None:
    """Exception 6 for the input registers: those tags BAD/NaN and counted; the other tables read on."""

    async def scenario() -> None:
        values = plant_values()
        async with plant_server(values=values) as server:
            server.faults.append(ReadFault(ExcCodes.DEVICE_BUSY, table="input"))
            regs = all_tables(server)
            names = [r["tag"] for r in regs]
            busy = {r["tag"] for r in regs if r["table"] == "input"}
            running = Running(make_receiver(options(server.port, regs)))
            receiver = running.receiver
            try:
                await running.wait_for(lambda: receiver.polls >= 3, 5.0, "three polls while busy")
                during = await running.wait_for_batch(covers_all(len(regs)), 5.0, "a poll while busy")
                assert receiver.status.up  # the other reads still give values
                refused = receiver.status.errors["exception_6"]
                assert receiver.polls - 1 <= refused <= server.refusals[ExcCodes.DEVICE_BUSY], receiver.polls
                while_busy = list(running.batches)
                server.faults.clear()
                after_busy = await running.wait_for_batch(good_batch(len(regs)), 5.0, "every tag good again")
            finally:
                await running.stop()
            got = as_dict(during, names)
            for name in names:
                value, quality = got[name]
                if name in busy:
                    assert math.isnan(value) and quality == Quality.BAD, (name, value)
                else:
                    assert quality == Quality.GOOD and not math.isnan(value), (name, value)
            busy_values = np.concatenate([b.value[np.isin(b.tag, [names.index(t) for t in busy])] for b in while_busy])
            assert busy_values.size and np.isnan(busy_values).all() and (busy_values != 0).all()
            assert set(receiver.status.errors) == {"exception_6"}, receiver.status.errors
            assert receiver.status.reconnects == 0 and receiver.connections == 1
            level = as_dict(after_busy, names)["TK101.LEVEL.input"][0]
            assert abs(level - values[OIL_INDEX["TK101.LEVEL"]]) <= 0.1, level  # the same register, answered now
        assert len(WRITES) == 0

    run_bounded(scenario)


def test_gateway_target_not_responding_marks_that_unit_bad_while_another_unit_reads_on() -> None:
    """A gateway answers exception 11 for a silent unit behind it; the unit it reaches is polled as usual."""

    async def scenario() -> None:
        values = plant_values()
        async with plant_server(values=values) as gateway:
            silent_unit = gateway.unit_id + 6
            gateway.faults.append(ReadFault(ExcCodes.GATEWAY_NO_RESPONSE, unit_id=silent_unit))
            regs = all_tables(gateway)
            names = [r["tag"] for r in regs]
            poll = 0.2
            live = Running(
                make_receiver(options(gateway.port, regs, name="live", unit_id=gateway.unit_id, poll_interval_s=poll))
            )
            mute = Running(make_receiver(options(gateway.port, regs, name="mute", unit_id=silent_unit), index=1))
            try:
                await mute.wait_for(lambda: mute.receiver.polls >= 3, 5.0, "three polls of the silent unit")
                batch = await live.wait_for_batch(good_batch(len(regs)), 5.0, "good values from the live unit")
                assert live.receiver.status.up and not mute.receiver.status.up
            finally:
                await mute.stop()
                await live.stop()
            m = mute.receiver
            assert set(m.status.errors) == {"exception_11"}, m.status.errors  # not 10: the path exists
            assert 4 * (m.polls - 1) <= m.status.errors["exception_11"] <= gateway.refusals[11]
            mute_values = np.concatenate([b.value for b in mute.batches])
            mute_quality = np.concatenate([b.quality for b in mute.batches])
            assert mute_values.size and np.isnan(mute_values).all() and (mute_values != 0).all()
            assert (mute_quality == Quality.BAD).all() and m.status.samples == 0
            assert not live.receiver.status.errors
            assert as_dict(batch, names)["TK101.LEVEL.holding"] == (float(np.float32(values[0])), Quality.GOOD)
            stamps = sorted(float(b.ts.min()) for b in live.batches)
            assert max(np.diff(stamps)) < poll + 0.3, np.diff(stamps)  # never waits on the silent unit (timeout 1 s)
        assert len(WRITES) == 0

    run_bounded(scenario)


# -- connection faults ---------------------------------------------------------------------------


def test_server_restart_down_then_up_within_the_reconnect_cap() -> None:
    async def scenario() -> None:
        port = free_port()
        poll, cap = 0.2, 1.0
        values = plant_values()
        server = ModbusPlantServer("oil", OIL, WRITES, port=port)
        await server.start()
        await server.publish(time.time(), values)
        regs = [register_spec(e) for e in server.map if e.table in ("holding", "coil")]
        n = len(regs)
        running = Running(
            make_receiver(options(port, regs, poll_interval_s=poll, reconnect_min_s=0.1, reconnect_max_s=cap))
        )
        receiver = running.receiver
        try:
            await running.wait_for_batch(good_batch(n), 5.0, "good values")
            stopped = time.monotonic()
            await server.stop()
            went_down = await running.wait_for(lambda: not receiver.status.up, 3.0, "status down")
            assert went_down - stopped < poll + 1.5
            await asyncio.sleep(2.5)  # long enough for the backoff to reach its cap
            running.drain()
            outage = [b for b in running.batches if float(b.ts.min()) > time.time() - 2.4]
            assert outage, "BAD samples during the outage"
            assert all((b.quality == Quality.BAD).all() and np.isnan(b.value).all() for b in outage)
            assert receiver.status.errors["connect"] >= 2
            assert receiver.status.reconnects == 0

            server = ModbusPlantServer("oil", OIL, WRITES, port=port)
            await server.start()
            await server.publish(time.time(), values)
            restarted = time.monotonic()
            up = await running.wait_for(lambda: receiver.status.up, cap + poll + 2.0, "status up again")
            recovery = up - restarted
            batch = await running.wait_for_batch(good_batch(n), 2.0, "good values again")
            print(f"modbus recovery after restart: {recovery:.3f} s (cap {cap} s + poll {poll} s)")
            assert recovery <= cap + poll, recovery
            assert as_dict(batch, [r["tag"] for r in regs])["TK101.LEVEL"] == (
                float(np.float32(values[0])),
                Quality.GOOD,
            )
            assert receiver.status.reconnects == 1 and receiver.connections == 2
        finally:
            await running.stop()
            await server.stop()
        assert len(WRITES) == 0

    run_bounded(scenario)


def test_a_restart_storm_never_opens_a_second_connection() -> None:
    """Six server restarts, some with failed connects in between, some at once: one link at a time, one per start.

    Counted by the server, as it accepts connections: a client that let pymodbus reconnect on its own
    beside its own retries, or kept a lost link open, would show a second connection or more than one per start.
    """

    async def scenario() -> None:
        port = free_port()
        restarts = 6
        server = ModbusPlantServer("oil", OIL, WRITES, port=port)
        await server.start()
        await server.publish(time.time(), plant_values())
        regs = [register_spec(e) for e in server.map if e.table in ("holding", "coil")]
        n = len(regs)
        running = Running(
            make_receiver(options(port, regs, poll_interval_s=0.05, reconnect_min_s=0.05, reconnect_max_s=0.2))
        )
        receiver = running.receiver
        try:
            for restart in range(restarts):
                await running.wait_for_batch(good_batch(n), 5.0, f"good values before restart {restart}")
                refused = receiver.status.errors.get("connect", 0)
                await server.stop()
                if restart % 2 == 0:  # an outage long enough for connects to be refused
                    await running.wait_for(
                        lambda target=refused + 2: receiver.status.errors.get("connect", 0) >= target,
                        5.0,
                        "two refused connects",
                    )
                await server.start()
            await running.wait_for_batch(good_batch(n), 5.0, "good values after the last restart")
        finally:
            await running.stop()
            await server.stop()
        assert server.peak_connections == 1, f"{server.peak_connections} connections open at once"
        assert server.connections == receiver.connections == restarts + 1, (server.connections, receiver.connections)
        assert receiver.status.reconnects == restarts
        assert receiver.status.errors["connect"] >= restarts  # 2 per slow restart
        assert len(WRITES) == 0

    run_bounded(scenario)


def test_a_silent_device_does_not_stall_another_source() -> None:
    """A TCP peer that accepts and never answers: timeouts, down, one connection at a time; others poll on."""

    async def scenario() -> None:
        open_now = peak = accepted = 0

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal open_now, peak, accepted
            open_now += 1
            accepted += 1
            peak = max(peak, open_now)
            try:
                while await reader.read(1024):
                    pass  # swallow the requests, answer nothing
            finally:
                open_now -= 1
                writer.close()

        black_hole = await asyncio.start_server(silent, "127.0.0.1", 0)
        hole_port = black_hole.sockets[0].getsockname()[1]
        try:
            async with plant_server(values=plant_values()) as server:
                regs = all_tables(server)
                poll = 0.2
                good = Running(make_receiver(options(server.port, regs, poll_interval_s=poll, name="good"), index=0))
                mute = Running(
                    make_receiver(
                        options(hole_port, regs, name="mute", timeout_s=0.3, reconnect_min_s=0.1, reconnect_max_s=0.5),
                        index=1,
                    )
                )
                started = time.monotonic()
                try:
                    await asyncio.sleep(3.0)
                    # Stop the mute source while it waits on a connection it has counted, never while it connects:
                    # a connect cut by the cancel is accepted by the device but never counted by the receiver.
                    await mute.wait_for(
                        lambda: open_now == 1 and accepted == mute.receiver.connections, 5.0, "a read on a counted link"
                    )
                    good.drain()
                    mute.drain()
                    up = (good.receiver.status.up, mute.receiver.status.up)
                finally:
                    elapsed = time.monotonic() - started
                    await mute.stop()  # first: no await between the wait above and this cancel
                    await good.stop()
            g, m = good.receiver, mute.receiver
            assert up == (True, False)
            assert not g.status.errors
            assert g.polls >= int(elapsed / poll) - 1, (g.polls, elapsed)
            stamps = sorted(float(b.ts.min()) for b in good.batches)
            assert max(np.diff(stamps)) < poll + 0.15, np.diff(stamps)  # no stall while the other waits
            assert m.status.samples == 0
            assert m.status.errors["timeout"] >= 2 and m.status.errors["no_response"] >= 2, m.status.errors
            assert all((b.quality == Quality.BAD).all() for b in mute.batches) and mute.batches
            assert m.status.reconnects >= 1
            # at most two timed-out reads per poll, then the connection is dropped: a poll costs <= 2 timeouts
            assert m.status.errors["timeout"] <= 2 * m.polls
            assert peak == 1, f"{peak} connections open at once"
            assert accepted == m.connections
        finally:
            black_hole.close()
            await black_hole.wait_closed()
        assert len(WRITES) == 0

    run_bounded(scenario)


def test_connection_refused_is_retried_under_backoff_not_in_a_tight_loop() -> None:
    async def scenario() -> None:
        port = free_port()  # nothing listens here
        regs = [{"tag": "A", "table": "holding", "address": 0, "type": "float32"}]
        running = Running(
            make_receiver(options(port, regs, reconnect_min_s=0.1, reconnect_max_s=0.4, poll_interval_s=0.1))
        )
        try:
            await asyncio.sleep(2.0)
        finally:
            await running.stop()
        r = running.receiver
        attempts = r.status.errors["connect"]
        # delays 0.05-0.1, 0.1-0.2, then 0.2-0.4 each: 2 s allow at most ~11 attempts, at least ~5
        assert 4 <= attempts <= 12, attempts
        assert not r.status.up and r.status.reconnects == 0 and r.connections == 0
        assert len(running.batches) == attempts and all((b.quality == Quality.BAD).all() for b in running.batches)

    run_bounded(scenario)


def test_cancel_in_the_middle_of_reads_always_stops_promptly() -> None:
    """The daemon stops a receiver by cancelling it; Python 3.11's wait_for inside pymodbus can swallow that."""

    async def scenario() -> None:
        rng = np.random.default_rng(11)
        async with plant_server(values=plant_values()) as server:
            regs = all_tables(server)
            for _ in range(150):
                running = Running(make_receiver(options(server.port, regs, poll_interval_s=0.01)))
                await asyncio.sleep(float(rng.uniform(0.005, 0.04)))
                await running.stop(within=2.0)
        assert len(WRITES) == 0

    run_bounded(scenario)


# -- never a write ---------------------------------------------------------------------------------


def test_the_client_interlock_refuses_writes_before_the_wire() -> None:
    """Even a direct write through the receiver's own client never leaves it; the server records nothing."""

    async def scenario() -> None:
        writes = WriteLog()
        server = ModbusPlantServer("oil", OIL, writes, port=0)
        await server.start()
        regs = [{"tag": "A", "table": "holding", "address": 0, "type": "float32"}]
        receiver = make_receiver(options(server.port, regs))
        client = receiver._new_client()
        try:
            assert await client.connect()
            with pytest.raises(WriteRefused):
                await client.write_register(0, 1, device_id=1)
            with pytest.raises(WriteRefused):
                receiver._guard_pdu(True, WriteSingleRegisterRequest(address=0, registers=[1]))
            assert receiver.status.errors["write_refused"] == 2
            response = await client.read_holding_registers(0, count=2, device_id=1)
            assert not response.isError()
            assert dict(receiver.requests) == {3: 1}
        finally:
            client.close()
            await server.stop()
        assert len(writes) == 0, writes.attempts
        # and the log does catch a write from a plain client: the empty-log checks can fail
        from pymodbus.client import AsyncModbusTcpClient

        server = ModbusPlantServer("oil", OIL, writes, port=0)
        await server.start()
        plain = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
        try:
            assert await plain.connect()
            assert (await plain.write_register(4, 1, device_id=1)).isError()
        finally:
            plain.close()
            await server.stop()
        assert writes.counts() == {("modbus", "fc6"): 1}

    run_bounded(scenario)


def test_zz_write_log_empty_after_the_whole_run() -> None:
    """Runs last in this module (name order within the file is definition order; this one is defined last)."""
    assert len(WRITES) == 0, WRITES.attempts
