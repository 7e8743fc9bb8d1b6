"""The MQTT source against real mosquitto brokers on 127.0.0.1, fed by the simulator's publisher."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from collector.samples import Quality
from sim_plant.plants import PLANTS, OilPlant
from sim_plant.servers.base import WriteLog
from sim_plant.servers.certs import make_tls_ca, make_tls_cert
from sim_plant.servers.mqtt import MqttPlantServer
from tests.collector.receivers import conftest_mqtt
from tests.collector.receivers.conftest_mqtt import (
    OIL_INDEX,
    OIL_TAGS,
    MqttBroker,
    RawPublisher,
    Running,
    make_receiver,
    options,
    run,
    values_of,
)
from tests.sim_plant.servers.conftest import require

BrokerFactory = Callable[..., MqttBroker]
broker_factory = conftest_mqtt.broker_factory  # the fixture, from the helper module (no shared conftest.py here)


def plant_values(steps: int = 20, seed: int = 5) -> np.ndarray:
    plant = PLANTS["oil"](seed)
    plant.run(steps)
    return plant.measured()


def sim(broker: MqttBroker, **kw) -> MqttPlantServer:
    return MqttPlantServer("oil", OilPlant.TAGS, WriteLog(), host=broker.host, port=broker.port, **kw)


def check_round(samples: list, values: np.ndarray, ts: float) -> None:
    got = values_of(samples)
    for name, value in zip(OIL_TAGS, values.tolist(), strict=True):
        key = (OIL_INDEX[name], ts)
        assert key in got, f"{name} @ {ts} missing"
        v, q = got[key]
        if math.isfinite(value):
            assert (v, q) == (value, Quality.GOOD), name
        else:
            assert math.isnan(v) and q == Quality.BAD, name


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_simulator_values_arrive_as_samples(broker_factory: BrokerFactory, protocol: str) -> None:
    broker = broker_factory()

    async def scenario() -> None:
        receiver = make_receiver(options(broker, protocol=protocol))
        running = Running(receiver)
        server = sim(broker)
        try:
            await running.subscribed()
            assert receiver.status.up
            await server.start()
            values = plant_values()
            values[OIL_TAGS.index("FT101.FLOW_IN")] = np.nan  # published as {"value": null, "quality": "bad"}
            t0 = time.time()
            for k in range(3):
                await server.publish(t0 + k, values + k)
                assert await server.flush()
            n = 3 * len(OIL_TAGS)
            await running.until(lambda: len(running.samples()) >= n, what=f"{n} samples")
            samples = running.samples()
            assert len(samples) == n
            for k in range(3):
                check_round(samples, values + k, t0 + k)
            assert all(len(b) == len(b.recv_ts) and b.watermark is None for b in running.batches)
            assert len(running.batches) < n  # batched per burst, not one batch per message
            assert receiver.read_ahead  # paho reads through the read-ahead buffer
            assert receiver.status.samples == n
            assert not receiver.status.errors, receiver.status.errors
            assert receiver.status.reconnects == 0
        finally:
            await server.stop()
            await running.stop()
        assert not receiver.status.up

    run(scenario)


def test_malformed_payloads_counted_by_kind_logged_once_and_stream_goes_on(
    broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory()
    level = "plantwatch/oil/tank_farm/TK101.LEVEL"
    bad = {
        "not_json": [(level, b"{oops")],
        "not_text": [(level, b'{"value": 1, "ts": 5, "x": "\xff"}')],
        "not_object": [(level, b"[1,2,3]")],
        "missing_value": [(level, b'{"ts": 5}')],
        "bad_value": [(level, b'{"value": "12.5", "ts": 5}')],
        "non_finite": [(level, b'{"value": NaN, "ts": 5}'), (level, b'{"value": Infinity, "ts": 6}')],
        "missing_timestamp": [(level, b'{"value": 1.0}')],
        "bad_timestamp": [(level, b'{"value": 1.0, "ts": "soon"}')],
        "bad_quality": [(level, b'{"value": 1.0, "ts": 5, "quality": 3}')],
        "unknown_tag": [("plantwatch/oil/tank_farm/NOPE.TAG", b'{"value": 1.0, "ts": 5}')],
        "too_large": [(level, b'{"value": 1.0, "ts": 5, "pad": "' + b"x" * 2000 + b'"}')],
    }

    async def scenario() -> None:
        receiver = make_receiver(options(broker, max_payload_bytes=1024, queue_max_bytes=1024 * 64))
        running = Running(receiver)
        pub = RawPublisher(broker)
        try:
            await running.subscribed()
            with caplog.at_level(logging.WARNING, logger="test.mqtt"):
                for _ in range(3):  # three times each: counted three times, logged once
                    for messages in bad.values():
                        for topic, payload in messages:
                            pub.publish(topic, payload)
                t = time.time()
                pub.publish(level, f'{{"value": 4.5, "ts": {t}, "quality": "good"}}')
                await running.until(lambda: len(running.samples()) >= 1, what="the good message")
            assert running.samples() == [(OIL_INDEX["TK101.LEVEL"], 4.5, t, Quality.GOOD)]
            want = {reason: 3 * len(messages) for reason, messages in bad.items()}
            await running.until(lambda: dict(receiver.status.errors) == want, 5, f"errors {want}")
            assert receiver.status.up
        finally:
            pub.close()
            await running.stop()
        logged = [r for r in caplog.records if "further ones are counted" in r.getMessage()]
        kinds = sorted(getattr(r, "kind", "") for r in logged)
        assert kinds == sorted(bad), kinds

    run(scenario)


async def huge_then_small(running: Running, pub: RawPublisher) -> None:
    """A 500 KB message on the level's topic, then a small one, which must arrive as the only sample."""
    level = "plantwatch/oil/tank_farm/TK101.LEVEL"
    await running.subscribed()
    pub.publish(level, b'{"value": 1.0, "ts": 5, "pad": "' + b"x" * 500_000 + b'"}')
    t = time.time()
    pub.publish(level, f'{{"value": 4.5, "ts": {t}}}')
    await running.until(lambda: len(running.samples()) >= 1, what="the message after the huge one")
    assert running.samples() == [(OIL_INDEX["TK101.LEVEL"], 4.5, t, Quality.GOOD)]


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_huge_message_is_counted_too_large_and_the_stream_goes_on(broker_factory: BrokerFactory, protocol: str) -> None:
    """500 KB against max_payload_bytes 1 KiB: far too large, yet under the v5 ceiling, so it is seen and counted."""
    broker = broker_factory()

    async def scenario() -> None:
        receiver = make_receiver(options(broker, protocol=protocol, max_payload_bytes=1024, queue_max_bytes=65536))
        running = Running(receiver)
        pub = RawPublisher(broker)
        try:
            await huge_then_small(running, pub)
            await running.until(lambda: receiver.status.errors["too_large"] >= 1, 5, "too_large counted")
            assert dict(receiver.status.errors) == {"too_large": 1}
            assert receiver.buffered_bytes_high_water < 1024  # never held
            assert receiver.status.up and receiver.status.reconnects == 0
        finally:
            pub.close()
            await running.stop()

    run(scenario)


