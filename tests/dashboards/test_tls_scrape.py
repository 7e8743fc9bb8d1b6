"""A real Prometheus scrapes ``plantwatch run`` over TLS with a client certificate, using prometheus-tls.yml.

The daemon serves /metrics with ``exporter.tls`` (certificate, key, client CA)
and basic auth; Prometheus runs the shipped https variant with only the target
and intervals substituted and the certificate files the config names put in
place. A second job without a client certificate, added to the copy as a
control, must fail to scrape: the client CA is what lets Prometheus in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.conftest import Daemon, demo_config
from tests.dashboards.live import Prometheus, configure
from tests.dashboards.tls_files import make_tls_files

PASSWORD = "scrape-over-tls"


def test_prometheus_scrapes_plantwatch_over_mutual_tls(tmp_path: Path, daemons: list[Daemon]) -> None:
    files = make_tls_files(tmp_path / "certs")
    config, doc = demo_config(tmp_path)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    doc["exporter"]["tls"] = {
        "cert_file": str(files.server.cert),
        "key_file": str(files.server.key),
        "client_ca_file": str(files.client.cert),
    }
    doc["exporter"]["basic_auth"] = {"username": "prometheus", "password": {"file": str(tmp_path / "password")}}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    listen = doc["exporter"]["listen"]
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemons.append(daemon)

    folder = tmp_path / "prometheus"
    prom_config = configure(folder, listen, config="prometheus-tls.yml")
    (folder / "plantwatch-tls").mkdir()
    shutil.copy(files.server.cert, folder / "plantwatch-tls" / "ca.pem")
    shutil.copy(files.client.cert, folder / "plantwatch-tls" / "prometheus.pem")
    shutil.copy(files.client.key, folder / "plantwatch-tls" / "prometheus-key.pem")
    (folder / "plantwatch-tls" / "password").write_text(PASSWORD + "\n")
    control = yaml.safe_load(prom_config.read_text())
    shipped_job = control["scrape_configs"][0]
    assert shipped_job["scheme"] == "https" and "cert_file" in shipped_job["tls_config"]
    stranger = {**shipped_job, "job_name": "no-client-cert"}
    stranger["tls_config"] = {k: v for k, v in shipped_job["tls_config"].items() if k not in ("cert_file", "key_file")}
    control["scrape_configs"].append(stranger)
    prom_config.write_text(yaml.safe_dump(control, sort_keys=False))

    prometheus = Prometheus(prom_config, folder)
    try:
        prometheus.wait(lambda: prometheus.query('up{job="plantwatch"} == 1'), 30, "scrape over TLS")
        ticks = prometheus.query('plantwatch_ticks_total{job="plantwatch",plant="oil"}')
        assert ticks and ticks[0]["metric"]["site"] == doc["site"]
        prometheus.wait(lambda: prometheus.query('up{job="no-client-cert"} == 0'), 10, "control job refused")
        targets = prometheus.api("targets")["activeTargets"]
        (refused,) = [t for t in targets if t["labels"]["job"] == "no-client-cert"]
        assert refused["health"] == "down" and refused["lastError"]
    finally:
        prometheus.stop()
