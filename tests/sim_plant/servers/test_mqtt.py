"""The MQTT publisher against a real mosquitto: mosquitto_sub and paho subscribers get what was published."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sim_plant.plants import PLANTS, OilPlant
from sim_plant.servers.base import WriteLog
from sim_plant.servers.mqtt import MqttPlantServer, payload_for, topic_for
from tests.conftest import free_port
from tests.sim_plant.servers.conftest import Broker, require


def plant_values(name: str, steps: int = 20, seed: int = 5) -> np.ndarray:
    plant = PLANTS[name](seed)
    plant.run(steps)
    return plant.measured()


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 60))  # type: ignore[arg-type]


def publisher(name: str, broker: Broker, **options: Any) -> MqttPlantServer:
    return MqttPlantServer(name, PLANTS[name].TAGS, WriteLog(), host=broker.host, port=broker.port, **options)


def expected(name: str, values: np.ndarray, ts: float) -> dict[str, dict[str, Any]]:
    """topic -> the payload document the subscriber must receive."""
    out = {}
    for spec, value in zip(PLANTS[name].TAGS, values.tolist(), strict=True):
        if math.isfinite(value):
            doc = {"value": value, "ts": ts, "quality": "good"}
        else:
            doc = {"value": None, "ts": ts, "quality": "bad"}
        out[f"plantwatch/{name}/{spec.area}/{spec.name}"] = doc
    return out


class PahoSubscriber:
    """A paho client subscribed to a filter, collecting (topic, payload, qos, retain) in its own thread."""

    def __init__(self, broker: Broker, topic_filter: str, qos: int = 2) -> None:
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(topic_filter, qos=qos)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the paho subscriber did not get its SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload, message.qos, bool(message.retain)))

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes, int, bool]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{len(self.messages)} of {count} messages arrived")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- format ------------------------------------------------------------------------------------


def test_topics_and_payloads() -> None:
    server = MqttPlantServer("oil", OilPlant.TAGS, WriteLog())
    assert server.topics[0] == "plantwatch/oil/tank_farm/TK101.LEVEL"
    assert server.topics == [topic_for("oil", t) for t in OilPlant.TAGS]
    assert server.endpoint == "mqtt://127.0.0.1:1883/plantwatch/oil/#"
    assert json.loads(payload_for(5.25, 1767225600.5)) == {"value": 5.25, "ts": 1767225600.5, "quality": "good"}
    for bad in (math.nan, math.inf, -math.inf):
        assert json.loads(payload_for(bad, 1.0)) == {"value": None, "ts": 1.0, "quality": "bad"}
    with pytest.raises(ValueError, match="qos"):
        MqttPlantServer("oil", OilPlant.TAGS, WriteLog(), qos=3)
    with pytest.raises(ValueError, match="topic"):
        MqttPlantServer("oil/x", OilPlant.TAGS, WriteLog())


# -- against mosquitto ---------------------------------------------------------------------------


def test_mosquitto_sub_receives_the_published_values(mosquitto: Broker) -> None:
    """``mosquitto_sub -t 'plantwatch/oil/#' -C N -v`` gets one parseable JSON document per tag, as published."""
    exe = require("mosquitto_sub")
    n = len(OilPlant.TAGS)

    async def scenario() -> None:
        values = plant_values("oil")
        values[OilPlant.tag_names().index("FT101.FLOW_IN")] = np.nan  # a bad reading on the way
        ts = 1767225600.25
        server = publisher("oil", mosquitto)
        await server.start()
        sub_id = f"mosquitto-sub-{time.monotonic_ns()}"
        sub = await asyncio.create_subprocess_exec(
            *[exe, "-h", mosquitto.host, "-p", str(mosquitto.port), "-i", sub_id],
            *["-t", "plantwatch/oil/#", "-C", str(n), "-v", "-q", "1"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            # The broker logs "<client id> <qos> <filter>" once the subscription is in place.
            await asyncio.to_thread(mosquitto.wait_for_log, rf"^\d+: {re.escape(sub_id)} 1 plantwatch/oil/#$")
            await server.publish(ts, values)
            assert await server.flush()
            out, err = await asyncio.wait_for(sub.communicate(), 15)
        finally:
            if sub.returncode is None:
                sub.kill()
                await sub.wait()
            await server.stop()
        assert sub.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert len(lines) == n, out.decode()
        want = expected("oil", values, ts)
        got = {}
        for line in lines:
            topic, payload = line.split(" ", 1)
            got[topic] = json.loads(payload)
        assert got == want
        assert got["plantwatch/oil/tank_farm/FT101.FLOW_IN"] == {"value": None, "ts": ts, "quality": "bad"}
        assert [line.split(" ", 1)[0] for line in lines] == server.topics  # in catalog order

    run(scenario)


@pytest.mark.parametrize("name", sorted(PLANTS))
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_subscriber_receives_the_published_values(mosquitto: Broker, name: str, qos: int) -> None:
    async def scenario() -> None:
        sub = PahoSubscriber(mosquitto, f"plantwatch/{name}/#")
        server = publisher(name, mosquitto, qos=qos)
        try:
            await server.start()
            assert server.connected
            first, second = plant_values(name, steps=5), plant_values(name, steps=50)
            second[0] = np.nan
            await server.publish(1000.0, first)
            await server.publish(1001.0, second)
            assert await server.flush()
            n = len(PLANTS[name].TAGS)
            messages = await sub.wait_for(2 * n)
        finally:
            await server.stop()
            sub.close()
        assert len(messages) == 2 * n
        assert server.published == 2 * n and server.not_queued == 0
        assert {(m[2], m[3]) for m in messages} == {(qos, False)}  # QoS as configured, never retained
        received = [(topic, json.loads(payload)) for topic, payload, _, _ in messages]
        want = list(expected(name, first, 1000.0).items()) + list(expected(name, second, 1001.0).items())
        assert received == want
        assert received[n][1]["quality"] == "bad" and received[n][1]["value"] is None

    run(scenario)


def test_the_publisher_never_subscribes(mosquitto: Broker) -> None:
    """A forged message on the plant's topics reaches nobody in the publisher: it holds no subscription at all."""
    writes = WriteLog()

    async def scenario() -> None:
        server = MqttPlantServer(
            "oil", OilPlant.TAGS, writes, host=mosquitto.host, port=mosquitto.port, client_id="plant-oil-under-test"
        )
        await server.start()
        try:
            await asyncio.to_thread(mosquitto.wait_for_log, r"as plant-oil-under-test ")
            forger = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="forger")
            forger.connect(mosquitto.host, mosquitto.port)
            forger.loop_start()
            info = forger.publish("plantwatch/oil/tank_farm/LIC101.SP", b'{"value": 9.0}', qos=1)
            info.wait_for_publish(5)
            forger.publish("plantwatch/oil/tank_farm/LIC101.SP/set", b"9.0", qos=1).wait_for_publish(5)
            forger.disconnect()
            forger.loop_stop()
            await server.publish(0.0, plant_values("oil"))
            assert await server.flush()
        finally:
            await server.stop()

    run(scenario)
    log = mosquitto.log()
    assert "as plant-oil-under-test " in log
    assert not re.search(r"^\d+: plant-oil-under-test \d ", log, re.MULTILINE), log  # no SUBSCRIBE line
    assert len(writes) == 0


