"""plantwatch as a systemd service: the shipped unit verifies, and the daemon speaks sd_notify and journald.

This machine has no systemd as PID 1, so the unit is checked with
``systemd-analyze verify`` and ``security --offline``; the daemon's side of
the contract (READY=1, WATCHDOG=1, STOPPING=1 over $NOTIFY_SOCKET, priority
prefixes when $JOURNAL_STREAM names its stderr) is tested against a real
unix datagram socket, as systemd would listen on it.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from collector.audit import read_audit
from collector.logs import JournaldPrefix, JsonFormatter, stderr_is_journal
from collector.notify import notify, watchdog_interval
from tests.conftest import ROOT, Daemon, demo_config, free_port, sample_value, scrape

UNIT = ROOT / "config" / "systemd" / "plantwatch.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
VENV_PLANTWATCH = Path(sys.executable).parent / "plantwatch"


def unit_copy(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this venv's plantwatch, which verify requires to exist."""
    assert VENV_PLANTWATCH.exists(), "the dev venv has no plantwatch entry point"
    path = tmp_path / "plantwatch.service"
    path.write_text(UNIT.read_text().replace("/usr/local/bin/plantwatch", str(VENV_PLANTWATCH)))
    return path


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit_copy(tmp_path))], capture_output=True, text=True, timeout=60
    )
    # verify only warns (exit 0) on an unknown value; a clean unit prints nothing at all.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


def test_unit_is_hardened(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert service["User"] == "plantwatch" and service["StateDirectory"] == "plantwatch"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/plantwatch"
    assert service["CapabilityBoundingSet"] == ""
    assert "--log-format json" in service["ExecStart"]
    # systemd's own exposure score, 0 (locked down) .. 10 (unprotected); threshold is in tenths.
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    sysusers = (UNIT.parent / "plantwatch.sysusers.conf").read_text()
    assert any(line.startswith("u plantwatch ") for line in sysusers.splitlines())


def listening_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    return sock


def test_notify_sends_to_a_path_and_an_abstract_socket(tmp_path: Path) -> None:
    with listening_socket(str(tmp_path / "notify")) as sock:
        assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert sock.recv(4096) == b"READY=1"
    name = f"plantwatch-test-{os.getpid()}"
    with listening_socket("\0" + name) as sock:
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"
    assert not notify("READY=1", {})  # not under systemd: a no-op
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_daemon_notifies_ready_watchdog_stopping_and_prefixes_priorities(tmp_path: Path) -> None:
    config, doc = demo_config(tmp_path, speed=20.0, loop=True, rebase=True)
    listen = doc["exporter"]["listen"]
    log_path = tmp_path / "stderr.log"
    sock = listening_socket(str(tmp_path / "notify"))
    with log_path.open("wb") as log:
        st = os.fstat(log.fileno())
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
            "WATCHDOG_USEC": "400000",
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "-c", str(config)], stderr=log, stdout=log, env=env, cwd=ROOT
        )
        try:
            messages: list[str] = []
            ready_at = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(m == "WATCHDOG=1" for m in messages) < 3:
                messages.append(sock.recv(4096).decode())
                if messages[-1].startswith("READY=1") and ready_at is None:
                    ready_at = len(messages)
                    assert "plantwatch_build_info" in scrape(listen)  # ready means /metrics answers
            assert ready_at == 1, messages  # READY first, before any watchdog ping
            assert messages[0].startswith("READY=1\nSTATUS=watching 8 tags from 1 sources"), messages
            assert sum(m == "WATCHDOG=1" for m in messages) >= 3  # every 0.2 s: half the 0.4 s watchdog
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            sock.close()
    lines = log_path.read_text().splitlines()
    assert lines and all(line.startswith("<") for line in lines), lines[:5]
    assert any(line.startswith("<6>") and "plantwatch started" in line for line in lines)
    assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"})


def test_journald_prefix_maps_levels_and_keeps_the_json_line() -> None:
    formatter = JournaldPrefix(JsonFormatter())
    lines = {}
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        record = logging.LogRecord("plantwatch.x", level, __file__, 1, "source down", (), None)
        record.source = "tank-farm"
        lines[level] = formatter.format(record)
    assert [line[:3] for line in lines.values()] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    doc = json.loads(lines[logging.WARNING][3:])
    assert (doc["msg"], doc["source"], doc["level"]) == ("source down", "tank-farm", "warning")


# -- plantwatch posture ------------------------------------------------------------------------


