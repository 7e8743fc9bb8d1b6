"""The exporter through its public surface: a registry, and a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import http.client
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from collector.config import ConfigError, load_config
from collector.exporters.prometheus import MetricsServer, PlantCollector
from collector.journal import AlertJournal
from collector.runner import Runner
from tests.conftest import ROOT, demo_config
from tests.dashboards.tls_files import SERVER_NAME, Pair, TlsFiles, make_tls_files


def replayed_registry(tmp_path: Path, per_tag_values: bool) -> CollectorRegistry:
    config, _ = demo_config(tmp_path)
    cfg = load_config(config)
    with AlertJournal(tmp_path / "alerts.jsonl") as journal:
        runner = Runner(cfg, journal, realtime=False)
        asyncio.run(runner.run(asyncio.Event(), until_finished=True))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        PlantCollector(
            cfg.site, runner.pipeline, runner.queue, runner.receivers, runner.counters, per_tag_values=per_tag_values
        )
    )
    return registry


def test_collector_reads_the_pipeline_at_scrape_time(tmp_path: Path) -> None:
    registry = replayed_registry(tmp_path, per_tag_values=True)
    site = "demo-tank-farm"
    assert registry.get_sample_value("plantwatch_ticks_total", {"site": site}) == 1800
    assert registry.get_sample_value(
        "plantwatch_tag_value", {"site": site, "source": "tank-farm-historian", "tag": "P101.RUNNING", "unit": ""}
    ) == pytest.approx(1.0)
    fired = registry.get_sample_value(
        "plantwatch_alert_transitions_total", {"site": site, "event": "firing", "severity": "critical"}
    )
    assert fired and fired >= 1
    # The silent flow meter came back: the journal saw it resolve, and its state is ok again.
    assert (
        registry.get_sample_value("plantwatch_alert_state", {"site": site, "tag": "FT101.FLOW_IN", "detector": "stale"})
        == 0.0
    )
    assert registry.get_sample_value("plantwatch_pipeline_latency_seconds_count", {"site": site}) == 1800
    assert registry.get_sample_value("plantwatch_samples_dropped_total", {"site": site, "reason": "late"}) == 0


def test_every_transition_series_is_exposed_from_the_start_at_zero(tmp_path: Path) -> None:
    """A series that first appears at its count hides those transitions from increase() and changes():
    a dashboard annotation missed the first alerts of a run when they all fired in one tick."""
    config, _ = demo_config(tmp_path)
    cfg = load_config(config)
    with AlertJournal(tmp_path / "alerts.jsonl") as journal:
        runner = Runner(cfg, journal, realtime=False)  # built, not run: no tick yet
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PlantCollector(cfg.site, runner.pipeline, runner.queue, runner.receivers, runner.counters))
        for event in ("firing", "escalated", "resolved"):
            for severity in cfg.alerting.severities:
                labels = {"site": cfg.site, "event": event, "severity": severity.name}
                assert registry.get_sample_value("plantwatch_alert_transitions_total", labels) == 0.0, labels


def test_per_tag_values_can_be_switched_off(tmp_path: Path) -> None:
    registry = replayed_registry(tmp_path, per_tag_values=False)
    names = {m.name for m in registry.collect()}
    assert not {"plantwatch_tag_value", "plantwatch_tag_quality", "plantwatch_tag_limit"} & names
    assert "plantwatch_anomaly_score" in names


def test_http_server_basic_auth_and_health(tmp_path: Path) -> None:
    registry = replayed_registry(tmp_path, per_tag_values=False)
    server = MetricsServer(registry, "127.0.0.1", 0, credentials=("prometheus", "s3cret"))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/metrics", timeout=2)
        assert denied.value.code == 401
        token = base64.b64encode(b"prometheus:s3cret").decode()
        request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=2) as r:
            assert b"plantwatch_ticks_total" in r.read()
    finally:
        server.stop()


def test_run_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: x\nstate_dir: s\nsources: []\nexporter: {listen: '0.0.0.0'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "collector", "run", "-c", str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert result.returncode == 2
    assert "exporter.listen: must be host:port" in result.stderr
    assert "sources: List should have at least 1 item" in result.stderr
    assert not (tmp_path / "s").exists()


# -- /metrics over TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def tls_get(port: int, path: str, files: TlsFiles, client: Pair | None, auth: bool = True) -> tuple[int, bytes]:
    """A Python ssl client that verifies plantwatch's certificate and presents ``client`` if given."""
    context = ssl.create_default_context(cafile=str(files.server.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    headers = {"Authorization": "Basic " + base64.b64encode(b"prometheus:s3cret").decode()} if auth else {}
    # The certificate carries 127.0.0.1 as an IP SAN, so the name check runs against the loopback address.
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers=headers)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tls_server(tmp_path: Path, files: TlsFiles, client_ca: bool) -> MetricsServer:
    config, doc = demo_config(tmp_path)
    doc["exporter"]["tls"] = {"cert_file": str(files.server.cert), "key_file": str(files.server.key)}
    if client_ca:
        doc["exporter"]["tls"]["client_ca_file"] = str(files.client.cert)
    (tmp_path / "scrape-password").write_text("s3cret\n")
    doc["exporter"]["basic_auth"] = {"username": "prometheus", "password": {"file": str(tmp_path / "scrape-password")}}
    config.write_text(yaml.safe_dump(doc))
    cfg = load_config(config)
    assert cfg.exporter.url.startswith("https://")
    registry = replayed_registry(tmp_path, per_tag_values=False)
    server = MetricsServer.from_config(registry, cfg.exporter.model_copy(update={"listen": "127.0.0.1:0"}))
    server.start()
    return server


def test_tls_with_client_certificate_required(tmp_path: Path, tls_files: TlsFiles) -> None:
    server = tls_server(tmp_path, tls_files, client_ca=True)
    try:
        status, body = tls_get(server.port, "/metrics", tls_files, tls_files.client)
        assert status == 200 and b"plantwatch_ticks_total" in body
        assert tls_get(server.port, "/healthz", tls_files, tls_files.client, auth=False) == (200, b"ok\n")
        # Basic auth still applies over TLS.
        assert tls_get(server.port, "/metrics", tls_files, tls_files.client, auth=False)[0] == 401
        # No client certificate, or one the configured CA did not sign: the handshake is refused.
        for client in (None, tls_files.stranger):
            with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
                tls_get(server.port, "/metrics", tls_files, client)
        deadline = time.monotonic() + 5
        while server.httpd.handshake_failures < 2 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.05)
        assert server.httpd.handshake_failures >= 2  # type: ignore[attr-defined]
        # Plain HTTP on the TLS port gets nothing, and the server keeps serving afterwards.
        with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert tls_get(server.port, "/metrics", tls_files, tls_files.client)[0] == 200
    finally:
        server.stop()


