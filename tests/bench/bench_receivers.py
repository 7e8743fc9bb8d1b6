"""Throughput of the three protocol receivers against their raw client library, in the same run.

Not a pytest test (pytest ignores tests/bench). Run from the repository root:

    python tests/bench/bench_receivers.py            # 1k and 10k tags, 3 repeats each
    python tests/bench/bench_receivers.py --quick    # smaller, one repeat: a smoke run
    python tests/bench/bench_receivers.py --only modbus --tags 10000 --duration 5

It prints, per receiver and tag count, the values per second delivered into a
``SampleQueue`` (drained by a task as the daemon's pipeline does) next to the
rate of the raw client library doing the least work that still reads the same
data, and the ratio (target: >= 90 %). The median of the repeats is printed;
raw and receiver runs alternate so that the noise of a shared machine hits both.

* modbus: the simulator's Modbus server (``ModbusPlantServer``, float32 holding
  registers, in a subprocess) polled back to back. Raw: pymodbus
  ``read_holding_registers`` over the same blocks, counting registers / 2.
  The receiver's ``poll_interval_s`` is set below its validated minimum so that
  it, too, polls back to back.
* opcua: the simulator's OPC-UA server (``OpcUaPlantServer``, in a subprocess)
  writing new values to every tag as fast as it can. Raw: asyncua's
  ``Subscription`` with a ``datachange_notification`` handler that counts.
  Both subscribe with the same publishing interval and queue size; when the
  server is the bottleneck both see its rate and the script says so.
* mqtt: a real mosquitto; ``--messages`` JSON messages (the simulator's payload
  format, one tag per topic) are queued by the broker for a persistent session
  before the consumer connects, so the figure is the consumer's own rate, not
  the publisher's. Raw: paho with ``loop_start`` and an ``on_message`` that
  reads topic and payload and counts. ``--mqtt-qos`` (default 1, the
  receiver's default) and ``--mqtt-protocol`` (v5 or v311) set both sides.
  Raw and receiver runs of a pair alternate in order. The receiver's clock
  stops when its last sample is in the queue, so its figure includes the
  hand-off's latency (<= 50 ms poll), which raw paho's callback does not
  have. The note says how the receiver's bursts were decoded (``template``:
  whole, ``each``: message by message) and whether paho read through the
  read-ahead buffer.

Every loop is bounded by ``--timeout``. Besides values per wall second, each
line gives values per CPU second of this process: the servers and the broker
run in other processes, so on a shared machine that figure moves less with
the load of others, and when the server is the bottleneck (OPC-UA here) it is
the only one that compares the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collector.queue import SampleQueue  # noqa: E402
from collector.receivers.base import Receiver, ReceiverContext  # noqa: E402
from collector.samples import Quality  # noqa: E402
from sim_plant.catalog import TagSpec  # noqa: E402

TARGET = 0.90
GOOD = int(Quality.GOOD)
PLANT = "bench"
LOG = logging.getLogger("bench.receivers")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_tags(n: int) -> tuple[TagSpec, ...]:
    """``n`` analog measurements in 10 areas: the bench plant's catalog."""
    return tuple(
        TagSpec(name=f"T{i:05d}", unit="m", lo=0.0, hi=100.0, description="bench tag", area=f"A{i % 10}")
        for i in range(n)
    )


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM (SIGKILL after 10 s) a process this script started; what it printed, if it was piped."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=5)
    return (out or b"").decode(errors="replace")


def spawn_server(kind: str, n_tags: int, port: int, timeout: float) -> subprocess.Popen[bytes]:
    """The simulator's server for ``kind`` in a process of its own (its CPU is not the receiver's GIL)."""
    args = [sys.executable, str(Path(__file__)), "--serve", kind, "--tags", str(n_tags), "--port", str(port)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE)
    wait_port(port, proc, timeout)
    return proc


