"""Helpers for the MQTT receiver tests: a restartable mosquitto on a fixed port, receivers run as tasks.

Not a conftest.py (another receiver's tests share this folder): the tests import
what they need from here. Brokers are real mosquitto processes on 127.0.0.1,
stopped by their PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.queue import SampleQueue
from collector.receivers.base import ReceiverContext
from collector.receivers.mqtt import MqttOptions, MqttReceiver
from collector.samples import SampleBatch
from sim_plant.plants import OilPlant
from tests.conftest import free_port
from tests.sim_plant.servers.conftest import require, wait_for_port

OIL_TAGS = OilPlant.tag_names()
OIL_INDEX = {name: i for i, name in enumerate(OIL_TAGS)}


class MqttBroker:
    """mosquitto on 127.0.0.1 with a fixed port (kept across restarts), optional persistence, users and ACL."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        verbose: bool = False,
        extra: str = "",
        port: int | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.exe = require("mosquitto")
        self.workdir = workdir
        self.port = port or free_port()
        self.log_path = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {self.host}",
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_timestamp false",
            "connection_messages true",
            *(["log_type all"] if verbose else ["log_type error", "log_type warning", "log_type notice"]),
            "log_type information",
            "log_type subscribe",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "persistence_file mosquitto.db"]
        else:
            lines.append("persistence false")
        if users:
            passwd = require("mosquitto_passwd")
            password_file = workdir / "passwd"
            for i, (user, password) in enumerate(users.items()):
                args = [passwd, "-b", *(["-c"] if i == 0 else []), str(password_file), user, password]
                subprocess.run(args, check=True, capture_output=True, timeout=10)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            acl_file = workdir / "acl"
            acl_file.write_text(acl)
            lines.append(f"acl_file {acl_file}")
        lines.append(extra)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.start()

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.config)], stdout=self._log, stderr=self._log)
        try:
            wait_for_port(self.host, self.port, 10.0, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"mosquitto did not start:\n{self.log()}") from None

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGTERM)  # mosquitto saves its persistence file on SIGTERM
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., MqttBroker]]:
    started: list[MqttBroker] = []

    def start(**kwargs: Any) -> MqttBroker:
        broker = MqttBroker(tmp_path / f"broker{len(started)}", **kwargs)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


def options(broker: MqttBroker, **overrides: Any) -> MqttOptions:
    doc: dict[str, Any] = {
        "name": "oil-mqtt",
        "kind": "mqtt",
        "host": broker.host,
        "port": broker.port,
        "client_id": f"pw-test-{time.monotonic_ns()}",
        "topics": [{"filter": "plantwatch/oil/#"}],
        "tags": [{"name": name} for name in OIL_TAGS],
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
    }
    doc.update(overrides)
    return MqttOptions.model_validate(doc)


def make_receiver(opts: MqttOptions, capacity: int = 1_000_000) -> MqttReceiver:
    index = {tag.source_key: OIL_INDEX.get(tag.name, i) for i, tag in enumerate(opts.tags)}
    context = ReceiverContext(
        index=0, tag_index=index, queue=SampleQueue(capacity), tick_s=1.0, log=logging.getLogger("test.mqtt")
    )
    return MqttReceiver(opts, context)


class Running:
    """A receiver's run() as a task; collects what it queues."""

    def __init__(self, receiver: MqttReceiver) -> None:
        self.receiver = receiver
        self.task = asyncio.create_task(receiver.run())
        self.batches: list[SampleBatch] = []

    def collect(self) -> list[SampleBatch]:
        self.batches.extend(self.receiver.context.queue.drain())
        return self.batches

    def samples(self) -> list[tuple[int, float, float, int]]:
        """(tag, value, ts, quality) of every sample so far."""
        out = []
        for b in self.collect():
            out += list(zip(b.tag.tolist(), b.value.tolist(), b.ts.tolist(), b.quality.tolist(), strict=True))
        return out

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.task.done():
                raise AssertionError(f"receiver ended: {self.task!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not met in {timeout} s; status {self.receiver.status}")
            await asyncio.sleep(0.02)

    async def subscribed(self, timeout: float = 10.0) -> None:
        await self.until(self.receiver.subscribed.is_set, timeout, "SUBACK")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 15)
        assert self.task.cancelled(), f"run() ended other than by cancellation: {self.task!r}"


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout))  # type: ignore[arg-type]


class RawPublisher:
    """A plain paho publisher for hand-made payloads (the simulator only publishes well-formed ones)."""

    def __init__(self, broker: MqttBroker, username: str | None = None, password: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-pub-{time.monotonic_ns()}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        assert info.is_published(), f"not published: {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def values_of(samples: list[tuple[int, float, float, int]]) -> dict[tuple[int, float], tuple[float, int]]:
    return {(tag, ts): (value, q) for tag, value, ts, q in samples}


__all__ = [
    "OIL_INDEX",
    "OIL_TAGS",
    "MqttBroker",
    "RawPublisher",
    "Running",
    "broker_factory",
    "make_receiver",
    "options",
    "run",
    "values_of",
]
