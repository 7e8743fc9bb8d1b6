"""``plantwatch posture``: the security posture of every source and sink, from the config alone.

An assessor files this report: per source the protocol, the channel's
security (OPC-UA policy and mode, TLS on or off), how plantwatch
authenticates, when the certificates it relies on expire, and whether a
credential sits inline in the config file instead of ``{env: ...}`` or
``{file: ...}``. Nothing is contacted: this is what the config commits
plantwatch to, not a scan.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.config import PlantConfig, load_config
from collector.insecure import inline_secrets, world_readable

EXPIRY_WARNING_DAYS = 30


@dataclass
class CertInfo:
    role: str  # client certificate, server certificate, CA
    path: str
    not_after: str | None = None
    not_after_ts: float | None = None
    days_left: int | None = None
    error: str | None = None


@dataclass
class Posture:
    name: str
    section: str  # source | sink
    protocol: str
    security: str  # what protects the channel
    authentication: str
    certificates: list[CertInfo] = field(default_factory=list)
    inline_credentials: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def certificate(role: str, path: Path | None, now: datetime.datetime) -> CertInfo | None:
    """The earliest expiry among the certificates in a PEM bundle or a DER file."""
    if path is None:
        return None
    info = CertInfo(role, str(path))
    try:
        data = Path(path).read_bytes()
        certs = (
            x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [x509.load_der_x509_certificate(data)]
        )
    except (OSError, ValueError) as exc:
        info.error = f"unreadable: {exc}"
        return info
    not_after = min(c.not_valid_after_utc for c in certs)
    info.not_after = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    info.not_after_ts = not_after.timestamp()
    info.days_left = (not_after - now).days
    return info


def _source_posture(src: Any, now: datetime.datetime) -> Posture:
    kind = src.kind
    certs: list[CertInfo | None] = []
    keys: list[Path | None] = []
    if kind == "opcua":
        sec = src.security
        security = "None" if sec.policy == "None" else f"{sec.policy} {sec.mode}"
        auth = f"user {src.username}" if src.username else "anonymous"
        if sec.policy != "None" and sec.certificate is not None:
            auth += " + application certificate"
        certs += [certificate("client certificate", sec.certificate, now)]
        certs += [certificate("server certificate (pinned)", sec.server_certificate, now)]
        keys.append(sec.private_key)
        p = Posture(src.name, "source", f"OPC-UA {src.endpoint}", security, auth)
        if sec.policy == "None":
            p.findings.append("no channel security: readings can be read and forged on the wire")
        elif sec.mode == "Sign":
            p.findings.append("signed but not encrypted: readings are visible on the wire")
        if sec.policy != "None" and sec.server_certificate is None:
            p.findings.append("server certificate trusted on first use, not pinned")
    elif kind == "mqtt":
        tls = src.tls
        security = "plain TCP" if tls is None else "TLS" + ("" if tls.verify_hostname else " (hostname not verified)")
        auth = f"user {src.username}" if src.username else "anonymous"
        if tls is not None and tls.cert_file is not None:
            auth += " + client certificate"
            certs += [certificate("client certificate", tls.cert_file, now)]
            keys.append(tls.key_file)
        if tls is not None:
            certs += [certificate("CA", tls.ca_file, now)]
        p = Posture(src.name, "source", f"MQTT {src.host}:{src.port}", security, auth)
        if tls is None:
            p.findings.append("no TLS: readings and the password cross the network in clear")
        elif not tls.verify_hostname:
            p.findings.append("TLS without hostname verification")
    elif kind == "modbus":
        tls = getattr(src, "tls", None)
        security = "TLS" if tls is not None else "plain TCP"
        p = Posture(src.name, "source", f"Modbus TCP {src.host}:{src.port} unit {src.unit_id}", security, "none")
        if tls is None:
            p.findings.append("Modbus TCP has no authentication or encryption: isolate the network segment")
    else:
        p = Posture(src.name, "source", f"{kind} {getattr(src, 'path', '')}".strip(), "local file", "n/a")
    p.certificates = [c for c in certs if c is not None]
    for key in keys:
        if world_readable(key):
            p.findings.append(f"private key {key} is readable by other users")
    return p


def _sink_posture(sink: Any, now: datetime.datetime) -> Posture:
    if sink.kind == "syslog":
        security = {"udp": "plain UDP", "tcp": "plain TCP", "tls": "TLS"}[sink.transport]
        if sink.transport == "tls" and sink.tls is not None and not sink.tls.verify:
            security += " (certificate not verified)"
        p = Posture(sink.name, "sink", f"syslog {sink.transport} {sink.host}:{sink.port}", security, "none")
        if sink.tls is not None:
            p.certificates = [
                c
                for c in (
                    certificate("CA", sink.tls.ca_file, now),
                    certificate("client certificate", sink.tls.cert_file, now),
                )
                if c is not None
            ]
        if sink.transport != "tls":
            p.findings.append("alerts leave the plant unencrypted")
    else:
        https = sink.url.startswith("https://")
        p = Posture(sink.name, "sink", f"webhook {sink.url}", "TLS" if https else "plain HTTP",
                    "bearer token" if sink.token is not None else "none")  # fmt: skip
        ca = certificate("CA", sink.ca_file, now)
        p.certificates = [ca] if ca is not None else []
        if not https:
            p.findings.append("alerts leave the plant unencrypted")
    return p


def assess(cfg: PlantConfig, raw: dict[str, Any], now: datetime.datetime | None = None) -> list[Posture]:
    now = now or _now()
    out: list[Posture] = []
    sections = (("sources", cfg.sources, _source_posture), ("sinks", getattr(cfg, "sinks", []), _sink_posture))
    for key, items, judge in sections:
        raw_items = raw.get(key) if isinstance(raw.get(key), list) else []
        for i, item in enumerate(items):
            p = judge(item, now)
            raw_item = raw_items[i] if i < len(raw_items) else {}
            p.inline_credentials = [f"{key}[{i}].{path}" for path in inline_secrets(item, raw_item)]
            for path in p.inline_credentials:
                p.findings.append(
                    f"credential inline in the config file at {path}; use {{file: PATH}} or {{env: NAME}}"
                )
            for cert in p.certificates:
                if cert.error:
                    p.findings.append(f"{cert.role} {cert.path}: {cert.error}")
                elif cert.days_left is not None and cert.days_left < 0:
                    p.findings.append(f"{cert.role} expired on {cert.not_after}")
                elif cert.days_left is not None and cert.days_left < EXPIRY_WARNING_DAYS:
                    p.findings.append(f"{cert.role} expires in {cert.days_left} days ({cert.not_after})")
            out.append(p)
    return out


def render(site: str, postures: list[Posture], now: datetime.datetime | None = None) -> str:
    now = now or _now()
    lines = [f"plantwatch security posture: site {site}, {now.strftime('%Y-%m-%dT%H:%M:%SZ')}"]
    for p in postures:
        lines.append(f"\n{p.section} {p.name}: {p.protocol}")
        lines.append(f"  channel security:   {p.security}")
        lines.append(f"  authentication:     {p.authentication}")
        for c in p.certificates:
            when = c.error or f"expires {c.not_after} ({c.days_left} days)"
            lines.append(f"  {c.role}: {c.path}, {when}")
        lines.append(f"  inline credentials: {', '.join(p.inline_credentials) or 'none'}")
        for finding in p.findings:
            lines.append(f"  ! {finding}")
    total = sum(len(p.findings) for p in postures)
    lines.append(f"\n{total} finding(s) in {len(postures)} source(s) and sink(s)")
    return "\n".join(lines)


def posture_report(path: str | Path, as_json: bool = False) -> str:
    cfg = load_config(path)
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    postures = assess(cfg, raw)
    if as_json:
        return json.dumps({"site": cfg.site, "endpoints": [asdict(p) for p in postures]}, indent=2)
    return render(cfg.site, postures)


class PostureCollector(Collector):
    """The posture on /metrics, assessed from the config at start and at each reload, not per scrape.

    ``plantwatch_endpoint_security_info`` says how each source and sink is protected;
    ``plantwatch_certificate_expiry_timestamp_seconds`` lets an alert rule warn weeks ahead;
    ``plantwatch_security_findings`` counts what the report flags.
    """

    def __init__(self, cfg: PlantConfig, path: Path | None) -> None:
        self.path = path
        self.site = cfg.site
        self.postures: list[Posture] = []
        self.refresh(cfg)

    def refresh(self, cfg: PlantConfig) -> None:
        raw: Any = {}
        if self.path is not None:
            try:
                raw = yaml.safe_load(Path(self.path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                raw = {}  # inline credentials then go unreported; the rest stands
        self.site = cfg.site
        self.postures = assess(cfg, raw if isinstance(raw, dict) else {})

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(
            "plantwatch_endpoint_security",
            "How each source and sink is protected, from the config.",
            labels=["site", "section", "endpoint"],
        )
        expiry = GaugeMetricFamily(
            "plantwatch_certificate_expiry_timestamp_seconds",
            "When a certificate a source or sink relies on stops being valid.",
            labels=["site", "endpoint", "role", "path"],
        )
        findings = GaugeMetricFamily(
            "plantwatch_security_findings",
            "Security findings per source and sink (see plantwatch posture).",
            labels=["site", "section", "endpoint"],
        )
        for p in self.postures:
            labels = [self.site, p.section, p.name]
            info.add_metric(
                labels,
                {
                    "protocol": p.protocol.split(" ")[0],
                    "channel": p.security,
                    "authentication": p.authentication,
                    "inline_credentials": str(bool(p.inline_credentials)).lower(),
                },
            )
            findings.add_metric(labels, len(p.findings))
            for c in p.certificates:
                if c.not_after_ts is not None:
                    expiry.add_metric([self.site, p.name, c.role, c.path], c.not_after_ts)
        yield info
        yield expiry
        yield findings
