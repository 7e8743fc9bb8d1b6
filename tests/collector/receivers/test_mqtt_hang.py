"""A hung broker: mosquitto SIGSTOPped keeps its TCP connections open but answers nothing.

The only thing that notices is MQTT's keepalive: paho sends PINGREQ after keepalive_s of silence and
gives up after another keepalive_s without an answer. So the source must be down within 2x keepalive_s,
counted, with its tags BAD; while the broker stays frozen the reconnects (the kernel still accepts the
TCP connection, CONNECT goes unanswered) are spaced by keepalive and backoff; after SIGCONT the session
comes back by itself with its subscriptions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest

from collector.samples import Quality
from tests.collector.receivers import conftest_mqtt
from tests.collector.receivers.conftest_mqtt import (
    OIL_INDEX,
    MqttBroker,
    RawPublisher,
    Running,
    make_receiver,
    options,
    run,
)

BrokerFactory = Callable[..., MqttBroker]
broker_factory = conftest_mqtt.broker_factory

KEEPALIVE_S = 2
FROZEN_S = 6.0


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_sigstopped_broker_is_down_within_the_keepalive_and_recovers_after_sigcont(
    broker_factory: BrokerFactory, protocol: str
) -> None:
    broker = broker_factory()
    assert broker.proc is not None
    pid = broker.proc.pid
    opts = options(broker, protocol=protocol, keepalive_s=KEEPALIVE_S, reconnect_min_s=0.2, reconnect_max_s=1.0)
    receiver = make_receiver(opts)
    level = OIL_INDEX["TK101.LEVEL"]

    def level_values(rx: Running, quality: Quality) -> list[float]:
        return [v for tag, v, _ts, q in rx.samples() if tag == level and q == quality]

    async def scenario() -> None:
        rx = Running(receiver)
        publisher = RawPublisher(broker)
        frozen = False
        try:
            await rx.subscribed()
            publisher.publish("plantwatch/oil/tank_farm/TK101.LEVEL", '{"value": 1.5, "ts": 1800000000}')
            await rx.until(lambda: 1.5 in level_values(rx, Quality.GOOD), 10, "a value before the freeze")
            publisher.close()

            os.kill(pid, signal.SIGSTOP)
            frozen = True
            stopped = time.monotonic()
            # Down is set on paho's thread, the error count reaches the status at the next hand-off: wait for both.
            await rx.until(
                lambda: not receiver.status.up and receiver.status.errors["connection_lost"] >= 1,
                4 * KEEPALIVE_S,
                "down, and counted",
            )
            took = time.monotonic() - stopped
            assert took <= 2 * KEEPALIVE_S + 1.0, f"hang noticed after {took:.1f} s"
            assert receiver.status.errors["connection_lost"] == 1, receiver.status.errors
            await rx.until(lambda: bool(level_values(rx, Quality.BAD)), 5, "tags BAD")

            # The broker stays frozen a while: the source stays down, and its reconnects are spaced.
            attempts_before = receiver.status.errors["no_connack"] + receiver.status.errors["connect"]
            deadline = time.monotonic() + FROZEN_S
            while time.monotonic() < deadline:
                assert not receiver.status.up
                await asyncio.sleep(0.2)
            attempts = receiver.status.errors["no_connack"] + receiver.status.errors["connect"] - attempts_before
            # each attempt waits out one keepalive for its CONNACK, plus the backoff: a few, never hundreds
            assert 1 <= attempts <= FROZEN_S / KEEPALIVE_S + 2, receiver.status.errors

            os.kill(pid, signal.SIGCONT)
            frozen = False
            resumed = time.monotonic()
            await rx.subscribed(timeout=KEEPALIVE_S * 2 + 5)
            assert receiver.status.up and receiver.status.reconnects >= 1
            assert time.monotonic() - resumed <= KEEPALIVE_S + 4.0
            publisher = RawPublisher(broker)
            publisher.publish("plantwatch/oil/tank_farm/TK101.LEVEL", '{"value": 2.5, "ts": 1800000001}')
            await rx.until(lambda: 2.5 in level_values(rx, Quality.GOOD), 10, "a value after SIGCONT")
            publisher.close()
        finally:
            if frozen:
                os.kill(pid, signal.SIGCONT)
            await rx.stop()

    run(scenario, timeout=60)
