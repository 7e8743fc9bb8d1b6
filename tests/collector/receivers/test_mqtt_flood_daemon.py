"""An MQTT flood against the whole daemon: /metrics keeps answering, memory stays bounded, drops are counted.

The receiver-level flood test proves the hand-off buffer is bounded; this one runs ``plantwatch run``
against a real mosquitto and scrapes it all through the flood, as Prometheus would.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.collector.receivers import conftest_mqtt
from tests.collector.receivers.conftest_mqtt import OIL_TAGS, MqttBroker, RawPublisher
from tests.conftest import Daemon, free_port, sample_value
from tests.sim_plant.servers.conftest import require

BrokerFactory = Callable[..., MqttBroker]
broker_factory = conftest_mqtt.broker_factory  # the fixture, from the helper module (no shared conftest.py here)

FLOOD = 100_000
TOPIC = "plantwatch/oil/tank_farm/TK101.LEVEL"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_flood_keeps_metrics_answering_memory_bounded_and_drops_counted(
    broker_factory: BrokerFactory, tmp_path: Path, daemons: list[Daemon]
) -> None:
    broker = broker_factory(extra="max_queued_messages 200000")
    listen = f"127.0.0.1:{free_port()}"
    doc = {
        "site": "flood",
        "state_dir": str(tmp_path / "state"),
        "exporter": {"listen": listen},
        "sources": [
            {
                "name": "oil-mqtt",
                "kind": "mqtt",
                "host": broker.host,
                "port": broker.port,
                "qos": 0,
                "queue_max": 100,  # a hand-off far smaller than the flood: it must overflow, counted
                "topics": [{"filter": "plantwatch/oil/#"}],
                "tags": [{"name": name} for name in OIL_TAGS],
            }
        ],
    }
    config = tmp_path / "plant.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemons.append(daemon)
    daemon.wait_for(listen, lambda text: sample_value(text, "plantwatch_source_up", source="oil-mqtt") == 1.0)
    rss_before = rss_bytes(daemon.proc.pid)

    now = time.time()  # stamped as a live plant would, 10 messages per millisecond
    lines = "".join(f'{{"value": {i % 1000}, "ts": {now + i * 1e-4:.4f}}}\n' for i in range(FLOOD))
    pub = subprocess.Popen(
        [require("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-t", TOPIC, "-l"],
        stdin=subprocess.PIPE,
    )
    feeding = threading.Thread(target=pub.communicate, args=(lines.encode(),), kwargs={"timeout": 60})
    feeding.start()
    scrapes, slowest, rss_peak = 0, 0.0, rss_before
    while feeding.is_alive() or scrapes < 5:  # bounded: the feeder gives up after 60 s
        started = time.monotonic()
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
            assert response.status == 200
            response.read()
        slowest = max(slowest, time.monotonic() - started)
        scrapes += 1
        rss_peak = max(rss_peak, rss_bytes(daemon.proc.pid))
        time.sleep(0.05)
    feeding.join()
    assert pub.returncode == 0

    def settled(t: str) -> bool:  # the broker has handed over the whole flood: delivered or dropped, all counted
        delivered = sample_value(t, "plantwatch_source_samples_total", source="oil-mqtt") or 0.0
        return delivered + (sample_value(t, "plantwatch_source_errors_total", error="overflow") or 0.0) >= FLOOD

    text = daemon.wait_for(listen, settled)
    delivered = sample_value(text, "plantwatch_source_samples_total", source="oil-mqtt") or 0.0
    overflow = sample_value(text, "plantwatch_source_errors_total", error="overflow") or 0.0
    print(
        f"flood of {FLOOD}: {scrapes} scrapes, slowest {slowest * 1000:.0f} ms; {delivered:.0f} samples,"
        f" {overflow:.0f} overflow; RSS {rss_before / 2**20:.0f} -> {rss_peak / 2**20:.0f} MiB"
    )
    assert overflow > 0 and delivered + overflow == FLOOD
    assert rss_peak - rss_before < 64 * 2**20, "the flood must not pile up in memory"
    assert sample_value(text, "plantwatch_source_up", source="oil-mqtt") == 1.0

    # Alive: a message after the flood still reaches /metrics.
    publisher = RawPublisher(broker)
    publisher.publish("plantwatch/oil/tank_farm/LIC101.SP", f'{{"value": 7.25, "ts": {time.time()}}}')
    publisher.close()
    daemon.wait_for(listen, lambda t: sample_value(t, "plantwatch_tag_value", tag="LIC101.SP") == 7.25)