def test_username_and_password(mosquitto_factory: Callable[..., Broker]) -> None:
    broker = mosquitto_factory(users={"plant": "s3cret"})

    async def scenario() -> None:
        anonymous = publisher("chemical", broker, connect_timeout=5)
        with pytest.raises(ConnectionRefusedError, match="refused"):
            await anonymous.start()
        wrong = publisher("chemical", broker, username="plant", password="nope", connect_timeout=5)
        with pytest.raises(ConnectionRefusedError):
            await wrong.start()
        server = publisher("chemical", broker, username="plant", password="s3cret", client_id="chem-auth")
        await server.start()
        try:
            await server.publish(0.0, plant_values("chemical"))
            assert await server.flush()
        finally:
            await server.stop()

    run(scenario)
    assert re.search(r"New client connected from .* as chem-auth .*u'plant'", broker.log()), broker.log()


def test_no_broker_is_a_clear_timeout() -> None:
    async def scenario() -> None:
        server = MqttPlantServer("oil", OilPlant.TAGS, WriteLog(), port=free_port(), connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="MQTT broker"):
            await server.start()
        assert time.monotonic() - started < 5
        await server.stop()
        with pytest.raises(RuntimeError, match="not started"):
            await server.publish(0.0, plant_values("oil"))

    run(scenario)


def test_publish_does_not_block_the_event_loop_on_a_stalled_broker(mosquitto_factory: Callable[..., Broker]) -> None:
    """With the broker frozen (SIGSTOP), publish only queues; once it thaws every message arrives."""
    broker = mosquitto_factory()
    rounds = 50

    async def scenario() -> None:
        sub = PahoSubscriber(broker, "plantwatch/radiological/#")
        server = publisher("radiological", broker)
        await server.start()
        values = plant_values("radiological")
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        # What is timed is the publisher, not the test session: a gen-2 collection of pytest's heap can pause
        # the whole process for hundreds of ms on a busy machine. Collect now; no collection in the window.
        gc.collect()
        gc.disable()
        try:
            broker.pause()
            slowest = 0.0
            for k in range(rounds):
                t0 = time.monotonic()
                await server.publish(float(k), values)
                slowest = max(slowest, time.monotonic() - t0)
                await asyncio.sleep(0.002)
            assert slowest < 0.1, f"publish took {slowest:.3f} s with the broker stalled"
            gaps = np.diff(ticks)
            assert gaps.max() < 0.25, f"the event loop stalled for {gaps.max():.3f} s"
            assert not await server.flush(timeout=0.2)  # nothing acknowledged while the broker sleeps
            broker.resume()
            assert await server.flush(timeout=15)
            n = len(PLANTS["radiological"].TAGS)
            messages = await sub.wait_for(rounds * n, timeout=15)
            assert len(messages) == rounds * n
        finally:
            gc.enable()
            broker.resume()
            tick_task.cancel()
            await server.stop()
            sub.close()

    run(scenario)
