"""The MQTT source: subscribes to topic filters on a broker and turns messages into samples (paho-mqtt 2.x).

Two threads, one rule: paho's network runs in a thread of its own (the
"network thread", which also runs paho's callbacks), and that thread does
nothing but hand raw messages to a bounded buffer (a deque under a lock,
bounded in messages and in payload bytes, overflow dropping the oldest and
counted). The asyncio side swaps the buffer out, decodes, deduplicates and
pushes one ``SampleBatch`` per burst. A slow pipeline therefore never delays
paho's keepalive, and a flood never grows memory past the bounds.

The network thread owns the connection: connect, run paho's ``loop``, and on
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
from typing import Any, ClassVar

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.logs import LogOnce
from collector.receivers.base import Receiver, ReceiverContext, reconnect_delay
from collector.receivers.mqtt.decode import (
    FastReader,
    PayloadError,
    decode,
    fast_reader,
    filter_matcher,
    topic_key,
)
from collector.receivers.mqtt.options import MAX_PACKET, MqttOptions, TopicOptions
from collector.samples import Quality, SampleBatch

DEDUP_WINDOW = 8  # source timestamps remembered per tag to drop re-deliveries
ROUTE_CACHE_MAX = 65_536  # topic -> route entries before the cache starts over
POLL_S = 0.05  # the asyncio side takes the buffer this often (latency <= 50 ms, a tick is ~1 s)
WAKE_AT = 1000  # ... or as soon as this many messages (or half of queue_max) wait, so bursts come in big batches
PACKET_OVERHEAD = 65_536 + 1024  # topic and properties on top of the payload, for v5 Maximum Packet Size


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
        self._index = {tag.source_key: context.tag_index[tag.source_key] for tag in options.tags}
        self._all_tags = np.array(sorted(set(self._index.values())), dtype=np.int32)
        self._log_once = LogOnce(context.log)
        # -- shared between the network thread and the asyncio side, under _lock --
        self._lock = threading.Lock()
        self._buf: deque[tuple[str, bytes, bool, float]] = deque()
        self._buf_bytes = 0
        self._thread_errors: Counter[str] = Counter()
        self._went_down = 0  # disconnections not yet turned into BAD samples
        self._wake_pending = False
        self._wake_at = max(1, min(WAKE_AT, options.queue_max // 2))
        self._queue_max, self._queue_max_bytes = options.queue_max, options.queue_max_bytes
        self._max_payload = options.max_payload_bytes
        # -- network thread only --
        self._stop = threading.Event()
        self._connected_once = False
        self._attempt = 0
        self._connack = False  # a CONNACK (accepting or refusing) came for the current attempt
        self._stopping = False
        # -- asyncio side only --
        self._routes: dict[str, TopicOptions | None] = {}
        self._matchers = [(route, filter_matcher(route.filter)) for route in options.topics]
        # topic -> (frame column, reader of its plain messages); None: every message of it takes the general path
        self._fast_topics: dict[str, tuple[int, FastReader] | None] = {}
        self._readers: dict[int, FastReader | None] = {}  # by id of the route
        self._recent_ts: dict[int, list[float]] = {}
        self._last_payload: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        # -- for tests and the bench --
        self.subscribed = threading.Event()  # set at each SUBACK, cleared at each disconnection
        self.buffered_high_water = 0
        self.buffered_bytes_high_water = 0
        self.connections = 0

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
        with self._lock:
            items, self._buf = self._buf, deque()
            held, self._buf_bytes = self._buf_bytes, 0
            errors, self._thread_errors = self._thread_errors, Counter()
            went_down, self._went_down = self._went_down, 0
            self._wake_pending = False
        # The buffer only grows between two swaps (trimmed at its bounds): its peaks are seen here.
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

    def _fast_topic(self, topic: str) -> tuple[int, FastReader] | None:
        """The column and fast reader of ``topic`` when its tag comes from the topic and is known; else None."""
        route = self._route(topic)
        entry: tuple[int, FastReader] | None = None
        if route is not None:
            key = id(route)
            if key not in self._readers:
                self._readers[key] = fast_reader(route, self.options.max_payload_bytes)
            reader = self._readers[key]
            if reader is not None:
                try:
                    tag = self._index.get(topic_key(topic, route.segment))
                except PayloadError:
                    tag = None
                if tag is not None:
                    entry = (tag, reader)
        if len(self._fast_topics) >= ROUTE_CACHE_MAX:
            self._fast_topics.clear()
        self._fast_topics[topic] = entry
        return entry

    def _decode(self, items: deque[tuple[str, bytes, bool, float]], now: float) -> None:
        """One batch from a burst of messages: plain ones by the fast reader, the rest by ``decode``."""
        tags: list[int] = []
        values: list[float] = []
        stamps: list[float] = []
        recvs: list[float] = []
        qualities: list[int] = []
        errors: Counter[str] = Counter()
        max_bytes = self.options.max_payload_bytes
        index = self._index
        fast_topics = self._fast_topics
        recent_ts = self._recent_ts
        for topic, payload, dup, recv_ts in items:
            fast = fast_topics.get(topic, False)
            if fast is False:
                fast = self._fast_topic(topic)
            if fast is not None:
                tag, reader = fast
                sample = reader(payload)
                if sample is not None:
                    value, ts, quality = sample
                    if ts is None:
                        if self._is_duplicate(tag, ts, topic, payload, dup):
                            errors["duplicate"] += 1
                            continue
                        ts = recv_ts
                    else:  # _is_duplicate inlined: this loop runs once per message
                        recent = recent_ts.get(tag)
                        if recent is None:
                            recent_ts[tag] = [ts]
                        elif ts in recent:
                            errors["duplicate"] += 1
                            continue
                        else:
                            recent.append(ts)
                            if len(recent) > DEDUP_WINDOW:
                                del recent[0]
                    tags.append(tag)
                    values.append(value)
                    stamps.append(ts)
                    recvs.append(recv_ts)
                    qualities.append(quality)
                    continue
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
                    exc.reason, "malformed MQTT message dropped", source=self.name, topic=topic[:200], error=str(exc)
                )
                continue
            if self._is_duplicate(tag, d.ts, topic, payload, dup):
                errors["duplicate"] += 1
                continue
            tags.append(tag)
            values.append(d.value)
            stamps.append(recv_ts if d.ts is None else d.ts)
            recvs.append(recv_ts)
            qualities.append(d.quality)
        if errors:
            self.status.errors.update(errors)
        if not tags:
            return
        batch = SampleBatch(
            source=self.context.index,
            tag=np.array(tags, dtype=np.int32),
            value=np.array(values, dtype=np.float64),
            ts=np.array(stamps, dtype=np.float64),
            recv_ts=np.array(recvs, dtype=np.float64),
            quality=np.array(qualities, dtype=np.uint8),
        )
        self.context.queue.put_nowait(batch)
        self.status.samples += len(tags)
        self.status.last_sample_time = now

    def _is_duplicate(self, tag: int, ts: float | None, topic: str, payload: bytes, dup: bool) -> bool:
        """A re-delivery: the same source timestamp for the tag again, or (no timestamp) a DUP repeat."""
        if ts is not None:
            recent = self._recent_ts.get(tag)
            if recent is None:
                self._recent_ts[tag] = [ts]
                return False
            if ts in recent:
                return True
            recent.append(ts)
            if len(recent) > DEDUP_WINDOW:
                del recent[0]
            return False
        digest = hash(payload)
        last = self._last_payload.get(topic)
        if len(self._last_payload) >= ROUTE_CACHE_MAX:
            self._last_payload.clear()
        self._last_payload[topic] = digest
        return dup and last == digest

    def _wake_up(self) -> None:
        """From the network thread: make the asyncio side take the buffer now (at most once per swap)."""
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
        # Bounded memory: the broker drops, rather than sends, messages far above max_payload_bytes.
        props.MaximumPacketSize = min(MAX_PACKET, self.options.max_payload_bytes + PACKET_OVERHEAD)
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
                client.connect(opts.host, opts.port, **kwargs)
            except (OSError, ValueError) as exc:
                kind = "tls" if isinstance(exc, ssl.SSLError) else "connect"
                self._count(kind)
                self._log_once(
                    f"{kind}:{type(exc).__name__}",
                    "cannot connect to the MQTT broker",
                    source=self.name,
                    broker=f"{opts.host}:{opts.port}",
                    error=str(exc),
                )
                with contextlib.suppress(Exception):
                    client._sock_close()  # release the half-open socket now
                self._stop.wait(self._backoff())
                continue
            self._connack = False
            while not self._stop.is_set():
                if client.loop(timeout=0.2) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            if self._stop.is_set():
                break
            if not self._connack:  # the broker took the TCP connection but never answered CONNECT
                self._count("no_connack")
                self._log_once("no_connack", "the MQTT broker did not answer CONNECT", source=self.name)
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

    def _mark_down(self) -> None:
        self.subscribed.clear()
        if self.status.up:
            self.status.up = False
            with self._lock:
                self._went_down += 1
            self._wake_up()

    # -- paho callbacks (network thread) -----------------------------------------------------------

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

    def _make_room(self, buf: deque[tuple[str, bytes, bool, float]], held: int) -> int:
        """Drop the oldest messages (counted) until one more fits; the payload bytes held then. Lock held."""
        while buf and (len(buf) >= self._queue_max or held > self._queue_max_bytes):
            held -= len(buf.popleft()[1])
            self._thread_errors["overflow"] += 1
        return held

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Hand off only: no decoding, no pipeline work, so paho's keepalive never waits on us."""
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
        with self._lock:  # a handful of operations: this runs once per message, under paho's thread
            buf = self._buf
            held = self._buf_bytes + size
            if len(buf) >= self._queue_max or held > self._queue_max_bytes:
                held = self._make_room(buf, held)
            buf.append((topic, payload, message.dup, recv_ts))
            self._buf_bytes = held
            wake = len(buf) >= self._wake_at and not self._wake_pending
            if wake:
                self._wake_pending = True
        if wake:
            self._wake_up()
