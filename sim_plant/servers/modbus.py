"""A read-only Modbus TCP server over one plant's tags (pymodbus 3.16 server with a SimDevice datastore).

The register map is ``register_map(tags, word_order)`` (see ``register_map.py``
and the README beside this file). The server is read-only, as the field device
plantwatch watches must be from plantwatch's side: every write request (function
codes 5, 6, 15, 16, 22 and 23) is recorded in the ``WriteLog`` and answered with
the exception ILLEGAL FUNCTION (0x01); no served value ever changes from the
network.

How it is built on pymodbus 3.16 (where ``ModbusDeviceContext`` and the data
blocks are deprecated and copied into an internal ``SimDevice``, so overriding a
data block's ``setValues`` no longer sees the writes):

* the datastore is a ``SimDevice`` with four separate tables (coils, discrete
  inputs, holding, input registers) sized from the map;
* the write function codes are replaced, through the server's ``custom_pdu``
  hook, by request classes whose ``datastore_update`` records the attempt and
  returns the exception response without touching the datastore, so even a
  write to an unmapped address or another unit id is recorded;
* the ``SimDevice`` ``action`` callback, which pymodbus calls before it answers
  any request that reaches the datastore, copies the latest published image
  into the registers being read, and refuses (and records) anything that still
  tries to write, as a second line of defence.

Fault injection: ``ReadFault`` entries in ``ModbusPlantServer.faults`` make the
simulated device (or the gateway in front of it) answer chosen reads with an
exception code instead of data, e.g. SERVER DEVICE BUSY (0x06) for a block of
addresses, or GATEWAY TARGET DEVICE FAILED TO RESPOND (0x0B) for a unit id
behind the gateway, so a client's handling of those answers can be tested
against a real server. The list may be changed while the server runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import WriteMultipleCoilsRequest, WriteSingleCoilRequest
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    ReadWriteMultipleRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)
from pymodbus.server import ModbusTcpServer, ModbusTlsServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from sim_plant.catalog import TagSpec
from sim_plant.servers.base import PlantServer, WriteLog
from sim_plant.servers.register_map import (
    INT16_MAX,
    INT16_NO_VALUE,
    RegisterEntry,
    WordOrder,
    check_word_order,
    int16_decimals,
    register_map,
    unit_id_for,
)

WRITE_FUNCTION_CODES = (5, 6, 15, 16, 22, 23)
_WRITE_REQUESTS: tuple[type[ModbusPDU], ...] = (
    WriteSingleCoilRequest,  # 5
    WriteSingleRegisterRequest,  # 6
    WriteMultipleCoilsRequest,  # 15
    WriteMultipleRegistersRequest,  # 16
    MaskWriteRegisterRequest,  # 22
    ReadWriteMultipleRegistersRequest,  # 23
)
_TABLE_OF_FC = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 4: "input"}
_TABLE_OF_FC.update({6: "holding", 16: "holding", 22: "holding", 23: "holding"})
_READ_TABLE_OF_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}

# The client address of the request being handled: set per request task by _PeerAwareHandler.
_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("modbus_peer", default="")


def _target(table: str, address: int, count: int) -> str:
    """``holding:4`` for one register or bit, ``holding:4-7`` for a span."""
    return f"{table}:{address}" if count <= 1 else f"{table}:{address}-{address + count - 1}"


def _write_span(pdu: ModbusPDU) -> tuple[int, int]:
    """(first address, count) a write request tries to change."""
    if isinstance(pdu, ReadWriteMultipleRegistersRequest):
        return pdu.write_address, len(pdu.write_registers)
    if isinstance(pdu, MaskWriteRegisterRequest):
        return pdu.address, 1
    count = len(pdu.bits) if pdu.function_code in (5, 15) else len(pdu.registers)
    return pdu.address, max(count, 1)


@dataclass(frozen=True)
class ReadFault:
    """A read the simulated device refuses with exception ``code``: an injected fault, for tests and demos.

    It matches a read (function code 1-4) addressed to ``unit_id`` (None: the unit the server serves),
    in ``table`` (None: any table), that touches any address in ``first..last`` (inclusive, in the
    table's own addressing: registers for holding/input, bits for coil/discrete). A real device says
    "busy" (0x06) while it is being reconfigured; a gateway says "target failed to respond" (0x0B)
    when the device behind it is silent; both are answers, never data.
    """

    code: int
    unit_id: int | None = None
    table: str | None = None
    first: int = 0
    last: int = 0xFFFF

    def __post_init__(self) -> None:
        ExcCodes(self.code)  # ValueError for a code Modbus does not define
        if self.table is not None and self.table not in _READ_TABLE_OF_FC.values():
            raise ValueError(f"table must be one of {sorted(_READ_TABLE_OF_FC.values())}, not {self.table!r}")
        if self.unit_id is not None and not 0 <= self.unit_id <= 255:
            raise ValueError(f"unit_id must be 0..255, not {self.unit_id}")

    def matches(self, unit_id: int, table: str, address: int, count: int, *, served: int) -> bool:
        """Whether this fault refuses a read of ``count`` items from ``address`` in ``table`` of ``unit_id``.

        ``served`` is the unit id the server serves, which a fault without a ``unit_id`` is about.
        """
        if unit_id != (served if self.unit_id is None else self.unit_id):
            return False
        if self.table is not None and table != self.table:
            return False
        return address <= self.last and address + max(count, 1) - 1 >= self.first


class _RejectWrite:
    """Mixin for a write request class: record the attempt, refuse it, leave the datastore alone."""

    owner: ClassVar[ModbusPlantServer]
    function_code: int

    async def datastore_update(self, context: object, device_id: int) -> ModbusPDU:
        pdu: ModbusPDU = self  # type: ignore[assignment]
        address, count = _write_span(pdu)
        self.owner._record_write(pdu.function_code, address, count)
        return ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_FUNCTION)


class _PeerAwareHandler(ServerRequestHandler):
    """pymodbus's per-connection handler, telling the write log who the client is.

    It also answers a read that an injected ``ReadFault`` matches with that
    fault's exception, and a read for a unit id the server does not serve with
    the exception GATEWAY PATH UNAVAILABLE (0x0A), as a gateway would, where
    pymodbus 3.16 would log a KeyError traceback and answer DEVICE FAILURE.
    Writes to any unit id still go to the rejecting request classes, so they
    are recorded. Connections are counted for the plant server as they open.
    """

    server: _PlantTcpServer

    def callback_connected(self) -> None:
        super().callback_connected()
        self.server.plant._connection_opened(len(self.server.active_connections))

    async def handle_request(self) -> None:
        pdu = self.last_pdu
        refusal = self.server.plant._read_refusal(pdu) if pdu is not None else None
        if pdu is not None and refusal is not None:
            response = ExceptionResponse(pdu.function_code, refusal)
            response.transaction_id = pdu.transaction_id
            response.dev_id = pdu.dev_id
            self.server_send(response, self.last_addr)
            return
        peer = ""
        transport = getattr(self, "transport", None)
        if transport is not None:
            info = transport.get_extra_info("peername")
            if info:
                peer = f"{info[0]}:{info[1]}"
        token = _PEER.set(peer)
        try:
            await super().handle_request()
        finally:
            _PEER.reset(token)


class _PlantTcpServer(ModbusTcpServer):
    plant: ModbusPlantServer

    def callback_new_connection(self) -> ServerRequestHandler:
        return _PeerAwareHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _PlantTlsServer(ModbusTlsServer):
    """The same server inside TLS (Modbus/TLS framing: MBAP frames, as over TCP)."""

    plant: ModbusPlantServer

    def callback_new_connection(self) -> ServerRequestHandler:
        return _PeerAwareHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ModbusPlantServer(PlantServer):
    """Serves one plant's tags over Modbus TCP on ``host:port`` (port 0 picks a free one), read-only.

    With ``tls`` (a server-side ``ssl.SSLContext``, e.g. from ``certs.server_tls_context``) it speaks
    Modbus/TLS instead, as a device of the Modbus Security protocol does.

    ``faults`` (simulator fault injection, also settable later through the ``faults`` list) makes
    matching reads get an exception response instead of data: ``ReadFault(6, table="input")`` is a
    device busy for its input registers, ``ReadFault(11, unit_id=7)`` a gateway whose unit 7 does not
    answer. ``refusals`` counts the exceptions sent for faults, by code. ``connections`` counts the
    client connections accepted since the server was made, ``peak_connections`` the most open at once
    (over restarts: each ``start`` begins with none open), so a test can see how many a client opens.
    """

    protocol = "modbus"

    def __init__(
        self,
        plant_name: str,
        tags: tuple[TagSpec, ...],
        writes: WriteLog,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int | None = None,
        word_order: str = "big",
        tls: ssl.SSLContext | None = None,
        faults: Iterable[ReadFault] = (),
    ) -> None:
        super().__init__(plant_name, tags, writes)
        self.faults: list[ReadFault] = list(faults)
        self.refusals: Counter[int] = Counter()
        self.connections = 0
        self.peak_connections = 0
        self.host = host
        self.tls = tls
        self._requested_port = port
        self.port: int | None = None
        self.unit_id = unit_id_for(plant_name) if unit_id is None else unit_id
        if not 1 <= self.unit_id <= 247:
            raise ValueError(f"unit_id must be 1..247, not {self.unit_id}")
        self.word_order: WordOrder = check_word_order(word_order)
        self.map: list[RegisterEntry] = register_map(tags, self.word_order)
        self._analog = np.array([i for i, t in enumerate(tags) if not t.discrete], dtype=np.intp)
        self._status = np.array([i for i, t in enumerate(tags) if t.discrete], dtype=np.intp)
        self._factor = np.array([10.0 ** int16_decimals(tags[i].lo, tags[i].hi) for i in self._analog])
        n_analog, n_status = len(self._analog), len(self._status)
        self._n_words = max(1, -(-n_status // 16))  # 16 bits per register word
        # The served image: lists pymodbus copies from, replaced whole by publish().
        nan_words = self._float_words(np.full(n_analog, np.nan))
        self._holding: list[int] = nan_words
        self._input: list[int] = [INT16_NO_VALUE & 0xFFFF] * n_analog
        self._bits = np.zeros(n_status, dtype=bool)
        self._bit_words: list[int] = [0] * self._n_words
        self.last_ts: float | None = None
        self._server: _PlantTcpServer | _PlantTlsServer | None = None
        self._listener: asyncio.AbstractServer | None = None

    # -- PlantServer ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        port = self.port if self.port is not None else self._requested_port
        scheme = "modbus-tls" if self.tls is not None else "modbus-tcp"
        return f"{scheme}://{self.host}:{port}?unit={self.unit_id}"

    async def start(self) -> None:
        if self._server is not None:
            return
        server: _PlantTcpServer | _PlantTlsServer
        if self.tls is not None:
            server = _PlantTlsServer(
                self._device(),
                address=(self.host, self._requested_port),
                sslctx=self.tls,
                custom_pdu=self._reject_classes(),
            )
        else:
            server = _PlantTcpServer(
                self._device(),
                address=(self.host, self._requested_port),
                custom_pdu=self._reject_classes(),
            )
        server.plant = self
        await server.serve_forever(background=True)
        listener = server.transport
        sockets = getattr(listener, "sockets", None)
        if not sockets:
            await server.shutdown()
            raise OSError(f"modbus server for {self.plant_name} did not bind {self.host}:{self._requested_port}")
        self.port = int(sockets[0].getsockname()[1])
        self._server = server
        self._listener = listener  # type: ignore[assignment]

    async def publish(self, ts: float, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(self.tags),):
            raise ValueError(f"expected {len(self.tags)} values for {self.plant_name}, got shape {values.shape}")
        analog = values[self._analog]
        self._holding = self._float_words(analog)
        self._input = self._int16_words(analog)
        status = values[self._status]
        known = ~np.isnan(status)
        self._bits[known] = status[known] >= 0.5  # NaN: a bit has no "no value", it keeps its last state
        self._bit_words = self._pack_bits(self._bits)
        self.last_ts = ts

    async def stop(self) -> None:
        server, listener = self._server, self._listener
        self._server = self._listener = None
        if server is None:
            return
        await server.shutdown()
        if listener is not None:
            listener.close()
            await listener.wait_closed()

    # -- the image --------------------------------------------------------------------------

    def _float_words(self, analog: np.ndarray) -> list[int]:
        with np.errstate(over="ignore", invalid="ignore"):
            f32 = analog.astype(">f4")  # beyond float32 range -> inf, NaN stays NaN
        words = f32.view(">u2").reshape(-1, 2)
        if self.word_order == "little":
            words = words[:, ::-1]
        return [int(w) for w in words.ravel()]

    def _int16_words(self, analog: np.ndarray) -> list[int]:
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.rint(analog * self._factor)
            raw = np.clip(scaled, -INT16_MAX, INT16_MAX)  # saturate like a transmitter; inf saturates too
        raw = np.where(np.isnan(analog), INT16_NO_VALUE, raw).astype(np.int64)
        return [int(v) & 0xFFFF for v in raw]

    def _pack_bits(self, bits: np.ndarray) -> list[int]:
        words = [0] * self._n_words
        for m in np.flatnonzero(bits):
            words[m // 16] |= 1 << (m % 16)
        return words

    def registers(self, table: str) -> list[int]:
        """The raw 16-bit words currently served in ``table`` (for tests and debugging)."""
        return list({"holding": self._holding, "input": self._input, "coil": self._bit_words}[table])

    # -- pymodbus glue ----------------------------------------------------------------------

    def _device(self) -> SimDevice:
        n_analog, n_bits = len(self._analog), 16 * self._n_words
        if n_analog:
            holding = [SimData(0, count=2 * n_analog, values=0, datatype=DataType.REGISTERS)]
            inputs = [SimData(0, count=n_analog, values=0, datatype=DataType.REGISTERS)]
        else:
            holding = [SimData(0, datatype=DataType.INVALID)]
            inputs = [SimData(0, datatype=DataType.INVALID)]
        coils = [SimData(0, values=[False] * n_bits, datatype=DataType.BITS)]
        discretes = [SimData(0, values=[False] * n_bits, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id,
            simdata=(coils, discretes, holding, inputs),
            use_bit_addressing=True,
            action=self._on_access,
        )

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: Sequence[int] | Sequence[bool] | None,
    ) -> ExcCodes | None:
        """Called by pymodbus before it answers from the datastore: refresh the image, refuse writes."""
        if set_values is not None or function_code in WRITE_FUNCTION_CODES:
            self._record_write(function_code, address, len(set_values) if set_values is not None else count)
            return ExcCodes.ILLEGAL_FUNCTION
        if function_code == 3:
            image = self._holding
        elif function_code == 4:
            image = self._input
        elif function_code in (1, 2):
            image = self._bit_words
        else:
            return ExcCodes.ILLEGAL_FUNCTION
        current_registers[: len(image)] = image
        return None

    def _read_refusal(self, pdu: ModbusPDU) -> ExcCodes | None:
        """The exception a read gets instead of data: an injected fault's, or 0x0A for a unit id not served.

        None for anything else, writes included (they go on to the rejecting classes, which record them).
        """
        table = _READ_TABLE_OF_FC.get(pdu.function_code)
        if table is None:
            return None
        count = int(getattr(pdu, "count", 1) or 1)
        for fault in self.faults:
            if fault.matches(pdu.dev_id, table, pdu.address, count, served=self.unit_id):
                self.refusals[fault.code] += 1
                return ExcCodes(fault.code)
        if pdu.dev_id != self.unit_id:
            return ExcCodes.GATEWAY_PATH_UNAVIABLE
        return None

    def _connection_opened(self, open_now: int) -> None:
        self.connections += 1
        self.peak_connections = max(self.peak_connections, open_now)

    def _reject_classes(self) -> list[type[ModbusPDU]]:
        classes: list[type[ModbusPDU]] = []
        for base in _WRITE_REQUESTS:
            name = f"Rejected{base.__name__}"
            classes.append(type(name, (_RejectWrite, base), {"owner": self}))
        return classes

    def _record_write(self, function_code: int, address: int, count: int) -> None:
        table = _TABLE_OF_FC.get(function_code, "unknown")
        self.writes.record(self.protocol, f"fc{function_code}", _target(table, address, count), _PEER.get())


__all__ = ["WRITE_FUNCTION_CODES", "ModbusPlantServer", "ReadFault"]
