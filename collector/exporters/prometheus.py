"""Prometheus exposition, read from the pipeline's arrays at scrape time.

Nothing here runs per sample: a custom collector walks the current view
(copied once per frame) and the counters when Prometheus scrapes. Every
metric carries the ``site`` label; per-tag series are one per (tag, detector)
at most, and per-tag values (value, quality, configured limits) can be
switched off. The HTTP side serves /metrics and /healthz, optionally behind
basic auth and over TLS with an optional client-certificate check.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from collector import __version__
from collector.alerts import STATE_NAMES
from collector.exporters.tls import server_context
from collector.pipeline import LATENCY_BUCKETS, Pipeline
from collector.queue import SampleQueue
from collector.receivers import Receiver
from collector.sources import TagConfig

if TYPE_CHECKING:
    from collector.config import ExporterConfig


log = logging.getLogger("plantwatch.exporter")

HANDSHAKE_TIMEOUT_S = 10.0


@dataclass
class DaemonCounters:
    """Counters the daemon keeps outside the pipeline (journal, snapshots)."""

    journal_lines: int = 0
    snapshots: int = 0
    last_snapshot_time: float = math.nan
    restored: bool = False
    baseline_version: str = ""  # the activated baseline (plantwatch baseline) the detectors grew from, if any


class PlantCollector(Collector):
    def __init__(
        self,
        site: str,
        pipeline: Pipeline,
        queue: SampleQueue,
        receivers: list[Receiver],
        counters: DaemonCounters,
        per_tag_values: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.pipeline = pipeline
        self.queue = queue
        self.receivers = receivers
        self.counters = counters
        self.per_tag_values = per_tag_values
        self.clock = clock
        cfg = pipeline.cfg
        self._tag_source = [cfg.sources[i].name for i in cfg.tag_sources()]
        self._tag_unit = [t.unit for t in cfg.tags]
        self._tag_limits = _limit_rows(cfg.tags, self._tag_source)

    def collect(self) -> Iterator[Metric]:
        site = self.site
        yield from self._build_info()
        yield from self._sources()
        yield from self._pipeline_metrics()
        yield from self._tags()
        view = self.pipeline.view
        firing = GaugeMetricFamily(
            "plantwatch_alerts_firing", "Alerts firing now, by severity.", labels=["site", "severity"]
        )
        for severity, count in view.firing.items():
            firing.add_metric([site, severity], count)
        yield firing
        transitions = CounterMetricFamily(
            "plantwatch_alert_transitions",
            "Alert transitions journaled since start, by event and severity.",
            labels=["site", "event", "severity"],
        )
        for (event, severity), count in sorted(self.pipeline.alerts.transitions_by_severity.items()):
            transitions.add_metric([site, event, severity], count)
        yield transitions
        warm = GaugeMetricFamily(
            "plantwatch_detector_warm_tags",
            "Tags each detector is scoring (past warm-up).",
            labels=["site", "detector"],
        )
        for detector, count in view.warm.items():
            warm.add_metric([site, detector], count)
        yield warm

    def _build_info(self) -> Iterable[Metric]:
        info = InfoMetricFamily("plantwatch_build", "plantwatch version and Python.", labels=["site"])
        info.add_metric([self.site], {"version": __version__, "python": sys.version.split()[0]})
        yield info

    def _sources(self) -> Iterable[Metric]:
        site = self.site
        labels = ["site", "source", "kind"]
        up = GaugeMetricFamily("plantwatch_source_up", "1 if the source is connected and delivering.", labels=labels)
        samples = CounterMetricFamily("plantwatch_source_samples", "Samples received from the source.", labels=labels)
        reconnects = CounterMetricFamily("plantwatch_source_reconnects", "Reconnections of the source.", labels=labels)
        age = GaugeMetricFamily(
            "plantwatch_source_last_sample_age_seconds", "Seconds since the source's last sample.", labels=labels
        )
        errors = CounterMetricFamily(
            "plantwatch_source_errors", "Source errors by kind.", labels=["site", "source", "kind", "error"]
        )
        now = self.clock()
        for r in self.receivers:
            key = [site, r.name, r.kind]
            st = r.status
            up.add_metric(key, 1.0 if st.up else 0.0)
            samples.add_metric(key, st.samples)
            reconnects.add_metric(key, st.reconnects)
            if not math.isnan(st.last_sample_time):
                age.add_metric(key, max(0.0, now - st.last_sample_time))
            for error, count in sorted(st.errors.items()):
                errors.add_metric([*key, error], count)
        yield from (up, samples, reconnects, age, errors)

    def _pipeline_metrics(self) -> Iterable[Metric]:
        site = self.site
        p, stats, asm = self.pipeline, self.pipeline.stats, self.pipeline.assembler
        yield _gauge("plantwatch_queue_depth", "Samples waiting in the queue.", site, self.queue.depth)
        yield _gauge("plantwatch_queue_capacity", "Samples the queue holds before it drops.", site, self.queue.capacity)
        dropped = CounterMetricFamily(
            "plantwatch_samples_dropped", "Samples given up, by reason.", labels=["site", "reason"]
        )
        for reason, count in (
            ("queue_full", self.queue.dropped),
            ("late", asm.late),
            ("too_early", asm.too_early),
            ("unknown_tag", asm.unknown_tag),
        ):
            dropped.add_metric([site, reason], count)
        yield dropped
        yield _counter("plantwatch_samples", "Samples taken into frames.", site, stats.samples)
        yield _counter(
            "plantwatch_samples_non_finite",
            "Samples whose value was NaN or infinite (kept as BAD).",
            site,
            stats.non_finite,
        )
        yield _counter("plantwatch_ticks", "Ticks scored.", site, stats.ticks)
        if not math.isnan(p.view.tick_ts):
            yield _gauge(
                "plantwatch_last_tick_timestamp_seconds", "Start of the last tick scored.", site, p.view.tick_ts
            )
        hist = HistogramMetricFamily(
            "plantwatch_pipeline_latency_seconds",
            "From the first sample of a tick arriving to the tick being scored.",
            labels=["site"],
        )
        cumulative = stats.latency_buckets.cumsum()
        buckets = [(_le(b), float(c)) for b, c in zip(LATENCY_BUCKETS, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        hist.add_metric([site], buckets, stats.latency_sum)
        yield hist
        c = self.counters
        yield _counter("plantwatch_journal_lines", "Alert journal lines written since start.", site, c.journal_lines)
        yield _counter("plantwatch_snapshots", "State snapshots written since start.", site, c.snapshots)
        if not math.isnan(c.last_snapshot_time):
            yield _gauge(
                "plantwatch_snapshot_last_timestamp_seconds",
                "When the last snapshot was written.",
                site,
                c.last_snapshot_time,
            )
        yield _gauge("plantwatch_state_restored", "1 if learned state was restored at start.", site, float(c.restored))
        if c.baseline_version:
            info = GaugeMetricFamily(
                "plantwatch_baseline_info",
                "The activated baseline version the detectors grew from (plantwatch baseline).",
                labels=["site", "version"],
            )
            info.add_metric([site, c.baseline_version], 1.0)
            yield info

    def _tags(self) -> Iterable[Metric]:
        site = self.site
        view = self.pipeline.view
        names = self.pipeline.tag_names
        if self.per_tag_values:
            value = GaugeMetricFamily(
                "plantwatch_tag_value", "Last value of the tag.", labels=["site", "source", "tag", "unit"]
            )
            quality = GaugeMetricFamily(
                "plantwatch_tag_quality",
                "Quality of the tag's last sample: 0 none, 1 bad, 2 uncertain, 3 good.",
                labels=["site", "source", "tag"],
            )
            for j, tag in enumerate(names):
                v = float(view.value[j])
                if not math.isnan(v):
                    value.add_metric([site, self._tag_source[j], tag, self._tag_unit[j]], v)
                quality.add_metric([site, self._tag_source[j], tag], int(view.quality[j]))
            yield value
            yield quality
            limit = GaugeMetricFamily(
                "plantwatch_tag_limit",
                "The tag's configured limits: range_low/range_high (warning), alarm_low/alarm_high (critical).",
                labels=["site", "source", "tag", "limit"],
            )
            for source, tag, which, bound in self._tag_limits:
                limit.add_metric([site, source, tag, which], bound)
            yield limit
        score = GaugeMetricFamily(
            "plantwatch_anomaly_score",
            "Anomaly score in [0, 1] at the last tick; 0.5 = at the limit.",
            labels=["site", "tag", "detector"],
        )
        state = GaugeMetricFamily(
            "plantwatch_alert_state",
            "Alert state per tag and detector: " + ", ".join(f"{i} {n}" for i, n in enumerate(STATE_NAMES)) + ".",
            labels=["site", "tag", "detector"],
        )
        scores = view.scores.tolist()
        states = view.alert_state.tolist()
        for d, detector in enumerate(self.pipeline.bank.names):
            srow, arow = scores[d], states[d]
            for j, tag in enumerate(names):
                score.add_metric([site, tag, detector], srow[j])
                state.add_metric([site, tag, detector], arow[j])
        yield score
        yield state


def _limit_rows(tags: Sequence[TagConfig], sources: Sequence[str]) -> list[tuple[str, str, str, float]]:
    """(source, tag, limit, bound) for every configured limit: static, so built once, not per scrape."""
    rows = []
    for tag, source in zip(tags, sources, strict=True):
        for prefix, bounds in (("range", tag.range), ("alarm", tag.alarm_range)):
            if bounds is not None:
                rows.append((source, tag.name, f"{prefix}_low", float(bounds[0])))
                rows.append((source, tag.name, f"{prefix}_high", float(bounds[1])))
    return rows


def _gauge(name: str, doc: str, site: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["site"])
    g.add_metric([site], value)
    return g


def _counter(name: str, doc: str, site: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["site"])
    c.add_metric([site], value)
    return c


def _le(bound: float) -> str:
    return repr(float(bound))


# -- HTTP ----------------------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _TlsMixin:
    """Wraps each accepted connection in TLS; the handshake runs in the request's own thread.

    Wrapping the listening socket instead would handshake inside ``accept``, so
    one slow or hostile client would stall every scrape behind it.
    """

    ssl_context: ssl.SSLContext
    handshake_failures: int = 0

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()  # type: ignore[misc]
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: ssl.SSLSocket, client_address: object) -> None:
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            # No certificate, a certificate from another CA, plain HTTP on the TLS port: refused, not logged per try.
            self.handshake_failures += 1
            log.debug("TLS handshake refused", extra={"client": str(client_address), "reason": str(exc)})
            return
        request.settimeout(None)
        super().finish_request(request, client_address)  # type: ignore[misc]


class _TlsServer(_TlsMixin, _Server):
    pass


class _TlsServer6(_TlsMixin, _Server6):
    pass


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not log events."""


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on the configured address, with optional basic auth and TLS.

    /healthz and /readyz answer without basic auth: a service manager or a load
    balancer probing them holds no scrape credentials, and they reveal no plant data.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        readiness: Callable[[], tuple[str, bytes]] | None = None,
    ) -> None:
        metrics = make_wsgi_app(registry)
        expected = None
        if credentials:
            expected = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()

        def app(environ, start_response):  # type: ignore[no-untyped-def]
            path = environ.get("PATH_INFO", "/")
            if path == "/healthz":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            if path == "/readyz" and readiness is not None:
                status, body = readiness()
                start_response(status, [("Content-Type", "application/json")])
                return [body]
            if expected is not None and not hmac.compare_digest(
                environ.get("HTTP_AUTHORIZATION", "").encode(), expected.encode()
            ):
                start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="plantwatch"')])
                return [b"unauthorized\n"]
            if path not in ("/", "/metrics"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found\n"]
            return metrics(environ, start_response)

        ipv6 = ":" in host
        server_class: type[_Server]
        if ssl_context is None:
            server_class = _Server6 if ipv6 else _Server
        else:
            server_class = _TlsServer6 if ipv6 else _TlsServer
        self.httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        if ssl_context is not None:
            self.httpd.ssl_context = ssl_context  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    @classmethod
    def from_config(
        cls,
        registry: CollectorRegistry,
        exporter: ExporterConfig,
        readiness: Callable[[], tuple[str, bytes]] | None = None,
    ) -> MetricsServer:
        """The server the exporter section describes: address, basic auth, TLS; /readyz from ``readiness``."""
        auth = exporter.basic_auth
        credentials = (auth.username, auth.password.get_secret_value()) if auth else None
        tls = exporter.tls
        context = server_context(tls.cert_file, tls.key_file, tls.client_ca_file) if tls else None
        return cls(registry, exporter.host, exporter.port, credentials, context, readiness)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