def test_posture_reports_security_auth_expiry_and_inline_credentials(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, daemons: list[Daemon]
) -> None:
    from sim_plant.servers.certs import make_tls_ca, make_tls_cert

    ca = make_tls_ca(tmp_path, "plant-ca", days=2)  # valid for two days: an expiry an assessor must see
    client = make_tls_cert(tmp_path, "plantwatch-client", ca, hostnames=["plantwatch-client"], ips=[], days=2)
    cert, key = client.cert, client.key
    key.chmod(0o644)  # readable by everyone: a finding
    monkeypatch.setenv("PW_OPCUA_PASSWORD", "from-env")
    tag = [{"name": "PT101.PRESSURE", "column": "ns=2;s=PT101.PRESSURE"}]
    mqtt_port, listen = free_port(), f"127.0.0.1:{free_port()}"
    doc = {
        "site": "tank-farm",
        "state_dir": str(tmp_path / "state"),
        "exporter": {"listen": listen},
        "sources": [
            {"name": "scada-opcua", "kind": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/", "tags": tag,
             "username": "plantwatch", "password": {"env": "PW_OPCUA_PASSWORD"},
             "security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": str(cert),
                          "private_key": str(key), "server_certificate": str(ca.cert)}},
            {"name": "pool-mqtt", "kind": "mqtt", "host": "127.0.0.1", "port": mqtt_port, "tags": [{"name": "LT1"}],
             "username": "pw", "password": "hunter2", "topics": [{"filter": "plant/#"}],
             "tls": {"ca_file": str(ca.cert)}},
            {"name": "plc", "kind": "modbus", "port": free_port(), "tags": [{"name": "FT1"}],
             "registers": [{"tag": "FT1", "table": "holding", "address": 0}]},
        ],
        "sinks": [{"kind": "webhook", "name": "soc", "url": f"https://127.0.0.1:{free_port()}/",
                   "token": "inline-token"}],
        # Allowed on purpose, so the daemon starts; posture still reports each as a finding.
        "security": {"allow_inline_secrets": True, "allow_world_readable_keys": True},
    }  # fmt: skip
    config = tmp_path / "plant.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = subprocess.run(
        [str(VENV_PLANTWATCH), "posture", "-c", str(config), "--json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = {e["name"]: e for e in json.loads(result.stdout)["endpoints"]}
    opcua, mqtt, plc, soc = report["scada-opcua"], report["pool-mqtt"], report["plc"], report["soc"]
    assert opcua["security"] == "Basic256Sha256 SignAndEncrypt"
    assert opcua["authentication"] == "user plantwatch + application certificate"
    assert opcua["inline_credentials"] == []  # {env: ...} is not inline
    assert {c["role"] for c in opcua["certificates"]} == {"client certificate", "server certificate (pinned)"}
    assert all(c["days_left"] in (1, 2) for c in opcua["certificates"])
    assert any("readable by other users" in f for f in opcua["findings"])
    assert any(f.startswith("server certificate (pinned) expires in") for f in opcua["findings"])
    assert (mqtt["security"], mqtt["authentication"]) == ("TLS", "user pw")
    assert mqtt["inline_credentials"] == ["sources[1].password"]
    assert plc["security"] == "plain TCP" and any("isolate" in f for f in plc["findings"])
    assert soc["inline_credentials"] == ["sinks[0].token"] and soc["security"] == "TLS"
    text = subprocess.run(
        [str(VENV_PLANTWATCH), "posture", "-c", str(config)], capture_output=True, text=True, timeout=60
    ).stdout
    assert f"source pool-mqtt: MQTT 127.0.0.1:{mqtt_port}" in text and "hunter2" not in text and "from-env" not in text

    # The daemon exports the same posture (its sources stay down here: nobody listens on those ports).
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemons.append(daemon)
    metrics = daemon.wait_for(listen, lambda t: "plantwatch_endpoint_security_info" in t)
    info = {"site": "tank-farm", "section": "source", "endpoint": "pool-mqtt"}
    assert (
        sample_value(metrics, "plantwatch_endpoint_security_info", **info, channel="TLS", inline_credentials="true")
        == 1
    )
    assert sample_value(metrics, "plantwatch_security_findings", section="source", endpoint="plc") == 1
    expiry = sample_value(metrics, "plantwatch_certificate_expiry_timestamp_seconds", endpoint="pool-mqtt", role="CA")
    assert expiry is not None and 0 < expiry - time.time() < 2 * 86400
    assert daemon.stop(signal.SIGTERM) == 0
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed; scripts/test.sh installs it"
    check = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


# -- SIGHUP reload -----------------------------------------------------------------------------


def modbus_source(name: str, port: int, registers: dict[str, int]) -> dict[str, object]:
    return {
        "name": name, "kind": "modbus", "host": "127.0.0.1", "port": port, "unit_id": 1, "poll_interval_s": 0.2,
        "tags": [{"name": tag} for tag in registers],
        "registers": [{"tag": tag, "table": "holding", "address": a, "type": "float32", "order": "ABCD"}
                      for tag, a in registers.items()],
    }  # fmt: skip


def test_sighup_reload_keeps_connections_and_learned_state_and_refuses_bad_configs(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Two Modbus sources on the simulated oil plant; a reload changes the first, the second must not notice."""
    modbus_port = free_port()
    sim = subprocess.Popen(
        [str(VENV_PLANTWATCH), "sim", "--plant", "oil", "--no-opcua", "--modbus-port", str(modbus_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        listen = f"127.0.0.1:{free_port()}"
        doc = {
            "site": "tank-farm",
            "state_dir": str(tmp_path / "state"),
            "exporter": {"listen": listen},
            "pipeline": {"tick_s": 0.5, "lateness_s": 0.5},
            "sources": [
                modbus_source("tank-plc", modbus_port, {"TK101.LEVEL": 0, "FT101.FLOW_IN": 4}),
                modbus_source("pump-plc", modbus_port, {"P101.SPEED": 8, "P101.POWER": 10}),
            ],
            "detectors": {"defaults": {"ewma": {"warmup": 8}}},
        }
        config = tmp_path / "plant.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        daemon = Daemon(config, tmp_path / "daemon.log")
        daemons.append(daemon)
        text = daemon.wait_for(
            listen, lambda t: (sample_value(t, "plantwatch_detector_warm_tags", detector="ewma") or 0) == 4
        )
        pump_samples = sample_value(text, "plantwatch_source_samples_total", source="pump-plc") or 0
        tank_samples = sample_value(text, "plantwatch_source_samples_total", source="tank-plc") or 0
        assert pump_samples > 0 and tank_samples > 0

        def reloads(result: str) -> Callable[[str], bool]:
            return lambda t: (sample_value(t, "plantwatch_config_reloads_total", result=result) or 0) >= 1

        # 1. Invalid: refused, the running config stays (and keeps scoring).
        config.write_text(yaml.safe_dump({**doc, "pipeline": {"tick_s": -1}}, sort_keys=False))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(listen, reloads("refused"))
        # 2. Valid, but the exporter moved: that needs a restart, so it is refused too.
        config.write_text(yaml.safe_dump({**doc, "exporter": {"listen": f"127.0.0.1:{free_port()}"}}, sort_keys=False))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(listen, lambda t: sample_value(t, "plantwatch_config_reloads_total", result="refused") == 2)

        # 3. Valid: tank-plc gains a tag (so it restarts and pump-plc's columns move by one), z_limit changes.
        new = {**doc, "detectors": {"defaults": {"ewma": {"warmup": 8, "z_limit": 7}}}}
        new["sources"] = [
            modbus_source("tank-plc", modbus_port, {"TK101.LEVEL": 0, "LIC101.SP": 2, "FT101.FLOW_IN": 4}),
            doc["sources"][1],
        ]
        config.write_text(yaml.safe_dump(new, sort_keys=False))
        daemon.proc.send_signal(signal.SIGHUP)
        text = daemon.wait_for(listen, reloads("applied"))
        # Learned baselines carried over: the four old tags are still warm at once (fresh ones need 8 ticks).
        assert (sample_value(text, "plantwatch_detector_warm_tags", detector="ewma") or 0) >= 4
        # pump-plc kept its receiver and connection: its counters go on, no reconnect; tank-plc started over.
        text = daemon.wait_for(
            listen, lambda t: (sample_value(t, "plantwatch_tag_value", tag="LIC101.SP") or 0) > 0, timeout=15
        )
        assert (sample_value(text, "plantwatch_source_samples_total", source="pump-plc") or 0) > pump_samples
        assert sample_value(text, "plantwatch_source_reconnects_total", source="pump-plc") == 0
        assert (sample_value(text, "plantwatch_source_samples_total", source="tank-plc") or 0) < tank_samples + 20
        # pump-plc's values land in their new columns: each tag reads its own plausible value.
        time.sleep(1.5)
        text = scrape(listen)
        values = {t: sample_value(text, "plantwatch_tag_value", tag=t) for t in
                  ("TK101.LEVEL", "LIC101.SP", "FT101.FLOW_IN", "P101.SPEED", "P101.POWER")}  # fmt: skip
        assert None not in values.values(), values  # every column fed, none left silent
        assert abs(values["FT101.FLOW_IN"] - values["P101.SPEED"]) > 1.0, values  # type: ignore[operator]
        assert 3.0 < values["LIC101.SP"] < 7.0 and 3.0 < values["TK101.LEVEL"] < 7.0, values  # type: ignore[operator]
        assert 40.0 < values["P101.SPEED"] < 100.0 and values["P101.POWER"] != values["P101.SPEED"], values  # type: ignore[operator]
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    finally:
        sim.terminate()
        sim.wait(10)
    events = [e["event"] for e in read_audit(tmp_path / "state" / "audit.jsonl")]
    assert events.count("reload_refused") == 2 and events.count("reload") == 1
    reload = next(e for e in read_audit(tmp_path / "state" / "audit.jsonl") if e["event"] == "reload")
    assert (reload["kept"], reload["started"], reload["stopped"]) == (["pump-plc"], ["tank-plc"], ["tank-plc"])
