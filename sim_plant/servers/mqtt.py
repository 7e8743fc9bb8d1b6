"""Publishes one plant's tags to an MQTT broker, one JSON message per tag and publish (paho-mqtt 2.x).

Topic ``<prefix>/<plant>/<area>/<tag>`` (prefix ``plantwatch``), e.g.
``plantwatch/oil/tank_farm/TK101.LEVEL``; payload, UTF-8 JSON::

    {"value": 5.0013898, "ts": 1767225600.0, "quality": "good"}

``value`` is the float the plant published (a status tag is 0.0 or 1.0);
``ts`` is the ``ts`` given to ``publish`` as a JSON number, seconds since the
UNIX epoch (UTC) when the caller passes wall-clock time, unconverted and
unrounded; ``quality`` is ``"good"``, or ``"bad"`` with ``"value": null`` when
the value is NaN or infinite (JSON has no NaN). QoS is configurable (default
1), retain is always false.

The plant's topics are output only: this client never subscribes to anything,
so no message on any topic can change what the plant does. Network I/O runs in
paho's own thread (``loop_start``); ``publish`` only queues messages, so it
never blocks the asyncio loop on the network.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import threading
import time
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from sim_plant.catalog import TagSpec
from sim_plant.servers.base import PlantServer, WriteLog

TOPIC_PREFIX = "plantwatch"
_FORBIDDEN_IN_LEVEL = ("/", "+", "#", "\x00")


def topic_for(plant_name: str, spec: TagSpec, prefix: str = TOPIC_PREFIX) -> str:
    """The topic a tag is published on: ``<prefix>/<plant>/<area>/<tag>``."""
    return f"{prefix}/{plant_name}/{spec.area}/{spec.name}"


def payload_for(value: float, ts: float) -> bytes:
    """The JSON payload of one reading: NaN and inf become ``null`` with quality ``bad``."""
    if math.isfinite(value):
        doc: dict[str, Any] = {"value": value, "ts": ts, "quality": "good"}
    else:
        doc = {"value": None, "ts": ts, "quality": "bad"}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


class MqttPlantServer(PlantServer):
    """Connects to a broker and publishes every tag on each ``publish`` call; subscribes to nothing."""

    protocol = "mqtt"

    def __init__(
        self,
        plant_name: str,
        tags: tuple[TagSpec, ...],
        writes: WriteLog,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        qos: int = 1,
        topic_prefix: str = TOPIC_PREFIX,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        max_queued: int = 100_000,
    ) -> None:
        super().__init__(plant_name, tags, writes)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        for level in (plant_name, *topic_prefix.split("/"), *(t.area for t in tags)):
            if not level or any(c in level for c in _FORBIDDEN_IN_LEVEL):
                raise ValueError(f"{level!r} cannot be a level of an MQTT topic name")
        if password is not None and username is None:
            raise ValueError("a password needs a username")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.client_id = client_id or f"plantwatch-sim-{plant_name}-{os.getpid()}-{secrets.token_hex(3)}"
        self.qos = qos
        self.topic_prefix = topic_prefix
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.max_queued = max_queued
        self.topics = [topic_for(plant_name, spec, topic_prefix) for spec in tags]
        self.published = 0  # messages handed to paho
        self.not_queued = 0  # messages paho refused (not connected at QoS 0, queue full)
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._last_infos: list[mqtt.MQTTMessageInfo] = []
        self._refused: str | None = None

    # -- PlantServer ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"mqtt://{self.host}:{self.port}/{self.topic_prefix}/{self.plant_name}/#"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Connect (in paho's thread) and return once the broker has accepted the connection."""
        if self._client is not None:
            return
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Bounded memory when the simulator outruns the broker: past this, QoS 1/2 messages are refused and counted.
        client.max_queued_messages_set(self.max_queued)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._connected.clear()
        self._refused = None
        client.connect_async(self.host, self.port, keepalive=self.keepalive)
        client.loop_start()
        self._client = client
        deadline = time.monotonic() + self.connect_timeout
        while not self._connected.is_set():
            if self._refused is not None:
                reason = self._refused
                await self.stop()
                raise ConnectionRefusedError(f"MQTT broker {self.host}:{self.port} refused the connection: {reason}")
            if time.monotonic() > deadline:
                await self.stop()
                where = f"{self.host}:{self.port}"
                raise TimeoutError(f"no connection to the MQTT broker {where} within {self.connect_timeout} s")
            await asyncio.sleep(0.02)

    async def publish(self, ts: float, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(self.tags),):
            raise ValueError(f"expected {len(self.tags)} values for {self.plant_name}, got shape {values.shape}")
        client = self._client
        if client is None:
            raise RuntimeError(f"MQTT publisher for {self.plant_name} is not started")
        ts = float(ts)
        infos = []
        for topic, value in zip(self.topics, values.tolist(), strict=True):
            info = client.publish(topic, payload_for(value, ts), qos=self.qos, retain=False)
            # Offline, paho drops a QoS 0 message (rc NO_CONN) but keeps a QoS 1/2 one for the reconnection.
            kept = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.qos > 0
            )
            if kept:
                self.published += 1
            else:
                self.not_queued += 1
            infos.append(info)
        self._last_infos = infos

    async def publish_tags(self, ts: float, values: dict[int, float]) -> None:
        """Publish some tags only (by catalog index): what a foreign client forging the plant's topics sends."""
        client = self._client
        if client is None:
            raise RuntimeError(f"MQTT publisher for {self.plant_name} is not started")
        infos = [client.publish(self.topics[i], payload_for(v, float(ts)), qos=self.qos) for i, v in values.items()]
        self.published += len(infos)
        self._last_infos = infos

    async def pause(self) -> None:
        """The publisher goes silent (the simulation skips it); the connection stays, as a hung gateway's does."""

    async def resume(self) -> None:
        """Publishing resumes with the next scan."""

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the messages of the last ``publish`` have left (QoS 0) or been acknowledged (QoS 1, 2)."""
        deadline = time.monotonic() + timeout
        while not all(info.is_published() for info in self._last_infos):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)  # joins paho's thread; keep the event loop free meanwhile
        self._connected.clear()

    # -- paho callbacks (paho's thread) -----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._connected.clear()
        else:
            self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()


__all__ = ["TOPIC_PREFIX", "MqttPlantServer", "payload_for", "topic_for"]
