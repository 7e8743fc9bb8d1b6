"""The audit trail: durable JSON lines an auditor reads with plantwatch stopped, fed from one place."""

from __future__ import annotations

import getpass
import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

from collector.audit import AuditTrail, SourceWatch, read_audit
from collector.journal import read_journal
from collector.receivers.base import SourceStatus
from tests.collector.test_sinks_webhook import Receiver
from tests.conftest import Daemon, demo_config, free_port, sample_value

UTC_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class FakeReceiver:
    """Only what SourceWatch reads: a name, a kind and the status every receiver keeps."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind, self.status = name, kind, SourceStatus()


def test_source_watch_turns_status_changes_into_security_events(tmp_path: Path) -> None:
    opcua, mqtt = FakeReceiver("reactor-opcua", "opcua"), FakeReceiver("pool-mqtt", "mqtt")
    watch = SourceWatch([opcua, mqtt])
    assert watch.poll() == []
    opcua.status.count_error("security", 2)  # a server certificate that does not match the pin
    mqtt.status.count_error("refused_not_authorized")
    mqtt.status.count_error("malformed", 40)  # a data-quality problem, not an audit event
    opcua.status.up = True
    events = watch.poll()
    assert {"event": "certificate_failure", "source": "reactor-opcua", "kind": "opcua", "error": "security",
            "count": 2} in events  # fmt: skip
    assert {"event": "authentication_failure", "source": "pool-mqtt", "kind": "mqtt",
            "error": "refused_not_authorized", "count": 1} in events  # fmt: skip
    assert {"event": "source_connected", "source": "reactor-opcua", "kind": "opcua"} in events
    assert len(events) == 3
    opcua.status.up = False
    assert watch.poll() == [{"event": "source_disconnected", "source": "reactor-opcua", "kind": "opcua"}]
    assert watch.poll() == []  # counted once, not at every pass


def test_trail_is_whole_json_lines_in_utc_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, clock=lambda: 1_790_000_000.5) as audit:
        audit.record("start", version="x")
        audit.record_many([{"event": "source_connected", "source": "a"}, {"event": "source_disconnected"}])
    with path.open("ab") as f:
        f.write(b'{"ts":"2026-')  # power lost mid-write
    with AuditTrail(path) as audit:
        audit.record("stop")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "source_connected", "source_disconnected", "stop"]
    assert events[0]["ts"] == "2026-09-21T14:13:20.500Z"
    assert all(UTC_STAMP.match(str(e["ts"])) for e in events)


def test_daemon_audits_lifecycle_sources_alerts_and_feeds_both_sinks(tmp_path: Path, daemons: list[Daemon]) -> None:
    """One run end to end: the journal, the audit trail, a webhook and a syslog listener all agree."""
    hook = Receiver(tmp_path, free_port())
    hook.start()
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(5)
    config, doc = demo_config(tmp_path, speed=200.0, loop=False, rebase=True)
    doc["sinks"] = [
        {"kind": "webhook", "name": "soc-hook", "url": f"http://127.0.0.1:{hook.port}/", "min_severity": "critical",
         "retry_min_s": 0.05, "retry_max_s": 0.5},
        {"kind": "syslog", "name": "soc-syslog", "port": syslog.getsockname()[1], "format": "cef"},
    ]  # fmt: skip
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    listen = doc["exporter"]["listen"]
    try:
        daemon = Daemon(config, tmp_path / "daemon.log")
        daemons.append(daemon)
        daemon.wait_for(listen, lambda t: (sample_value(t, "plantwatch_ticks_total") or 0) >= 1800)  # recording done
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
        datagrams = []
        syslog.settimeout(0.5)
        try:
            while True:
                datagrams.append(syslog.recv(65536).decode())
        except TimeoutError:
            pass
    finally:
        hook.kill()
        syslog.close()

    state = tmp_path / "state"
    journal = list(read_journal(state / "alerts.jsonl"))
    critical = [r["seq"] for r in journal if r["severity"] == "critical"]
    assert critical and len(critical) < len(journal)
    # The webhook got exactly the critical ones, each once, keyed by the journal's sequence number.
    assert [r["key"] for r in hook.received()] == [f"demo-tank-farm:{seq}" for seq in critical]
    # syslog got every transition, CEF bodies, sequence numbers in the structured data.
    assert [int(re.search(r' seq="(\d+)"', d).group(1)) for d in datagrams] == [r["seq"] for r in journal]  # type: ignore[union-attr]
    assert all(" plantwatch " in d and "CEF:0|plantwatch|" in d for d in datagrams)

    events = list(read_audit(state / "audit.jsonl"))
    names = [e["event"] for e in events]
    assert names[:2] == ["baseline_new", "start"] and names[-2:] == ["baseline_saved", "stop"]
    assert "source_connected" in names
    alerts = [e for e in events if str(e["event"]).startswith("alert_")]
    assert [e["seq"] for e in alerts] == [r["seq"] for r in journal]
    assert all(UTC_STAMP.match(str(e["ts"])) for e in events)

    # Restarted, it says the baseline came from the snapshot.
    daemon = Daemon(config, tmp_path / "daemon2.log")
    daemons.append(daemon)
    daemon.wait_for(listen, lambda t: sample_value(t, "plantwatch_state_restored") == 1.0)
    assert daemon.stop(signal.SIGTERM) == 0
    events = list(read_audit(state / "audit.jsonl"))
    assert [e["event"] for e in events].count("start") == 2
    assert "baseline_restored" in [e["event"] for e in events]


def wait_for_event(path: Path, name: str, timeout: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in read_audit(path):
            if event["event"] == name:
                return event
        time.sleep(0.1)
    raise AssertionError(f"no {name} in the audit trail: {list(read_audit(path))}")


def test_broker_refusing_the_password_is_audited_and_a_reload_with_the_right_one_connects(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A real mosquitto with a password file; the receiver's refusal reaches the trail without receiver code."""
    port = free_port()
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "plantwatch", "right-one"], check=True, timeout=10)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\nallow_anonymous false\n"
        f"password_file {passwd}\npersistence false\nlog_dest stderr\n"
    )
    broker_log = (tmp_path / "mosquitto.log").open("wb")
    broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stderr=broker_log)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert broker.poll() is None, (tmp_path / "mosquitto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        secret = tmp_path / "mqtt.secret"
        secret.write_text("wrong-one\n")
        listen = f"127.0.0.1:{free_port()}"
        doc = {
            "site": "pool",
            "state_dir": str(tmp_path / "state"),
            "exporter": {"listen": listen},
            "sources": [{"name": "pool-mqtt", "kind": "mqtt", "host": "127.0.0.1", "port": port,
                         "username": "plantwatch", "password": {"file": str(secret)}, "reconnect_max_s": 1.0,
                         "topics": [{"filter": "plant/#"}], "tags": [{"name": "LT101.LEVEL"}]}],
        }  # fmt: skip
        config = tmp_path / "plant.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        daemon = Daemon(config, tmp_path / "daemon.log")
        daemons.append(daemon)
        trail = tmp_path / "state" / "audit.jsonl"
        refused = wait_for_event(trail, "authentication_failure")
        assert refused["source"] == "pool-mqtt" and str(refused["error"]).startswith("refused_")
        assert "source_connected" not in [e["event"] for e in read_audit(trail)]

        secret.write_text("right-one\n")  # the operator fixes the secret file and reloads
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_for_event(trail, "reload")["started"] == ["pool-mqtt"]
        assert wait_for_event(trail, "source_connected")["source"] == "pool-mqtt"
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        broker.terminate()
        broker.wait(10)
        broker_log.close()
    assert "wrong-one" not in trail.read_text() and "right-one" not in trail.read_text()
