"""The sinks on /metrics: what each delivered, dropped and still owes; read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.sinks import AlertSinks, WebhookSink


class SinkCollector(Collector):
    def __init__(self, site: str, sinks: Callable[[], AlertSinks | None]) -> None:
        self.site = site
        self.sinks = sinks  # a getter: a reload may replace the set of sinks

    def collect(self) -> Iterator[Metric]:
        sinks = self.sinks()
        alerts = CounterMetricFamily(
            "plantwatch_sink_alerts",
            "Alerts per sink by outcome: delivered, dropped (queue or spool full), failed attempts.",
            labels=["site", "sink", "kind", "outcome"],
        )
        owed = GaugeMetricFamily(
            "plantwatch_sink_spool_alerts", "Alerts spooled on disk, not yet acknowledged.", labels=["site", "sink"]
        )
        for sink in sinks.sinks if sinks is not None else []:
            st = sink.stats
            for outcome, value in (("delivered", st.delivered), ("dropped", st.dropped), ("failed", st.failures)):
                alerts.add_metric([self.site, sink.name, sink.kind, outcome], value)
            if isinstance(sink, WebhookSink):
                owed.add_metric([self.site, sink.name], len(sink.spool.pending))
        yield alerts
        yield owed
