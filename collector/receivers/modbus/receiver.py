"""The Modbus TCP source: polls register blocks with pymodbus' async client, read-only.

One client (one TCP connection) per source at any time, reads only (function
codes 1-4; any other PDU is refused before it reaches the wire), every wait
bounded by ``timeout_s``. Each poll reads the planned blocks one after another
and sends one ``SampleBatch`` covering every tag: a value read, or a BAD
sample for a block the device refused (exception response, counted as
``exception_<code>``), could not be decoded, or did not answer. A lost or
silent connection is closed and re-opened under capped exponential backoff
with jitter; pymodbus' own reconnect (300 s cap by default) is switched off.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from typing import Any, ClassVar

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from collector.logs import LogOnce
from collector.receivers.base import Receiver, ReceiverContext, reconnect_delay
from collector.receivers.modbus.decode import Block, DecodeError, Entry, plan_blocks
from collector.receivers.modbus.options import ModbusOptions
from collector.samples import Quality, SampleBatch

# The only function codes this receiver may send: read coils, discrete inputs, holding and input registers.
READ_FUNCTION_CODES = frozenset({1, 2, 3, 4})
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
ILLEGAL_DATA_ADDRESS = 2
_MAX_CONSECUTIVE_TIMEOUTS = 2  # in one poll: the device is silent, stop waiting on the rest of the blocks


class WriteRefused(RuntimeError):
    """Something tried to send a non-read PDU through this receiver's client; it never reaches the wire."""


