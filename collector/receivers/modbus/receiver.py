"""The Modbus TCP source: polls register blocks with pymodbus' async client, read-only.

One client (one TCP connection) per source at any time, reads only (function
codes 1-4; any other PDU is refused before it reaches the wire), every wait
bounded by ``timeout_s``. Each poll reads the planned blocks one after another
and sends one ``SampleBatch`` covering every tag: a value read, or a BAD
sample for a block the device refused (exception response, counted as
``exception_<code>``), could not be decoded, or did not answer. A lost or
silent connection is closed and re-opened under capped exponential backoff
with jitter; pymodbus' own reconnect (300 s cap by default) is switched off.

With TLS 1.3 the device checks the client's certificate after the client's
handshake has returned, so a refused (missing or untrusted) client
certificate arrives as an alert on the first read, or as the connection
closing before any answer. That first read of a fresh TLS link is raced
against the link's loss, and such a loss counts ``tls_client_refused``, not
``timeout``; it is retried under the same backoff.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
from collections import Counter
from typing import Any, ClassVar

import numpy as np
from pymodbus.client import AsyncModbusTcpClient, AsyncModbusTlsClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from collector.logs import LogOnce
from collector.receivers.base import Receiver, ReceiverContext, reconnect_delay
from collector.receivers.modbus.decode import Block, DecodeError, Entry, PollImage, plan_blocks
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
_SELECTOR_RESOLUTION_S = 1e-3  # epoll timeouts are whole milliseconds
# OpenSSL verify results that mean "a good certificate, for another name" (X509_V_ERR_HOSTNAME/IP_ADDRESS_MISMATCH)
_NAME_MISMATCH = frozenset({62, 64})


class _HoldingWords(ReadHoldingRegistersResponse):
    """An FC3 response whose registers are one numpy view of the frame, not a Python int per register.

    pymodbus unpacks each register with ``struct.unpack`` in a Python loop, the
    largest cost of a read after the network; the receiver copies the words
    into its poll image anyway, so it takes them as they came, big endian.
    """

    function_code = 3

    def decode(self, data: bytes) -> None:
        size = int(data[0]) if data else 0
        if size >= len(data):
            raise ModbusIOException(
                f"byte_count {size} > length of packet {len(data)}", function_code=self.function_code
            )
        self.registers = np.frombuffer(data, dtype=">u2", count=size // 2, offset=1)  # type: ignore[assignment]
        self.count = size // 2

    def __str__(self) -> str:  # pymodbus formats every response for a debug log: keep that cheap
        return f"{type(self).__name__}(dev_id={self.dev_id}, transaction_id={self.transaction_id}, count={self.count})"


class _InputWords(_HoldingWords):
    """The same for FC4."""

    function_code = 4


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
        self._image = PollImage(self.blocks)
        self.all_tags = np.array(sorted({e.tag for e in entries}), dtype=np.int32)
        self.requests: Counter[int] = Counter()  # PDUs sent, by function code
        self.connections = 0  # TCP connections opened
        self.polls = 0
        self._ever_connected = False
        self._attempts = 0  # failed attempts before the current link, for the reconnect log line
        self._warn_once = LogOnce(context.log)
        self._internal_logged: set[str] = set()
        self._rng = random.Random()
        self._connect_error: OSError | None = None  # why the last connect failed, when pymodbus swallowed it
        self._lost_error: BaseException | None = None  # why the current link closed, as asyncio told pymodbus
        self._link_lost = asyncio.Event()  # set when the current link closes
        self._link_answered = False  # the device answered at least once on the current link
        self._client_refused = False  # the current TLS link was refused by the device (see the module's docstring)

    # -- the client ----------------------------------------------------------------------------

    def _new_client(self) -> AsyncModbusTcpClient:
        """A fresh client (one TCP connection): Modbus/TLS with a verifying context when ``tls`` is set.

        Raises OSError (ssl.SSLError included) when the TLS files cannot be used.
        """
        opts = self.options
        common: dict[str, Any] = {
            "port": opts.port,
            "name": f"plantwatch-{self.name}",
            "timeout": opts.timeout_s,
            "retries": 0,  # a read that gets no answer is a fact to report, not to hide behind retries
            "reconnect_delay": 0,  # no pymodbus auto-reconnect: this receiver owns the backoff
            "reconnect_delay_max": opts.reconnect_max_s,
            "trace_pdu": self._guard_pdu,
        }
        client: AsyncModbusTcpClient
        if opts.tls is not None:
            client = AsyncModbusTlsClient(opts.host, sslctx=self._tls_context(), **common)
        else:
            client = AsyncModbusTcpClient(opts.host, **common)
        client.register(_HoldingWords)  # this client's decoder only
        client.register(_InputWords)
        self._remember_connect_errors(client)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        """Verify the device: its chain against ca_file (or the system's CAs), its name against host."""
        tls = self.options.tls
        assert tls is not None
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file is not None else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = tls.verify_hostname
        context.verify_mode = ssl.CERT_REQUIRED  # whatever check_hostname is: the chain is always verified
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        return context

    def _remember_connect_errors(self, client: AsyncModbusTcpClient) -> None:
        """Keep the exception of a failed connect, which pymodbus logs and turns into ``False``.

        It is what tells an untrusted certificate from a name mismatch from a refused port. pymodbus 3.x
        connects through ``ctx.call_create``; without it the kinds fall back to ``connect``/``tls``.
        """
        ctx = getattr(client, "ctx", None)
        create = getattr(ctx, "call_create", None)
        if ctx is None or create is None:
            return

        async def create_connection() -> Any:
            try:
                return await create()
            except OSError as exc:
                self._connect_error = exc
                raise

        ctx.call_create = create_connection
        lost = getattr(ctx, "connection_lost", None)
        if lost is None:
            return

        def connection_lost(exc: Exception | None) -> None:
            self._lost_error = exc
            self._link_lost.set()
            lost(exc)

        ctx.connection_lost = connection_lost

    def _connect_failure_kind(self) -> str:
        exc = self._connect_error
        if isinstance(exc, ssl.SSLCertVerificationError):
            return "tls_hostname" if exc.verify_code in _NAME_MISMATCH else "tls_untrusted"
        if isinstance(exc, ssl.SSLError) or (exc is None and self.options.tls is not None):
            return "tls"
        return "connect"

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
                lost_while_polling = False
                try:
                    client = self._new_client()
                except (OSError, ValueError) as exc:  # unreadable CA, certificate or key: counted, retried
                    client = None
                    self.status.count_error("tls_config")
                    self._warn_once("tls_config", "modbus TLS files unusable", source=self.name, error=str(exc))
                try:
                    if client is not None and await self._open(client):
                        self.connections += 1
                        self._attempts = failures
                        if self.options.tls is None:  # a TLS link counts once the device has answered on it
                            self._link_established()
                        refused_before, failures = failures, 0
                        outage_logged = False
                        await self._poll_until_lost(client)
                        if self._client_refused:  # as good as a failed connect: the backoff keeps growing
                            failures = refused_before
                        lost_while_polling = True
                    elif client is not None:
                        kind = self._connect_failure_kind()
                        self.status.count_error(kind)
                        if kind != "connect":
                            error = str(self._connect_error) if self._connect_error else "TLS handshake failed"
                            self._warn_once(kind, "modbus TLS connect refused", source=self.name, error=error)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a library surprise or a bug: count it, log it once, keep going
                    self._internal(exc)
                finally:
                    if client is not None:
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

    def _link_established(self) -> None:
        """Count a reconnect once a link really carries reads.

        A TLS 1.3 device that refuses our certificate lets the handshake finish and drops the link at
        the first read; that attempt is a refusal (``tls_client_refused``), not a reconnect.
        """
        if self._ever_connected:
            self.status.reconnects += 1
            self.context.log.info("modbus source reconnected", extra={"source": self.name, "attempts": self._attempts})
        self._ever_connected = True

    async def _open(self, client: AsyncModbusTcpClient) -> bool:
        self._connect_error = None
        self._lost_error = None
        self._link_lost.clear()
        self._link_answered = self._client_refused = False
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
            # The selector sleeps in whole milliseconds: a slot less than that away starts now, not 1 ms late.
            await asyncio.sleep(due - now if due - now >= _SELECTOR_RESOLUTION_S else 0)

    async def _poll(self, client: AsyncModbusTcpClient) -> bool:
        """Read every block once and send one batch covering every tag; True when the link is lost.

        Each response is only copied into the poll's image; the image is decoded once at the end
        (one numpy pass per type and order), and blocks not read become BAD samples.
        """
        self.polls += 1
        clock = self.context.clock
        image = self._image
        if image.blocks != self.blocks:  # a block was split after an exception: new layout
            image = self._image = PollImage(self.blocks)
        blocks = image.blocks
        read = np.zeros(len(blocks), dtype=bool)
        read_ts = np.zeros(len(blocks))
        answered = timeouts = consecutive_timeouts = 0
        lost = False
        for k, block in enumerate(blocks):
            if not client.connected:
                self.status.count_error("disconnect")
                lost = True
            if lost or consecutive_timeouts >= _MAX_CONSECUTIVE_TIMEOUTS:
                break
            try:
                async with asyncio.timeout(self.options.timeout_s + 0.5):
                    if self._link_answered or self.options.tls is None:
                        response = await self._read(client, block)
                    else:
                        response = await self._first_tls_read(client, block)
            except (TimeoutError, ModbusIOException, ConnectionException) as exc:
                if self._refused_tls_client(client):
                    self._client_refused = True
                    self.status.count_error("tls_client_refused")
                    error = str(self._lost_error or exc or "closed before any answer")
                    self._warn_once("tls_client_refused", "modbus TLS device refused us", source=self.name, error=error)
                    lost = True
                    continue
                if isinstance(exc, ConnectionException):
                    self.status.count_error("disconnect")
                    lost = True
                    continue
                kind = "timeout" if isinstance(exc, TimeoutError) or "No response" in str(exc) else "io_error"
                self.status.count_error(kind)
                self._warn_once(kind, "modbus read failed", source=self.name, block=_where(block), error=str(exc))
                timeouts += kind == "timeout"
                consecutive_timeouts = consecutive_timeouts + 1 if kind == "timeout" else 0
                continue
            finally:
                _raise_if_cancelled()
            consecutive_timeouts = 0
            answered += 1
            if not self._link_answered and self.options.tls is not None:
                self._link_established()
            self._link_answered = True
            if response.isError():
                self._exception(block, response)
                continue
            data: Any = response.bits if block.is_bits else response.registers
            try:
                image.fill(k, data)
            except DecodeError as exc:
                self.status.count_error("decode")
                self._warn_once(
                    "decode", "modbus response not decodable", source=self.name, block=_where(block), error=str(exc)
                )
                continue
            read[k] = True
            read_ts[k] = clock()
        tag, value, good, block_of = image.decode(read)
        bad = [image.block_tags[k] for k in np.flatnonzero(~read)]
        self._send((tag, value, good, read_ts[block_of]), bad)
        if answered == 0 and timeouts:  # nothing answered: a silent device; start over on a fresh connection
            self.status.count_error("no_response")
            lost = True
        self.status.up = bool(read.any()) and not lost
        return lost

    async def _first_tls_read(self, client: AsyncModbusTcpClient, block: Block) -> ModbusPDU:
        """The first read on a fresh TLS link, given up as soon as the link closes.

        pymodbus leaves a request pending until its timeout when the connection drops; a device that
        refuses our certificate drops it at once, and that should not look like a silent device.
        """
        read = asyncio.ensure_future(self._read(client, block))
        lost = asyncio.ensure_future(self._link_lost.wait())
        try:
            await asyncio.wait((read, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not read.done():
                read.cancel()
        if read.done() and not read.cancelled():
            return read.result()
        raise ConnectionException("the TLS link closed before the first answer")

    def _refused_tls_client(self, client: AsyncModbusTcpClient) -> bool:
        """A fresh TLS link that ended, by an alert or by closing, before the device answered anything."""
        if self.options.tls is None or self._link_answered:
            return False
        return isinstance(self._lost_error, ssl.SSLError) or self._link_lost.is_set() or not client.connected

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

    def _send(self, read: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None, bad: list[np.ndarray]) -> None:
        """One batch: the values ``read`` (tag, value, good, ts) and a BAD sample now for each tag in ``bad``."""
        now = self.context.clock()
        tags: list[np.ndarray] = []
        values: list[np.ndarray] = []
        stamps: list[np.ndarray] = []
        quality: list[np.ndarray] = []
        n_read = 0
        if read is not None and read[0].shape[0]:
            tag, value, good, ts = read
            tags.append(tag)
            values.append(value)
            stamps.append(ts)
            quality.append(np.where(good, np.uint8(Quality.GOOD), np.uint8(Quality.BAD)).astype(np.uint8))
            n_read = tag.shape[0]
        for tag in bad:
            tags.append(tag)
            values.append(np.full(tag.shape[0], np.nan))
            stamps.append(np.full(tag.shape[0], now))
            quality.append(np.full(tag.shape[0], Quality.BAD, dtype=np.uint8))
        if not tags:
            return
        ts_all = stamps[0] if len(stamps) == 1 else np.concatenate(stamps)
        batch = SampleBatch(
            source=self.context.index,
            tag=(tags[0] if len(tags) == 1 else np.concatenate(tags)).astype(np.int32, copy=False),
            value=values[0] if len(values) == 1 else np.concatenate(values),
            ts=ts_all,
            recv_ts=ts_all.copy(),
            quality=quality[0] if len(quality) == 1 else np.concatenate(quality),
        )
        self.context.queue.put_nowait(batch)
        if n_read:
            self.status.samples += n_read
            self.status.last_sample_time = now

    def _send_bad(self, tags: np.ndarray) -> None:
        self._send(None, [tags])

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