def test_tls_without_client_ca_serves_any_client(tmp_path: Path, tls_files: TlsFiles) -> None:
    server = tls_server(tmp_path, tls_files, client_ca=False)
    try:
        assert tls_get(server.port, "/metrics", tls_files, None)[0] == 200
    finally:
        server.stop()


def test_tls_curl_with_and_without_client_certificate(tmp_path: Path, tls_files: TlsFiles) -> None:
    """An independent client: curl, resolving the certificate's name to loopback."""
    server = tls_server(tmp_path, tls_files, client_ca=True)
    url = f"https://{SERVER_NAME}:{server.port}/metrics"
    base = ["curl", "-sS", "--max-time", "5", "--resolve", f"{SERVER_NAME}:{server.port}:127.0.0.1"]
    base += ["--cacert", str(tls_files.server.cert), "-u", "prometheus:s3cret"]
    try:
        ok = subprocess.run(
            [*base, "--cert", str(tls_files.client.cert), "--key", str(tls_files.client.key), url],
            capture_output=True,
            timeout=20,
        )
        assert ok.returncode == 0, ok.stderr
        assert b"plantwatch_ticks_total" in ok.stdout
        refused = subprocess.run([*base, url], capture_output=True, timeout=20)
        assert refused.returncode != 0 and b"plantwatch_ticks_total" not in refused.stdout
    finally:
        server.stop()


@pytest.mark.parametrize(
    "tls, problem",
    [
        ({"key_file": "server.pem"}, "exporter.tls.cert_file: required"),
        ({"cert_file": "missing.pem", "key_file": "server.pem"}, "exporter.tls.cert_file: no such file"),
        ({"cert_file": "server-cert.pem", "key_file": "server.pem", "client_ca_file": "nope.pem"},
         "exporter.tls.client_ca_file: no such file"),
        ({"cert_file": "server-cert.pem", "key_file": "other.pem"}, "exporter.tls: cannot load the certificate"),
        ({"cert_file": "server-cert.pem", "key_file": "server.pem", "verify": 1}, "exporter.tls.verify: unknown key"),
    ],
)  # fmt: skip
def test_tls_config_errors_name_the_field(tmp_path: Path, tls_files: TlsFiles, tls: dict, problem: str) -> None:
    shutil.copy(tls_files.server.cert, tmp_path / "server-cert.pem")
    shutil.copy(tls_files.server.key, tmp_path / "server.pem")
    shutil.copy(tls_files.stranger.key, tmp_path / "other.pem")
    config, doc = demo_config(tmp_path)
    doc["exporter"]["tls"] = tls
    config.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert problem in raised.value.render()