def serve(kind: str, n_tags: int, port: int) -> None:
    """Subprocess body: run the simulator's server until SIGTERM (bounded to one hour)."""
    from sim_plant.servers.base import WriteLog

    tags = bench_tags(n_tags)
    rng = np.random.default_rng(1)

    async def main() -> None:
        done = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
        if kind == "modbus":
            from sim_plant.servers.modbus import ModbusPlantServer

            server: Any = ModbusPlantServer(PLANT, tags, WriteLog(), port=port, unit_id=1)
        else:
            from sim_plant.servers.opcua import OpcUaPlantServer

            server = OpcUaPlantServer(PLANT, tags, WriteLog(), port=port)
        await server.start()
        values = 50.0 + rng.standard_normal(n_tags)
        await server.publish(time.time(), values)
        deadline = time.monotonic() + 3600
        began, written = time.monotonic(), 0
        try:
            while not done.is_set() and time.monotonic() < deadline:
                if kind == "opcua":  # new values on every tag, as fast as the server can write them
                    values += rng.standard_normal(n_tags) * 0.01
                    t = time.monotonic()
                    await server.publish(time.time(), values)
                    written += n_tags
                    # publish() does not yield: leave the loop twice as long to the sessions (Publish, CreateMI)
                    await asyncio.sleep(2.0 * (time.monotonic() - t))
                else:  # a polled server: the image stays, the reads are what is measured
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), 1.0)
        finally:
            print(f"written {written} in {time.monotonic() - began:.3f}", flush=True)
            await server.stop()

    asyncio.run(main())


# -- shared -----------------------------------------------------------------------------------------


class Rate(NamedTuple):
    """Values per second of wall time, and per CPU second of this process (the servers run in others)."""

    wall: float
    cpu: float