def test_beyond_max_packet_bytes_the_broker_drops_the_message_and_the_stream_goes_on(
    broker_factory: BrokerFactory,
) -> None:
    """v5: the Maximum Packet Size bounds memory; a larger message never reaches plantwatch (mosquitto logs it)."""
    broker = broker_factory()

    async def scenario() -> None:
        opts = options(broker, max_payload_bytes=1024, max_packet_bytes=200_000, client_id="pw-ceiling")
        receiver = make_receiver(opts)
        running = Running(receiver)
        pub = RawPublisher(broker)
        try:
            await huge_then_small(running, pub)
            assert not receiver.status.errors, receiver.status.errors
        finally:
            pub.close()
            await running.stop()
        assert "Dropping too large outgoing PUBLISH for pw-ceiling" in broker.log()

    run(scenario)


def test_redelivered_duplicates_are_not_counted_twice(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    topic = "plantwatch/oil/tank_farm/TK101.LEVEL"

    async def scenario() -> None:
        receiver = make_receiver(options(broker))
        running = Running(receiver)
        pub = RawPublisher(broker)
        try:
            await running.subscribed()
            t = time.time()
            for payload in (
                f'{{"value": 1.0, "ts": {t}}}',
                f'{{"value": 1.0, "ts": {t}}}',
                f'{{"value": 2.0, "ts": {t + 1}}}',
            ):
                pub.publish(topic, payload)
            await running.until(lambda: receiver.status.errors["duplicate"] == 1, what="one duplicate")
            await running.until(lambda: len(running.samples()) == 2, what="two samples")
            assert [s[1] for s in running.samples()] == [1.0, 2.0]
        finally:
            pub.close()
            await running.stop()

    run(scenario)


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_broker_restart_reconnects_and_delivers_what_was_published_while_away(
    broker_factory: BrokerFactory, protocol: str
) -> None:
    """Persistent session: QoS 1 messages published while the source is disconnected arrive after it reconnects."""
    broker = broker_factory(persistence=True)

    async def scenario() -> None:
        # the first retry comes 2-4 s after the loss: time to restart the broker and publish meanwhile
        opts = options(broker, protocol=protocol, reconnect_min_s=4.0, reconnect_max_s=4.0, session_expiry_s=300)
        receiver = make_receiver(opts)
        running = Running(receiver)
        values = plant_values()
        t0 = time.time()
        try:
            await running.subscribed()
            server = sim(broker)
            await server.start()
            await server.publish(t0, values)
            assert await server.flush()
            await server.stop()
            n = len(OIL_TAGS)
            await running.until(lambda: len(running.samples()) >= n, what="first round")

            broker.stop()  # SIGTERM: mosquitto writes its persistence file, with our session in it
            await running.until(lambda: not receiver.status.up, 5, "down")
            broker.start()  # same port, same persistence file
            server = sim(broker)
            await server.start()
            await server.publish(t0 + 1, values + 1)
            assert await server.flush()  # acknowledged by the broker: queued for our offline session
            await server.stop()
            assert not receiver.status.up, "the receiver came back too early for this test to mean anything"

            await running.until(lambda: receiver.status.reconnects == 1, 15, "reconnection")
            await running.until(lambda: len(running.samples()) >= 3 * n, 10, "messages sent while away")
            samples = running.samples()
            bad = [s for s in samples if s[3] == Quality.BAD and s[2] not in (t0, t0 + 1)]
            assert sorted(s[0] for s in bad) == sorted(OIL_INDEX.values())  # one BAD sample per tag at the loss
            good = [s for s in samples if s[2] in (t0, t0 + 1)]
            assert len(good) == 2 * n  # nothing twice, nothing lost
            check_round(good, values, t0)
            check_round(good, values + 1, t0 + 1)
            assert receiver.status.errors["connection_lost"] == 1
            assert receiver.status.up

            # and the restored subscription carries new data
            await running.subscribed()
            server = sim(broker)
            await server.start()
            await server.publish(t0 + 2, values + 2)
            assert await server.flush()
            await server.stop()
            await running.until(lambda: len(running.samples()) >= 4 * n, 10, "after reconnection")
            check_round(running.samples(), values + 2, t0 + 2)
        finally:
            await running.stop()

    run(scenario, 90)


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_daemon_away_then_back_with_the_same_client_id_gets_what_was_published_meanwhile(
    broker_factory: BrokerFactory, protocol: str
) -> None:
    """The receiver stops (a daemon restart) and starts again: the broker kept its session and queued QoS 1 messages."""
    broker = broker_factory()
    level = "plantwatch/oil/tank_farm/TK101.LEVEL"
    opts = options(broker, protocol=protocol, client_id=f"pw-away-{protocol}")

    async def scenario() -> None:
        first = Running(make_receiver(opts))
        pub = RawPublisher(broker)
        try:
            await first.subscribed()
        finally:
            await first.stop()  # a normal DISCONNECT: the session stays
        try:
            t = time.time()
            for k in range(3):
                pub.publish(level, f'{{"value": {k}.5, "ts": {t + k}}}')  # acknowledged: queued for the session
            receiver = make_receiver(opts)
            second = Running(receiver)
            try:
                await second.until(lambda: len(second.samples()) >= 3, what="what was published while away")
                assert [s[1:3] for s in second.samples()] == [(k + 0.5, t + k) for k in range(3)]
                assert not receiver.status.errors, receiver.status.errors
            finally:
                await second.stop()
        finally:
            pub.close()

    run(scenario)


def test_flood_with_a_tiny_queue_overflows_counted_memory_bounded_and_alive(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(extra="max_queued_messages 100000")
    exe = require("mosquitto_pub")
    n = 50_000
    lines = "".join(f'{{"value": {i}, "ts": {1767225600 + i}}}\n' for i in range(n))

    async def scenario() -> None:
        receiver = make_receiver(options(broker, queue_max=100, qos=0))
        running = Running(receiver)
        try:
            await running.subscribed()
            started = time.monotonic()
            proc = subprocess.Popen(
                [exe, "-h", broker.host, "-p", str(broker.port), "-t", "plantwatch/oil/tank_farm/TK101.LEVEL", "-l"],
                stdin=subprocess.PIPE,
            )
            proc.communicate(lines.encode(), timeout=30)  # blocks the event loop: a pipeline that cannot keep up
            assert proc.returncode == 0
            time.sleep(1.0)  # still blocked while paho's thread keeps receiving
            await running.until(
                lambda: receiver.status.samples + receiver.status.errors["overflow"] >= n * 0.5, 20, "the flood"
            )
            await asyncio.sleep(1.0)
            elapsed = time.monotonic() - started
            status = receiver.status
            print(
                f"flood: {n} msgs, {status.samples} samples, {status.errors['overflow']} overflow, high water"
                f" {receiver.buffered_high_water} msgs / {receiver.buffered_bytes_high_water} B, {elapsed:.1f} s"
            )
            assert status.errors["overflow"] > 0
            assert receiver.buffered_high_water <= 100
            assert status.samples + status.errors["overflow"] <= n
            assert status.up and status.reconnects == 0 and "connection_lost" not in status.errors
            # alive: a later message still arrives
            before = status.samples
            pub = RawPublisher(broker)
            pub.publish("plantwatch/oil/tank_farm/LIC101.SP", f'{{"value": 7.5, "ts": {time.time()}}}')
            pub.close()
            sp = OIL_INDEX["LIC101.SP"]
            await running.until(lambda: any(s[0] == sp for s in running.samples()), 20, "a message after the flood")
            assert [s[1] for s in running.samples() if s[0] == sp] == [7.5]
            assert receiver.status.samples > before
            total = receiver.status.samples + receiver.status.errors["overflow"]
            print(f"flood done: {receiver.status.samples} samples + {receiver.status.errors['overflow']} overflow")
            assert total <= n + 1
            assert receiver.buffered_high_water <= 100
        finally:
            await running.stop()

    run(scenario, 90)


def test_read_only_acl_works_and_the_broker_sees_no_publish(broker_factory: BrokerFactory) -> None:
    acl = "user reader\ntopic read plantwatch/#\n\nuser sim\ntopic write plantwatch/#\n"
    broker = broker_factory(users={"reader": "r-pass", "sim": "s-pass"}, acl=acl, verbose=True)

    async def scenario() -> None:
        opts = options(broker, username="reader", password="r-pass", client_id="pw-reader")
        receiver = make_receiver(opts)
        running = Running(receiver)
        server = sim(broker, username="sim", password="s-pass")
        try:
            await running.subscribed()
            assert not receiver.status.errors, receiver.status.errors
            await server.start()
            values = plant_values()
            t0 = time.time()
            await server.publish(t0, values)
            assert await server.flush()
            await running.until(lambda: len(running.samples()) >= len(OIL_TAGS), what="samples")
            check_round(running.samples(), values, t0)
        finally:
            await server.stop()
            await running.stop()
        log = broker.log()
        assert re.search(r"Sending PUBLISH to pw-reader", log), "the broker log does not show deliveries"
        assert re.search(r"Received SUBSCRIBE from pw-reader", log)
        assert not re.search(r"(Received|Denied) PUBLISH from pw-reader", log), "the receiver published"
        assert "Denied" not in log

    run(scenario)


def test_wrong_password_is_refused_counted_logged_once_and_retried_under_backoff(
    broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory(users={"reader": "r-pass"})

    async def scenario() -> None:
        opts = options(
            broker, username="reader", password="wrong", client_id="pw-wrong", reconnect_min_s=0.2, reconnect_max_s=1.0
        )
        receiver = make_receiver(opts)
        running = Running(receiver)
        try:
            await asyncio.sleep(4.0)
            refused = {k: v for k, v in receiver.status.errors.items() if k.startswith("refused_")}
            assert refused, receiver.status.errors
            attempts = sum(refused.values())
            # 0.2, 0.4, 0.8, 1, 1 ... each jittered down to half: a handful in 4 s, never a tight loop
            assert 2 <= attempts <= 15, attempts
            assert not receiver.status.up and not running.task.done()
        finally:
            await running.stop()

    with caplog.at_level(logging.WARNING, logger="test.mqtt"):
        run(scenario)
    refused = [r for r in caplog.records if r.getMessage().startswith("the MQTT broker refused the connection")]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]  # once, though refused several times
    record = refused[0]
    assert record.kind.startswith("refused_") and record.source == "oil-mqtt", record.__dict__
    assert re.search(r"user name or password|not authori[sz]ed", record.reason, re.IGNORECASE), record.reason
    assert "wrong" not in caplog.text and "r-pass" not in caplog.text  # no password in the logs


def test_tls_verifies_the_broker_certificate_and_its_name(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    ca = make_tls_ca(tmp_path, "plant-ca")
    other_ca = make_tls_ca(tmp_path, "other-ca").cert
    wrong = make_tls_cert(tmp_path, "wrong-name", ca, hostnames=["broker.plant.example"], ips=[])  # not what we dial
    good = make_tls_cert(tmp_path, "broker", ca, hostnames=[], ips=["127.0.0.1"])
    cert, key, good_cert, good_key = wrong.cert, wrong.key, good.cert, good.key
    wrong_name = broker_factory(extra=f"cafile {ca.cert}\ncertfile {cert}\nkeyfile {key}")
    right = broker_factory(extra=f"cafile {ca.cert}\ncertfile {good_cert}\nkeyfile {good_key}")

    async def attempt(broker: MqttBroker, **tls: object) -> tuple[bool, dict[str, int]]:
        receiver = make_receiver(options(broker, tls=tls, reconnect_min_s=0.5, reconnect_max_s=1.0))
        running = Running(receiver)
        try:
            # Wait for the outcome, not a fixed window (a busy machine can take seconds over a handshake):
            # subscribed, or refused twice, the retry included.
            await running.until(
                lambda: receiver.subscribed.is_set() or receiver.status.errors.total() >= 2, 15, "SUBACK or refusals"
            )
            if receiver.subscribed.is_set():  # data flows over TLS too
                t = time.time()
                args = [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(ca.cert)]
                args += ["--insecure", "-q", "1", "-t", "plantwatch/oil/tank_farm/TK101.LEVEL"]
                args += ["-m", f'{{"value": 3.25, "ts": {t}}}']
                subprocess.run(args, check=True, timeout=10, capture_output=True)
                await running.until(lambda: len(running.samples()) == 1, what="a sample over TLS")
                assert running.samples()[0][1:3] == (3.25, t)
            return receiver.status.up, dict(receiver.status.errors)
        finally:
            await running.stop()

    async def scenario() -> None:
        up, errors = await attempt(right, ca_file=str(ca.cert))
        assert up and not errors, errors
        up, errors = await attempt(right, ca_file=str(other_ca))  # a broker we cannot verify
        assert not up and errors.get("tls", 0) >= 1, errors
        up, errors = await attempt(right)  # the system CAs do not know ours
        assert not up and errors.get("tls", 0) >= 1, errors
        up, errors = await attempt(wrong_name, ca_file=str(ca.cert))  # right CA, wrong name
        assert not up and errors.get("tls", 0) >= 1, errors
        up, errors = await attempt(wrong_name, ca_file=str(ca.cert), verify_hostname=False)  # explicitly allowed
        assert up and not errors, errors
        assert "connection_lost" not in errors

    run(scenario)


def test_tls_client_certificate_required_by_the_broker(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """A broker that requires a client certificate: with ours data flows; without, refused, counted, retried slowly."""
    ca = make_tls_ca(tmp_path, "plant-ca")
    server = make_tls_cert(tmp_path, "broker", ca, hostnames=[], ips=["127.0.0.1"])
    client = make_tls_cert(tmp_path, "plantwatch", ca, hostnames=["plantwatch"], ips=[], client=True)
    broker = broker_factory(
        extra=f"cafile {ca.cert}\ncertfile {server.cert}\nkeyfile {server.key}\nrequire_certificate true"
    )
    with_cert = {"ca_file": str(ca.cert), "cert_file": str(client.cert), "key_file": str(client.key)}

    async def scenario() -> None:
        receiver = make_receiver(options(broker, tls={"ca_file": str(ca.cert)}, reconnect_min_s=0.5))
        running = Running(receiver)
        started = time.monotonic()
        try:
            await running.until(lambda: receiver.status.errors.total() >= 3, 15, "three refusals")
            took = time.monotonic() - started
            assert set(receiver.status.errors) == {"tls"}, receiver.status.errors  # whichever TLS 1.3 alert path
            assert not receiver.status.up and not receiver.subscribed.is_set() and not running.task.done()
            assert took >= 0.25 + 0.5, f"three attempts in {took:.2f} s: not backing off"  # two delays, jittered
        finally:
            await running.stop()

        receiver = make_receiver(options(broker, tls=with_cert))
        running = Running(receiver)
        try:
            await running.subscribed()
            t = time.time()
            args = [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(ca.cert)]
            args += ["--cert", str(client.cert), "--key", str(client.key), "-q", "1"]
            args += ["-t", "plantwatch/oil/tank_farm/TK101.LEVEL", "-m", f'{{"value": 3.25, "ts": {t}}}']
            subprocess.run(args, check=True, timeout=10, capture_output=True)
            await running.until(lambda: len(running.samples()) == 1, what="a sample over TLS")
            assert running.samples()[0][1:3] == (3.25, t)
            assert receiver.status.up and not receiver.status.errors, receiver.status.errors
        finally:
            await running.stop()

    run(scenario)
