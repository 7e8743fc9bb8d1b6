"""/healthz and /readyz of a real daemon whose Modbus PLC is not there yet, then comes up.

Readiness waits for every source to connect once: an install whose PLC address
is wrong must not report ready. /healthz answers from the first moment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.conftest import ROOT, Daemon, free_port, sample_value, scrape


def _get(listen: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{listen}{path}", timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _answers(listen: str) -> bool:
    try:
        return _get(listen, "/healthz")[0] == 200
    except OSError:
        return False


def _wait_status(listen: str, path: str, want: int, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        try:
            last = _get(listen, path)
            if last[0] == want:
                return json.loads(last[1]) if path == "/readyz" else {"body": last[1].decode()}
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never answered {want} within {timeout} s; last {last}")


def _plc_config(tmp_path: Path, modbus_port: int) -> tuple[Path, str]:
    doc = yaml.safe_load((ROOT / "config" / "oil.yaml").read_text())
    doc["sources"] = [s for s in doc["sources"] if s["kind"] == "modbus"]
    doc.pop("invariants", None)  # they relate tags of the other sources, which this config leaves out
    doc["detectors"].pop("overrides", None)
    doc["sources"][0]["port"] = modbus_port
    doc["sources"][0]["reconnect_max_s"] = 1.0
    doc["state_dir"] = str(tmp_path / "state")
    listen = f"127.0.0.1:{free_port()}"
    doc["exporter"]["listen"] = listen
    path = tmp_path / "plc.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, listen


def test_readyz_waits_for_every_source_to_connect_once(tmp_path: Path, daemons: list[Daemon]) -> None:
    modbus_port = free_port()
    config, listen = _plc_config(tmp_path, modbus_port)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemons.append(daemon)

    deadline = time.monotonic() + 20
    while daemon.proc.poll() is None and time.monotonic() < deadline and not _answers(listen):
        time.sleep(0.2)
    assert daemon.proc.poll() is None, daemon.log()  # a config the daemon refuses fails here, with its reason
    assert _wait_status(listen, "/healthz", 200, 5)["body"] == "ok\n"
    waiting = _wait_status(listen, "/readyz", 503, 5)
    assert waiting["ready"] is False
    assert waiting["waiting_for"] == ["oil-plc"]
    assert waiting["sources"] == {"oil-plc": "never connected"}

    sim = subprocess.Popen(
        [sys.executable, "-m", "collector", "sim", "--plant", "oil", "--no-opcua", "--modbus-port", str(modbus_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = _wait_status(listen, "/readyz", 200, 30)
        assert ready["ready"] is True and "waiting_for" not in ready
        assert ready["sources"] == {"oil-plc": "up"}
        detectors = ready["detectors"]
        assert isinstance(detectors, dict)
        assert detectors["limits"] == "warm"  # nothing to learn
        assert detectors["pca"] == "learning (0/3 tags warm)"  # on by default, a 20-minute warm-up to go
        assert detectors["ewma"] == "warm" or detectors["ewma"].startswith("learning (")
        assert sample_value(scrape(listen), "plantwatch_source_up", source="oil-plc") == 1.0
    finally:
        sim.terminate()
        sim.wait(10)

    # The PLC gone after its first connect is an incident for /metrics and the alert rules, not unreadiness.
    daemon.wait_for(listen, lambda text: sample_value(text, "plantwatch_source_up", source="oil-plc") == 0.0)
    status, body = _get(listen, "/readyz")
    assert status == 200
    assert json.loads(body)["sources"] == {"oil-plc": "down since first connect"}
    assert daemon.stop() == 0