class Stopwatch:
    """Wall and CPU clocks started together: the CPU figure hardly moves with the load of other processes."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rate(self, values: int) -> Rate:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return Rate(values / wall, values / cpu if cpu > 0 else float("nan"))


def make_context(keys: list[str], queue: SampleQueue, name: str) -> ReceiverContext:
    return ReceiverContext(
        index=0,
        tag_index={k: i for i, k in enumerate(keys)},
        queue=queue,
        tick_s=1.0,
        log=logging.getLogger(f"bench.{name}"),
    )


async def run_receiver(
    receiver: Receiver, queue: SampleQueue, *, warmup: float, duration: float, target: int | None, timeout: float
) -> Rate:
    """Values per second the receiver queued: GOOD samples drained after ``warmup`` for ``duration`` seconds.

    With ``target`` (MQTT's fixed message count) the clock runs from the start of ``run()`` until ``target``
    samples are in, and ``warmup``/``duration`` are unused.
    """
    task = asyncio.create_task(receiver.run())
    began = time.perf_counter()
    counted = 0
    watch: Stopwatch | None = None if target is None else Stopwatch()
    try:
        while time.perf_counter() - began < timeout:
            await queue.wait(0.05)
            n = sum(int(np.count_nonzero(b.quality == GOOD)) for b in queue.drain())
            if task.done():
                raise RuntimeError(f"receiver ended: {task!r}")
            now = time.perf_counter()
            if target is not None:
                counted += n
                if counted >= target:
                    assert watch is not None
                    return watch.rate(counted)
                continue
            if watch is None:
                if now - began >= warmup:
                    watch = Stopwatch()
                continue
            counted += n
            if now - watch.wall >= duration:
                return watch.rate(counted)
        raise RuntimeError(f"no result within {timeout} s; status {receiver.status}")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


def median_ratio(raw: list[float], rx: list[float]) -> tuple[float, float, float]:
    """Median rates, and the median of the ratios of the runs made side by side (they share the machine's load)."""
    ratios = [x / r for r, x in zip(raw, rx, strict=True) if r]
    return statistics.median(raw), statistics.median(rx), statistics.median(ratios) if ratios else float("nan")


Runs = tuple[list[Rate], list[Rate], str]


# -- Modbus -----------------------------------------------------------------------------------------


def modbus_options(port: int, n_tags: int) -> Any:
    from collector.receivers.modbus import ModbusOptions
    from sim_plant.servers.register_map import register_map

    regs = [
        {"tag": e.tag, "table": "holding", "address": e.address, "type": "float32", "order": "ABCD"}
        for e in register_map(bench_tags(n_tags), "big")
        if e.table == "holding"
    ]
    doc = {
        "name": "bench-plc",
        "kind": "modbus",
        "port": port,
        "unit_id": 1,
        "timeout_s": 5.0,
        "tags": [{"name": r["tag"]} for r in regs],
        "registers": regs,
    }
    opts = ModbusOptions.model_validate(doc)
    return opts.model_copy(update={"poll_interval_s": 1e-4})  # back to back, like the raw loop


async def modbus_raw(port: int, blocks: list[tuple[int, int]], warmup: float, duration: float) -> Rate:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5.0, retries=0, reconnect_delay=0)
    await client.connect()
    try:
        began = time.perf_counter()
        watch: Stopwatch | None = None
        values = 0
        while True:
            for start, count in blocks:
                rr = await client.read_holding_registers(start, count=count, device_id=1)
                if rr.isError():
                    raise RuntimeError(f"raw read failed: {rr}")
                if watch is not None:
                    values += len(rr.registers) // 2
            now = time.perf_counter()
            if watch is None:
                if now - began >= warmup:
                    watch = Stopwatch()
            elif now - watch.wall >= duration:
                return watch.rate(values)
    finally:
        client.close()


async def modbus_receiver(port: int, n_tags: int, warmup: float, duration: float, timeout: float) -> Rate:
    from collector.receivers.modbus import ModbusReceiver

    opts = modbus_options(port, n_tags)
    queue = SampleQueue(10_000_000)
    receiver = ModbusReceiver(opts, make_context([t.source_key for t in opts.tags], queue, "modbus"))
    return await run_receiver(receiver, queue, warmup=warmup, duration=duration, target=None, timeout=timeout)


def bench_modbus(n_tags: int, args: argparse.Namespace) -> Runs:
    from collector.receivers.modbus import ModbusReceiver

    port = free_port()
    proc = spawn_server("modbus", n_tags, port, 60)
    try:
        opts = modbus_options(port, n_tags)
        probe = ModbusReceiver(opts, make_context([t.source_key for t in opts.tags], SampleQueue(10), "probe"))
        blocks = [(b.start, b.count) for b in probe.blocks]
        raw: list[Rate] = []
        rx: list[Rate] = []
        for _ in range(args.repeats):
            raw.append(asyncio.run(modbus_raw(port, blocks, args.warmup, args.duration)))
            rx.append(asyncio.run(modbus_receiver(port, n_tags, args.warmup, args.duration, args.timeout)))
    finally:
        stop(proc)
    return raw, rx, f"{len(blocks)} reads of <= {max(c for _, c in blocks)} registers per poll"


# -- OPC-UA -----------------------------------------------------------------------------------------


def opcua_node_ids(n_tags: int, ns: int) -> list[str]:
    return [f"ns={ns};s={PLANT}.{t.name}" for t in bench_tags(n_tags)]


async def opcua_namespace(endpoint: str) -> int:
    from asyncua import Client

    client = Client(endpoint, timeout=10)
    async with client:
        return int(await client.get_namespace_index(f"urn:plantwatch:sim:{PLANT}"))


PUBLISHING_MS = 100.0
QUEUE_SIZE = 10


async def opcua_raw(endpoint: str, node_ids: list[str], warmup: float, duration: float) -> Rate:
    from asyncua import Client, ua

    class Handler:
        count = 0

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            Handler.count += 1

    client = Client(endpoint, timeout=30, watchdog_intervall=30)
    async with client:
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=PUBLISHING_MS,
            RequestedLifetimeCount=600,
            RequestedMaxKeepAliveCount=100,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = await client.create_subscription(params, Handler())
        nodes = [client.get_node(n) for n in node_ids]
        await sub.subscribe_data_change(nodes, queuesize=QUEUE_SIZE, sampling_interval=0.0)
        await asyncio.sleep(warmup)
        c0, watch = Handler.count, Stopwatch()
        await asyncio.sleep(duration)
        rate = watch.rate(Handler.count - c0)
        with contextlib.suppress(Exception):
            await sub.delete()
    return rate


async def opcua_receiver(endpoint: str, node_ids: list[str], warmup: float, duration: float, timeout: float) -> Rate:
    from collector.receivers.opcua import OpcUaOptions, OpcUaReceiver

    doc = {
        "name": "bench-opcua",
        "kind": "opcua",
        "endpoint": endpoint,
        "publishing_interval_ms": PUBLISHING_MS,
        "queue_size": QUEUE_SIZE,
        "timeout_s": 30.0,
        "watchdog_s": 30.0,
        "tags": [{"name": n.rsplit(".", 1)[-1], "column": n} for n in node_ids],
    }
    opts = OpcUaOptions.model_validate(doc)
    queue = SampleQueue(10_000_000)
    receiver = OpcUaReceiver(opts, make_context([t.source_key for t in opts.tags], queue, "opcua"))
    return await run_receiver(receiver, queue, warmup=warmup, duration=duration, target=None, timeout=timeout)


def bench_opcua(n_tags: int, args: argparse.Namespace) -> Runs:
    port = free_port()
    proc = spawn_server("opcua", n_tags, port, 300)
    endpoint = f"opc.tcp://127.0.0.1:{port}/plantwatch/{PLANT}"
    warmup = args.warmup + 2.0 + n_tags / 2000  # creating 10k monitored items takes a while
    # The server writes every tag, then rests twice as long: the window spans several of its cycles.
    duration = min(20.0, max(args.duration, n_tags / 500))
    out = ""
    try:
        ns = asyncio.run(opcua_namespace(endpoint))
        node_ids = opcua_node_ids(n_tags, ns)
        raw: list[Rate] = []
        rx: list[Rate] = []
        for _ in range(args.repeats):
            raw.append(asyncio.run(opcua_raw(endpoint, node_ids, warmup, duration)))
            rx.append(asyncio.run(opcua_receiver(endpoint, node_ids, warmup, duration, args.timeout)))
    finally:
        out = stop(proc)
    offered = ""
    for line in out.splitlines():
        if line.startswith("written "):
            _, n, _, secs = line.split()
            offered = f", server wrote {int(n) / float(secs):,.0f} values/s on average"
    return raw, rx, f"publishing {PUBLISHING_MS:.0f} ms, queue {QUEUE_SIZE}{offered}"


# -- MQTT -------------------------------------------------------------------------------------------


class Mosquitto:
    """mosquitto on 127.0.0.1 that queues QoS 1 messages for offline persistent sessions without limit."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    f"user {getpass.getuser()}",
                    "allow_anonymous true",
                    "persistence false",
                    "max_queued_messages 0",
                    "max_queued_bytes 0",
                    "max_inflight_messages 0",
                    "queue_qos0_messages true",  # so that QoS 0 subscriptions of an offline session get them too
                    "log_type error",
                ]
            )
            + "\n"
        )
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, 10)

    def stop(self) -> None:
        stop(self.proc)


MAX_UNACKED = 30_000  # QoS 1 messages the preloading publisher leaves unacknowledged


def mqtt_topic(i: int) -> str:
    return f"plantwatch/{PLANT}/A{i % 10}/T{i:05d}"


@dataclass(frozen=True)
class MqttRun:
    """One MQTT measurement: broker port, the consumer's session, and what it subscribes with."""

    port: int
    client_id: str
    n_tags: int
    messages: int
    qos: int
    protocol: str
    timeout: float


def mqtt_session(run: MqttRun, client_id: str | None = None) -> tuple[Any, dict[str, Any]]:
    """A paho client of ``run``'s protocol and the connect() arguments of a persistent session."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    cid = client_id or run.client_id
    if run.protocol == "v5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        return client, {"clean_start": False, "properties": props}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311, clean_session=False)
    return client, {}


def mqtt_prepare(run: MqttRun) -> None:
    """Create the persistent session with its subscription, go away, and have the broker queue the messages."""
    from sim_plant.servers.mqtt import payload_for

    sub, connect_args = mqtt_session(run)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", run.port, **connect_args)
    sub.loop_start()
    sub.subscribe(f"plantwatch/{PLANT}/#", qos=run.qos)
    if not subscribed.wait(run.timeout):
        raise RuntimeError("no SUBACK")
    sub.disconnect()
    sub.loop_stop()

    pub, _ = mqtt_session(run, f"bench-pub-{time.monotonic_ns()}")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", run.port)
    pub.loop_start()
    topics = [mqtt_topic(i) for i in range(run.n_tags)]
    ts0 = time.time()
    deadline = time.monotonic() + run.timeout
    pending: deque[Any] = deque()
    info = None
    for k in range(run.messages):
        while len(pending) >= MAX_UNACKED and time.monotonic() < deadline:  # packet ids are 16 bits: stay below
            if pending[0].is_published():
                pending.popleft()
            else:
                time.sleep(0.001)
        i = k % run.n_tags
        # Published with QoS 1 so that the broker surely holds every one; delivered with the subscription's QoS.
        info = pub.publish(topics[i], payload_for(50.0 + (k % 97) * 0.01, ts0 + k // run.n_tags), qos=1)
        pending.append(info)
    while info is not None and not info.is_published() and time.monotonic() < deadline:
        time.sleep(0.01)
    pub.disconnect()
    pub.loop_stop()
    if info is None or not info.is_published():
        raise RuntimeError("the publisher did not finish")


def mqtt_raw(run: MqttRun) -> Rate:
    done = threading.Event()
    count = [0]

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        message.topic, message.payload  # noqa: B018 - what any consumer reads
        count[0] += 1
        if count[0] >= run.messages:
            done.set()

    client, connect_args = mqtt_session(run)
    client.on_message = on_message
    watch = Stopwatch()
    client.connect("127.0.0.1", run.port, **connect_args)
    client.loop_start()
    try:
        if not done.wait(run.timeout):
            raise RuntimeError(f"raw paho got {count[0]} of {run.messages} messages")
        return watch.rate(count[0])
    finally:
        client.disconnect()
        client.loop_stop()


def mqtt_receiver(run: MqttRun) -> tuple[Rate, Counter[str], bool]:
    from collector.receivers.mqtt import MqttOptions, MqttReceiver

    doc = {
        "name": "bench-mqtt",
        "kind": "mqtt",
        "port": run.port,
        "client_id": run.client_id,
        "qos": run.qos,
        "protocol": run.protocol,
        "topics": [{"filter": f"plantwatch/{PLANT}/#"}],
        "tags": [{"name": t.name} for t in bench_tags(run.n_tags)],
        "queue_max": 200_000,
        "queue_max_bytes": 64 << 20,
    }
    opts = MqttOptions.model_validate(doc)
    queue = SampleQueue(10_000_000)
    receiver = MqttReceiver(opts, make_context([t.source_key for t in opts.tags], queue, "mqtt"))

    async def main() -> Rate:
        return await run_receiver(receiver, queue, warmup=0, duration=0, target=run.messages, timeout=run.timeout)

    rate = asyncio.run(main())
    if receiver.status.errors:
        raise RuntimeError(f"receiver errors: {dict(receiver.status.errors)}")
    return rate, receiver.bursts, receiver.read_ahead


def bench_mqtt(n_tags: int, args: argparse.Namespace) -> Runs:
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        broker = Mosquitto(Path(tmp))
        try:
            raw: list[Rate] = []
            rx: list[Rate] = []
            paths: Counter[str] = Counter()
            for r in range(args.repeats):
                common = {"port": broker.port, "n_tags": n_tags, "messages": args.messages, "timeout": args.timeout}
                setup = {"qos": args.mqtt_qos, "protocol": args.mqtt_protocol}
                raw_run = MqttRun(client_id=f"bench-raw-{n_tags}-{r}", **common, **setup)
                rx_run = MqttRun(client_id=f"bench-rx-{n_tags}-{r}", **common, **setup)
                # Same broker, publisher and payloads; the order alternates (raw first, then receiver first)
                # so that a drift in the machine's load does not always fall on the same side of a pair.
                for side in ("raw", "rx") if r % 2 == 0 else ("rx", "raw"):
                    if side == "raw":
                        mqtt_prepare(raw_run)
                        raw.append(mqtt_raw(raw_run))
                    else:
                        mqtt_prepare(rx_run)
                        rate, bursts, read_ahead = mqtt_receiver(rx_run)
                        rx.append(rate)
                        paths.update(bursts)
                        paths["read-ahead"] += read_ahead
        finally:
            broker.stop()
    queued = f"{args.messages} JSON messages queued by the broker"
    how = ", ".join(f"{k} {v}" for k, v in sorted(paths.items()))
    return raw, rx, f"{queued}, QoS {args.mqtt_qos}, MQTT {args.mqtt_protocol}; receiver bursts: {how}"


# -- main -------------------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[int, argparse.Namespace], Runs]] = {
    "modbus": bench_modbus,
    "opcua": bench_opcua,
    "mqtt": bench_mqtt,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, short runs, fewer MQTT messages")
    parser.add_argument("--only", choices=list(BENCHES), action="append", help="run only these receivers")
    parser.add_argument("--tags", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds timed per run (modbus, opcua)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before timing starts (modbus, opcua)")
    parser.add_argument("--messages", type=int, default=100_000, help="MQTT messages per run")
    parser.add_argument("--mqtt-qos", type=int, choices=[0, 1], default=1, help="QoS of the subscriptions")
    parser.add_argument("--mqtt-protocol", choices=["v5", "v311"], default="v5")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of every run, seconds")
    parser.add_argument("--serve", choices=["modbus", "opcua"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        serve(args.serve, args.tags[0], args.port)
        return 0
    if args.quick:
        args.repeats, args.duration, args.warmup, args.messages = 1, 2.0, 0.5, 20_000
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # teardown chatter ("Cancel send ...")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores (shared)")
    print(f"median of {args.repeats} runs; values/s delivered; ratio: median of paired runs; target >= {TARGET:.0%}")
    print("cpu: values per CPU second of this process (receiver or raw client; servers and broker run apart)")
    head = f"{'receiver':8} {'tags':>6} {'raw/s':>10} {'rx/s':>10} {'ratio':>7}"
    head += f" {'raw/cpu-s':>10} {'rx/cpu-s':>10} {'ratio':>7}"
    print(f"{head}  runs/s (raw | receiver)")
    for kind in args.only or list(BENCHES):
        for n in args.tags:
            raw, rx, note = BENCHES[kind](n, args)
            r, x, ratio = median_ratio([v.wall for v in raw], [v.wall for v in rx])
            rc, xc, ratio_cpu = median_ratio([v.cpu for v in raw], [v.cpu for v in rx])
            runs = " ".join(f"{v.wall:,.0f}" for v in raw) + " | " + " ".join(f"{v.wall:,.0f}" for v in rx)
            flag = "" if ratio >= TARGET else "  < target"
            print(
                f"{kind:8} {n:>6} {r:>10,.0f} {x:>10,.0f} {ratio:>7.1%} {rc:>10,.0f} {xc:>10,.0f} {ratio_cpu:>7.1%}"
                f"  {runs}  ({note}){flag}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