class ModbusReceiver(Receiver):
    kind: ClassVar[str] = "modbus"
    options_model: ClassVar[type[ModbusOptions]] = ModbusOptions
    live: ClassVar[bool] = True

    def __init__(self, options: ModbusOptions, context: ReceiverContext, *, realtime: bool = True) -> None:
        # ``realtime`` is what the runner passes every receiver in offline replay; a live device has one pace.
        super().__init__(options, context)
        self.options: ModbusOptions = options
        by_name = {tag.name: tag for tag in options.tags}
        entries = [
            Entry(
                tag=int(context.tag_index[by_name[r.tag].source_key]),
                name=r.tag,
                table=r.table,
                address=r.address,
                type=r.resolved_type,
                order=r.order,
                scale=r.scale,
                offset=r.offset,
                no_value=r.no_value,
            )
            for r in options.registers
        ]
        self.blocks: list[Block] = plan_blocks(
            entries,
            max_registers=options.max_registers_per_read,
            max_bits=options.max_bits_per_read,
            max_gap=options.max_gap,
        )
        self.all_tags = np.array(sorted({e.tag for e in entries}), dtype=np.int32)
        self.requests: Counter[int] = Counter()  # PDUs sent, by function code
        self.connections = 0  # TCP connections opened
        self.polls = 0
        self._ever_connected = False
        self._warn_once = LogOnce(context.log)
        self._internal_logged: set[str] = set()
        self._rng = random.Random()

    # -- the client ----------------------------------------------------------------------------

    def _new_client(self) -> AsyncModbusTcpClient:
        opts = self.options
        return AsyncModbusTcpClient(
            opts.host,
            port=opts.port,
            name=f"plantwatch-{self.name}",
            timeout=opts.timeout_s,
            retries=0,  # a read that gets no answer is a fact to report, not to hide behind retries
            reconnect_delay=0,  # no pymodbus auto-reconnect: this receiver owns the backoff
            reconnect_delay_max=opts.reconnect_max_s,
            trace_pdu=self._guard_pdu,
        )

    def _guard_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """Interlock on every PDU pymodbus is about to frame: reads only, ever."""
        if sending:
            if pdu.function_code not in READ_FUNCTION_CODES:
                self.status.count_error("write_refused")
                raise WriteRefused(f"function code {pdu.function_code} refused: this receiver only reads")
            self.requests[pdu.function_code] += 1
        return pdu

    async def _read(self, client: AsyncModbusTcpClient, block: Block) -> ModbusPDU:
        unit = self.options.unit_id
        if block.table == "holding":
            return await client.read_holding_registers(block.start, count=block.count, device_id=unit)
        if block.table == "input":
            return await client.read_input_registers(block.start, count=block.count, device_id=unit)
        if block.table == "coil":
            return await client.read_coils(block.start, count=block.count, device_id=unit)
        return await client.read_discrete_inputs(block.start, count=block.count, device_id=unit)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        log = self.context.log
        failures = 0
        outage_logged = False
        try:
            while True:
                client = self._new_client()
                lost_while_polling = False
                try:
                    if await self._open(client):
                        self.connections += 1
                        if self._ever_connected:
                            self.status.reconnects += 1
                            log.info("modbus source reconnected", extra={"source": self.name, "attempts": failures})
                        self._ever_connected = True
                        failures = 0
                        outage_logged = False
                        await self._poll_until_lost(client)
                        lost_while_polling = True
                    else:
                        self.status.count_error("connect")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a library surprise or a bug: count it, log it once, keep going
                    self._internal(exc)
                finally:
                    client.close()
                self.status.up = False
                if not lost_while_polling:
                    self._send_bad(self.all_tags)  # the poll that lost the link already marked its tags
                if not outage_logged:
                    outage_logged = True
                    log.warning(
                        "modbus source down, reconnecting with backoff",
                        extra={"source": self.name, "endpoint": f"{self.options.host}:{self.options.port}"},
                    )
                await asyncio.sleep(self._backoff(failures))
                failures += 1
        finally:
            self.status.up = False

    async def _open(self, client: AsyncModbusTcpClient) -> bool:
        try:
            async with asyncio.timeout(self.options.timeout_s + 1.0):
                ok = await client.connect()
        except (TimeoutError, OSError, ConnectionException):
            ok = False
        _raise_if_cancelled()
        return bool(ok) and client.connected

    def _backoff(self, failures: int) -> float:
        """Delay before the next connect: doubling from reconnect_min_s, capped, jittered in [d/2, d]."""
        return reconnect_delay(failures, self.options.reconnect_min_s, self.options.reconnect_max_s, self._rng)

    async def _poll_until_lost(self, client: AsyncModbusTcpClient) -> None:
        loop = asyncio.get_running_loop()
        interval = self.options.poll_interval_s
        due = loop.time()
        while True:
            if await self._poll(client):
                return
            due += interval
            now = loop.time()
            if now > due:  # the poll took longer than the interval: skip the missed slots, count it
                self.status.count_error("poll_overrun")
                due += math.ceil((now - due) / interval) * interval
            await asyncio.sleep(due - now)

    async def _poll(self, client: AsyncModbusTcpClient) -> bool:
        """Read every block once and send one batch covering every tag; True when the link is lost."""
        self.polls += 1
        clock = self.context.clock
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []  # (tag, value, good, ts)
        bad: list[np.ndarray] = []
        answered = timeouts = consecutive_timeouts = 0
        lost = False
        blocks = list(self.blocks)
        for i, block in enumerate(blocks):
            if not client.connected:
                self.status.count_error("disconnect")
                lost = True
            if lost or consecutive_timeouts >= _MAX_CONSECUTIVE_TIMEOUTS:
                bad.extend(b.tags for b in blocks[i:])
                break
            try:
                async with asyncio.timeout(self.options.timeout_s + 0.5):
                    response = await self._read(client, block)
            except (TimeoutError, ModbusIOException) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) or "No response" in str(exc) else "io_error"
                self.status.count_error(kind)
                self._warn_once(kind, "modbus read failed", source=self.name, block=_where(block), error=str(exc))
                timeouts += kind == "timeout"
                consecutive_timeouts = consecutive_timeouts + 1 if kind == "timeout" else 0
                bad.append(block.tags)
                continue
            except ConnectionException:
                self.status.count_error("disconnect")
                lost = True
                bad.append(block.tags)
                continue
            finally:
                _raise_if_cancelled()
            consecutive_timeouts = 0
            answered += 1
            if response.isError():
                self._exception(block, response)
                bad.append(block.tags)
                continue
            data: Any = response.bits if block.is_bits else response.registers
            try:
                tag, value, good = block.decode(data)
            except DecodeError as exc:
                self.status.count_error("decode")
                self._warn_once(
                    "decode", "modbus response not decodable", source=self.name, block=_where(block), error=str(exc)
                )
                bad.append(block.tags)
                continue
            parts.append((tag, value, good, clock()))
        self._send(parts, bad)
        if answered == 0 and timeouts:  # nothing answered: a silent device; start over on a fresh connection
            self.status.count_error("no_response")
            lost = True
        self.status.up = bool(parts) and not lost
        return lost

    def _exception(self, block: Block, response: ModbusPDU) -> None:
        code = int(getattr(response, "exception_code", 0) or 0)
        kind = f"exception_{code}"
        self.status.count_error(kind)
        self._warn_once(
            kind,
            "modbus device answered with an exception",
            source=self.name,
            code=code,
            meaning=EXCEPTION_NAMES.get(code, "unknown"),
            block=_where(block),
        )
        at = next((i for i, b in enumerate(self.blocks) if b is block), None)
        if code == ILLEGAL_DATA_ADDRESS and block.has_gaps and at is not None:
            # The device refuses to be read through the gap: read its contiguous runs apart from now on.
            parts = block.split()
            self.blocks[at : at + 1] = parts
            self.context.log.info(
                "modbus block split into contiguous reads",
                extra={"source": self.name, "block": _where(block), "reads": len(parts)},
            )

    # -- output --------------------------------------------------------------------------------

    def _send(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]], bad: list[np.ndarray]) -> None:
        now = self.context.clock()
        tags: list[np.ndarray] = []
        values: list[np.ndarray] = []
        stamps: list[np.ndarray] = []
        quality: list[np.ndarray] = []
        read = 0
        for tag, value, good, ts in parts:
            tags.append(tag)
            values.append(value)
            stamps.append(np.full(tag.shape[0], ts))
            quality.append(np.where(good, np.uint8(Quality.GOOD), np.uint8(Quality.BAD)).astype(np.uint8))
            read += tag.shape[0]
        for tag in bad:
            tags.append(tag)
            values.append(np.full(tag.shape[0], np.nan))
            stamps.append(np.full(tag.shape[0], now))
            quality.append(np.full(tag.shape[0], Quality.BAD, dtype=np.uint8))
        if not tags:
            return
        ts = np.concatenate(stamps)
        batch = SampleBatch(
            source=self.context.index,
            tag=np.concatenate(tags).astype(np.int32, copy=False),
            value=np.concatenate(values),
            ts=ts,
            recv_ts=ts.copy(),
            quality=np.concatenate(quality),
        )
        self.context.queue.put_nowait(batch)
        if read:
            self.status.samples += read
            self.status.last_sample_time = now

    def _send_bad(self, tags: np.ndarray) -> None:
        self._send([], [tags])

    def _internal(self, exc: Exception) -> None:
        self.status.count_error("internal")
        key = type(exc).__name__
        if key not in self._internal_logged:
            self._internal_logged.add(key)
            self.context.log.error(
                "modbus receiver error, retrying (further ones are counted, not logged)",
                exc_info=exc,
                extra={"source": self.name, "kind": key},
            )


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library swallowed.

    Python 3.11's ``asyncio.wait_for`` (which pymodbus awaits each response with)
    returns the result instead of raising when the task is cancelled just as the
    response arrives; the cancel request then stays pending on the task. Without
    this check the receiver would poll on after the daemon cancelled it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _where(block: Block) -> str:
    return f"{block.table}:{block.start}+{block.count}"
