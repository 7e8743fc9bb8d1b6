"""The MQTT source: subscribes to topic filters on a broker and turns messages into samples (paho-mqtt 2.x).

Two threads, one rule: paho's network runs in a thread of its own (the
"network thread", which also runs paho's callbacks), and that thread does
nothing but hand raw ``(topic, payload)`` to a deque bounded in messages and
in payload bytes (overflow drops the oldest and is counted). No lock: paho's
thread only appends (and drops the oldest when full), the asyncio side only
pops, and each counter they share has one writer. The asyncio side takes the
deque every 50 ms, or when 1000 messages wait, decodes the burst at once
(:mod:`~collector.receivers.mqtt.burst`), deduplicates it and pushes one
``SampleBatch``. A slow pipeline therefore never delays paho's keepalive, and
a flood never grows memory past the bounds.

The network thread owns the connection: connect, run paho's ``loop`` (with a
read-ahead socket under paho, :mod:`~collector.receivers.mqtt.readahead`, so
that a burst of packets costs one syscall instead of four per packet), and on
any failure back off (capped exponential delay with jitter) and connect
again, with clean start off and a session expiry so that the broker keeps the
subscriptions and QoS 1/2 messages while the source is away. Subscriptions
are (re)sent on every connection. This client never publishes and sets no
will: it only reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
import time
from collections import Counter, deque
from itertools import repeat
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.logs import LogOnce
from collector.receivers.base import Receiver, ReceiverContext, reconnect_delay
from collector.receivers.mqtt.burst import DedupWindow, Template
from collector.receivers.mqtt.decode import (
    FastReader,
    PayloadError,
    decode,
    fast_reader,
    filter_matcher,
    topic_key,
)
from collector.receivers.mqtt.options import MqttOptions, TopicOptions
from collector.receivers.mqtt.readahead import ReadAhead
from collector.samples import Quality, SampleBatch

DEDUP_WINDOW = 8  # source timestamps remembered per tag to drop re-deliveries
ROUTE_CACHE_MAX = 65_536  # topic -> route entries before the cache starts over
POLL_S = 0.05  # the asyncio side takes the buffer this often (latency <= 50 ms, a tick is ~1 s)
WAKE_AT = 1000  # ... or as soon as this many messages (or half of queue_max) wait, so bursts come in big batches
READ_BURST = 256  # packets paho parses from the read-ahead between two loop() calls (keepalive, writes)


# Fields of a hand-off item (topic, payload, dup, recv_ts), taken column by column from a burst.
_TOPIC, _PAYLOAD, _RECV_TS = itemgetter(0), itemgetter(1), itemgetter(3)


def _slug(reason: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(reason).lower()).strip("_") or "unknown"


class MqttReceiver(Receiver):
    kind: ClassVar[str] = "mqtt"
    options_model: ClassVar[type[MqttOptions]] = MqttOptions
    live: ClassVar[bool] = True

    def __init__(self, options: MqttOptions, context: ReceiverContext) -> None:
        super().__init__(options, context)
        self.options: MqttOptions = options
        self.client_id = options.effective_client_id
        # Tags by local number (0..n-1): the dedup window is an array over them; _columns maps them to frame columns.
        self._index = {tag.source_key: k for k, tag in enumerate(options.tags)}
        self._columns = np.array([context.tag_index[tag.source_key] for tag in options.tags], dtype=np.int32)
        self._all_tags = np.unique(self._columns)
        self._log_once = LogOnce(context.log)
        # -- hand-off: paho's thread appends (and drops the oldest when full), the asyncio side pops --
        # Each counter has a single writer, so no lock is needed; payload bytes held = in - out - dropped.
        self._buf: deque[tuple[str, bytes, bool, float]] = deque()
        self._bytes_in = 0  # network thread: payload bytes appended, ever
        self._bytes_dropped = 0  # network thread: payload bytes dropped as overflow, ever
        self._overflowed = 0  # network thread: messages dropped as overflow, ever
        self._bytes_out = 0  # asyncio side: payload bytes taken, ever
        self._overflow_counted = 0  # asyncio side: the part of _overflowed already in status.errors
        self._lock = threading.Lock()  # only for the rare: thread errors, disconnections
        self._thread_errors: Counter[str] = Counter()
        self._went_down = 0  # disconnections not yet turned into BAD samples
        self._wake_at = max(1, min(WAKE_AT, options.queue_max // 2))
        self._queue_max, self._queue_max_bytes = options.queue_max, options.queue_max_bytes
        self._max_payload = options.max_payload_bytes
        # -- network thread only --
        self._stop = threading.Event()
        self._connected_once = False
        self._attempt = 0
        self._connack = False  # a CONNACK (accepting or refusing) came for the current attempt
        self._stopping = False
        self._reader: ReadAhead | None = None  # the read-ahead under the current connection's socket
        # -- asyncio side only --
        self._routes: dict[str, TopicOptions | None] = {}
        self._matchers = [(route, filter_matcher(route.filter)) for route in options.topics]
        # The burst path: one template (the first route that has one); topic -> local tag, -1: not on that path.
        templates = [(id(route), Template.for_route(route)) for route in options.topics]
        self._template = next((t for _, t in templates if t is not None), None)
        self._templated = {k for k, t in templates if t is not None and self._template and t.key == self._template.key}
        self._burst_tags: dict[str, int] = {}
        # The message-by-message path: topic -> (local tag, reader of its plain messages); None: general decoder.
        self._fast_topics: dict[str, tuple[int, FastReader] | None] = {}
        self._readers: dict[int, FastReader | None] = {}  # by id of the route
        self._window = DedupWindow(len(options.tags), DEDUP_WINDOW)
        self._last_payload: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        # -- for tests and the bench --
        self.subscribed = threading.Event()  # set at each SUBACK, cleared at each disconnection
        self.buffered_high_water = 0
        self.buffered_bytes_high_water = 0
        self.connections = 0
        self.bursts = Counter[str]()  # bursts decoded whole ("template") or message by message ("each")
        self.read_ahead = False  # paho reads through ReadAhead (set at each connection)

    # -- asyncio side ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        thread = threading.Thread(target=self._network_main, name=f"mqtt-{self.name}", daemon=True)
        thread.start()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                self._wake.clear()
                try:
                    self._drain()
                except Exception as exc:  # never die: count it, log it once, go on
                    self.status.count_error("internal")
                    self._log_once("internal", "MQTT source failed on a batch", source=self.name, error=repr(exc))
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join, self.options.connect_timeout_s + 2.0)
            self.status.up = False

    def _drain(self) -> None:
        buf = self._buf
        pop = buf.popleft
        items = [pop() for _ in range(len(buf))]  # each popleft is atomic; paho's thread may append meanwhile
        held = sum(map(len, map(_PAYLOAD, items)))
        self._bytes_out += held
        with self._lock:
            errors, self._thread_errors = self._thread_errors, Counter()
            went_down, self._went_down = self._went_down, 0
        overflowed = self._overflowed
        if overflowed != self._overflow_counted:
            errors["overflow"] += overflowed - self._overflow_counted
            self._overflow_counted = overflowed
        # The buffer only grows between two takes (trimmed at its bounds): its peaks are seen here.
        self.buffered_high_water = max(self.buffered_high_water, len(items))
        self.buffered_bytes_high_water = max(self.buffered_bytes_high_water, held)
        if errors:
            self.status.errors.update(errors)
        now = self.context.clock()
        if went_down:
            self._send_bad(now)
        if items:
            self._decode(items, now)

    def _send_bad(self, now: float) -> None:
        """The connection went down: every tag of the source gets one BAD sample now."""
        n = len(self._all_tags)
        if not n:
            return
        stamp = np.full(n, now)
        batch = SampleBatch(
            source=self.context.index,
            tag=self._all_tags.copy(),
            value=np.full(n, np.nan),
            ts=stamp,
            recv_ts=stamp.copy(),
            quality=np.full(n, Quality.BAD, dtype=np.uint8),
        )
        self.context.queue.put_nowait(batch)

    def _route(self, topic: str) -> TopicOptions | None:
        try:
            return self._routes[topic]
        except KeyError:
            pass
        route = next((r for r, matches in self._matchers if matches(topic)), None)
        if len(self._routes) >= ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _topic_tag(self, topic: str, route: TopicOptions) -> int | None:
        """The local tag a topic names (tag from a topic level), or None."""
        try:
            return self._index.get(topic_key(topic, route.segment))
        except PayloadError:
            return None

    def _burst_tag(self, topic: str) -> int:
        """The local tag of ``topic`` when its messages can be read by the template; else -1."""
        route = self._route(topic)
        tag = None
        if route is not None and id(route) in self._templated:
            tag = self._topic_tag(topic, route)
        if len(self._burst_tags) >= ROUTE_CACHE_MAX:
            self._burst_tags.clear()
        self._burst_tags[topic] = -1 if tag is None else tag
        return self._burst_tags[topic]

    def _fast_topic(self, topic: str) -> tuple[int, FastReader] | None:
        """The local tag and fast reader of ``topic`` when its tag comes from the topic and is known; else None."""
        route = self._route(topic)
        entry: tuple[int, FastReader] | None = None
        if route is not None:
            key = id(route)
            if key not in self._readers:
                self._readers[key] = fast_reader(route, self.options.max_payload_bytes)
            reader = self._readers[key]
            if reader is not None:
                tag = self._topic_tag(topic, route)
                if tag is not None:
                    entry = (tag, reader)
        if len(self._fast_topics) >= ROUTE_CACHE_MAX:
            self._fast_topics.clear()
        self._fast_topics[topic] = entry
        return entry

    def _decode(self, items: list[tuple[str, bytes, bool, float]], now: float) -> None:
        """One batch from a burst: read whole by the template when every message fits it, else one by one."""
        topics, payloads, stamps = (list(map(getter, items)) for getter in (_TOPIC, _PAYLOAD, _RECV_TS))
        decoded = self._decode_burst(topics, payloads) if self._template is not None else None
        if decoded is not None:
            self.bursts["template"] += 1
            tag, value, ts, quality = decoded
            recv = np.array(stamps, dtype=np.float64)
            self._send(tag, value, ts, recv, quality, np.ones(len(tag), dtype=bool), Counter(), now)
            return
        self.bursts["each"] += 1
        self._decode_each(items, now)

    def _decode_burst(
        self, topics: list[str], payloads: list[bytes]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Local tags, values, source times, qualities of a burst of plain messages; None: not all plain."""
        assert self._template is not None
        n = len(topics)
        known = self._burst_tags
        tag = np.fromiter(map(known.get, topics, repeat(-2, n)), dtype=np.int64, count=n)
        if (tag == -2).any():  # topics seen for the first time: look them up once
            for topic in set(topics).difference(known):
                self._burst_tag(topic)
            tag = np.fromiter(map(known.__getitem__, topics), dtype=np.int64, count=n)
        if (tag < 0).any():
            return None
        readings = self._template.parse(payloads)
        if readings is None:
            return None
        return tag, readings.value, readings.ts, readings.quality

    def _decode_each(self, items: list[tuple[str, bytes, bool, float]], now: float) -> None:
        """Message by message: plain ones by the fast reader, the rest by ``decode`` (which says what is wrong)."""
        tags: list[int] = []
        values: list[float] = []
        stamps: list[float] = []
        recvs: list[float] = []
        qualities: list[int] = []
        timed: list[bool] = []  # the sample has a source time (deduplicated by the window, not by payload)
        errors: Counter[str] = Counter()
        max_bytes = self.options.max_payload_bytes
        index = self._index
        fast_topics = self._fast_topics
        for topic, payload, dup, recv_ts in items:
            fast = fast_topics.get(topic, False)
            if fast is False:
                fast = self._fast_topic(topic)
            sample: tuple[int, float, float | None, int] | None = None
            if fast is not None:
                tag, reader = fast
                read = reader(payload)
                if read is not None:
                    sample = (tag, *read)
            if sample is None:
                route = self._route(topic)
                if route is None:  # a message the broker sent for no filter of ours (an old session's)
                    errors["unmatched_topic"] += 1
                    self._log_once("unmatched_topic", "MQTT message on a topic no filter matches", topic=topic[:200])
                    continue
                try:
                    d = decode(payload, topic, route, max_bytes)
                    tag = index.get(d.key)
                    if tag is None:
                        raise PayloadError("unknown_tag", f"no tag reads {d.key[:200]!r}")
                except PayloadError as exc:
                    errors[exc.reason] += 1
                    self._log_once(
                        exc.reason,
                        "malformed MQTT message dropped",
                        source=self.name,
                        topic=topic[:200],
                        error=str(exc),
                    )
                    continue
                sample = (tag, d.value, d.ts, d.quality)
            tag, value, ts, quality = sample
            if ts is None and self._is_repeat(topic, payload, dup):
                errors["duplicate"] += 1
                continue
            tags.append(tag)
            values.append(value)
            stamps.append(recv_ts if ts is None else ts)
            recvs.append(recv_ts)
            qualities.append(quality)
            timed.append(ts is not None)
        self._send(
            np.array(tags, dtype=np.int64),
            np.array(values, dtype=np.float64),
            np.array(stamps, dtype=np.float64),
            np.array(recvs, dtype=np.float64),
            np.array(qualities, dtype=np.uint8),
            np.array(timed, dtype=bool),
            errors,
            now,
        )

    def _send(
        self,
        tag: np.ndarray,
        value: np.ndarray,
        ts: np.ndarray,
        recv: np.ndarray,
        quality: np.ndarray,
        timed: np.ndarray,
        errors: Counter[str],
        now: float,
    ) -> None:
        """Drop re-deliveries of the timed samples (counted), then push one batch in arrival order."""
        keep = np.ones(len(tag), dtype=bool)
        if timed.any():
            keep[timed] = self._window.admit(tag[timed], ts[timed])
        dropped = len(keep) - int(np.count_nonzero(keep))
        if dropped:
            errors["duplicate"] += dropped
            tag, value, ts, recv, quality = tag[keep], value[keep], ts[keep], recv[keep], quality[keep]
        if errors:
            self.status.errors.update(errors)
        if not len(tag):
            return
        batch = SampleBatch(
            source=self.context.index,
            tag=self._columns[tag],
            value=value,
            ts=ts,
            recv_ts=recv,
            quality=quality,
        )
        self.context.queue.put_nowait(batch)
        self.status.samples += len(tag)
        self.status.last_sample_time = now

    def _is_repeat(self, topic: str, payload: bytes, dup: bool) -> bool:
        """No source time: a re-delivery is a DUP-flagged repeat of the topic's last payload."""
        digest = hash(payload)
        last = self._last_payload.get(topic)
        if len(self._last_payload) >= ROUTE_CACHE_MAX:
            self._last_payload.clear()
        self._last_payload[topic] = digest
        return dup and last == digest

    def _wake_up(self) -> None:
        """From the network thread: make the asyncio side take the buffer now."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: run() is ending anyway
            loop.call_soon_threadsafe(wake.set)

    # -- network thread ----------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        with self._lock:
            self._thread_errors[kind] += 1

    def _make_client(self) -> mqtt.Client:
        opts = self.options
        v5 = opts.protocol == "v5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else opts.clean_start,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.connect_timeout = opts.connect_timeout_s
        if opts.username is not None:
            password = opts.password.get_secret_value() if opts.password is not None else None
            client.username_pw_set(opts.username, password)
        if opts.tls is not None:
            tls = opts.tls
            context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if tls.cert_file is not None and tls.key_file is not None:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
            context.check_hostname = tls.verify_hostname
            context.verify_mode = ssl.CERT_REQUIRED
            client.tls_set_context(context)
            client.tls_insecure_set(not tls.verify_hostname)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties | None:
        if self.options.protocol != "v5":
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if self.options.clean_start else self.options.session_expiry_s
        # A hard memory ceiling far above max_payload_bytes: what lies between the two reaches _on_message and is
        # counted too_large; only what lies beyond is dropped by the broker without our seeing it.
        props.MaximumPacketSize = self.options.max_packet_bytes
        return props

    def _backoff(self) -> float:
        delay = reconnect_delay(self._attempt, self.options.reconnect_min_s, self.options.reconnect_max_s)
        self._attempt += 1
        return delay

    def _network_main(self) -> None:
        try:
            self._network_loop()
        except Exception as exc:  # a bug, not an I/O error: the thread must not vanish silently
            self._count("internal")
            self.context.log.exception("MQTT network thread failed", extra={"source": self.name, "error": repr(exc)})
            self.status.up = False

    def _network_loop(self) -> None:
        opts = self.options
        client: mqtt.Client | None = None
        while not self._stop.is_set():
            try:
                client = self._make_client()
            except (OSError, ValueError) as exc:  # unreadable key, bad CA file
                self._count("tls_config")
                self._log_once("tls_config", "MQTT TLS settings unusable", source=self.name, error=str(exc))
                self._stop.wait(self._backoff())
                continue
            try:
                kwargs: dict[str, Any] = {"keepalive": opts.keepalive_s, "properties": self._connect_properties()}
                if opts.protocol == "v5":
                    kwargs["clean_start"] = opts.clean_start
                self._reader = None
                client.connect(opts.host, opts.port, **kwargs)
            except (OSError, ValueError) as exc:
                self._cannot_connect("tls" if isinstance(exc, ssl.SSLError) else "connect", exc)
                with contextlib.suppress(Exception):
                    client._sock_close()  # release the half-open socket now
                self._stop.wait(self._backoff())
                continue
            self._connack = False
            reader = self._reader
            self.read_ahead = reader is not None
            while not self._stop.is_set() and self._pump(client, reader) == MQTTErrorCode.MQTT_ERR_SUCCESS:
                pass
            if self._stop.is_set():
                break
            if not self._connack:
                self._no_connack(reader)
            self._mark_down()
            self._stop.wait(self._backoff())
        if client is not None:
            self._stopping = True
            with contextlib.suppress(Exception):
                if client.is_connected():
                    client.disconnect()  # a normal DISCONNECT: the broker keeps the session (session expiry)
                    deadline = time.monotonic() + 1.0
                    while client.is_connected() and time.monotonic() < deadline:
                        client.loop(timeout=0.05)
            with contextlib.suppress(Exception):
                client._sock_close()
        self._mark_down()

    def _cannot_connect(self, kind: str, error: Exception) -> None:
        """Count a failed connection by kind and log it once per kind and exception type."""
        self._count(kind)
        self._log_once(
            f"{kind}:{type(error).__name__}",
            "cannot connect to the MQTT broker",
            source=self.name,
            broker=f"{self.options.host}:{self.options.port}",
            error=str(error),
        )

    def _no_connack(self, reader: ReadAhead | None) -> None:
        """The connection ended before a CONNACK: a TLS refusal, or a broker that took the TCP connection and hung."""
        error = reader.error if reader is not None else None
        if isinstance(error, ssl.SSLError):  # TLS 1.3: the broker rejects our certificate after the handshake
            self._cannot_connect("tls", error)
            return
        self._count("no_connack")
        self._log_once("no_connack", "the MQTT broker did not answer CONNECT", source=self.name)

    @staticmethod
    def _read_ahead(client: mqtt.Client) -> ReadAhead | None:
        """Put a read-ahead buffer under paho's connected socket (paho keeps it in ``_sock``; see readahead.py).

        Done when paho has opened the socket (and made the TLS handshake), before CONNECT is sent and anything
        is read, so no byte can be in the wrong place, and a failure to send CONNECT is seen with its cause.
        Returns None (paho reads its own socket, only slower) if a paho version keeps its socket elsewhere.
        """
        sock = getattr(client, "_sock", None)
        if sock is None or not hasattr(sock, "recv"):
            return None
        reader = ReadAhead(sock)
        client._sock = reader
        return reader

    @staticmethod
    def _pump(client: mqtt.Client, reader: ReadAhead | None) -> MQTTErrorCode:
        """One ``loop`` (select, read, write, keepalive), then the packets already read ahead, up to READ_BURST."""
        rc = client.loop(timeout=0.2)
        for _ in range(READ_BURST):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or reader is None or client._sock is not reader:
                break
            if not reader.pending():
                break
            rc = client.loop_read()
        return rc

    def _mark_down(self) -> None:
        self.subscribed.clear()
        if self.status.up:
            self.status.up = False
            with self._lock:
                self._went_down += 1
            self._wake_up()

    # -- paho callbacks (network thread) -----------------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._reader = self._read_ahead(client)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connack = True
        if reason_code.is_failure:
            kind = "refused_" + _slug(reason_code)
            self._count(kind)
            self._log_once(kind, "the MQTT broker refused the connection", source=self.name, reason=str(reason_code))
            return
        self._attempt = 0
        self.connections += 1
        if self._connected_once:
            self.status.reconnects += 1
        self._connected_once = True
        self.status.up = True
        opts = self.options
        if opts.protocol == "v5":
            sub_opts = SubscribeOptions(
                qos=opts.qos, noLocal=True, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            )
            subscriptions: list[tuple[str, Any]] = [(t.filter, sub_opts) for t in opts.topics]
        else:
            subscriptions = [(t.filter, opts.qos) for t in opts.topics]
        rc, _mid = client.subscribe(subscriptions)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._count("subscribe")
            self._log_once("subscribe", "MQTT subscribe failed", source=self.name, rc=str(rc))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [
            (t.filter, str(rc)) for t, rc in zip(self.options.topics, reason_codes, strict=False) if rc.is_failure
        ]
        if refused:
            self._count("subscribe_refused")
            self._log_once(
                "subscribe_refused", "the MQTT broker refused subscriptions", source=self.name, refused=refused
            )
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._stopping or not self.status.up:  # a refused or unanswered CONNECT is counted elsewhere
            return
        self._count("connection_lost")
        self._log_once(
            "disconnect:" + _slug(reason_code), "MQTT connection lost", source=self.name, reason=str(reason_code)
        )
        self._mark_down()

    def _make_room(self, size: int) -> None:
        """Drop the oldest messages (counted) until one more of ``size`` bytes fits."""
        buf = self._buf
        while len(buf) >= self._queue_max or (
            buf and self._bytes_in - self._bytes_out - self._bytes_dropped + size > self._queue_max_bytes
        ):
            try:
                old = buf.popleft()
            except IndexError:  # the asyncio side took the rest meanwhile
                return
            self._overflowed += 1
            self._bytes_dropped += len(old[1])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Hand off only: no decoding, no pipeline work, no lock, so paho's keepalive never waits on us."""
        recv_ts = time.time()
        payload = message.payload
        size = len(payload)
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self._count("bad_topic")
            self._log_once("bad_topic", "MQTT topic name is not UTF-8", source=self.name)
            return
        if size > self._max_payload:  # never hold a huge payload
            self._count("too_large")
            self._log_once(
                "too_large", "MQTT payload too large, dropped", source=self.name, topic=topic[:200], size=size
            )
            return
        buf = self._buf
        if len(buf) >= self._queue_max or self._bytes_in - self._bytes_out - self._bytes_dropped + size > (
            self._queue_max_bytes
        ):
            self._make_room(size)
        buf.append((topic, payload, message.dup, recv_ts))
        self._bytes_in += size
        if len(buf) == self._wake_at:  # once per filling; a wake missed in a race is made up by the 50 ms poll
            self._wake_up()
