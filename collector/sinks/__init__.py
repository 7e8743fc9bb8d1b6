"""Alert sinks: where alert transitions go besides the journal and /metrics.

``SINKS`` maps a kind to its class (explicit, no registration by import).
``AlertSinks`` is what the runner holds: it stamps each journaled transition
with the site and the tag's description, and offers it to every sink that
forwards its severity, without ever blocking the detection loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from collector.journal import read_journal
from collector.sinks.base import Alert, Sink, SinkStats
from collector.sinks.options import SinkConfig, SyslogSinkConfig, WebhookSinkConfig, sink_problems
from collector.sinks.syslog import SyslogSink
from collector.sinks.webhook import WebhookSink

SINKS: dict[str, type[Sink]] = {SyslogSink.kind: SyslogSink, WebhookSink.kind: WebhookSink}
SPOOL_DIR = "sinks"

log = logging.getLogger("plantwatch.sinks")


def build_sink(options: Any, severity_order: Sequence[str], state_dir: Path) -> Sink:
    if isinstance(options, WebhookSinkConfig):
        return WebhookSink(options, severity_order, state_dir / SPOOL_DIR)
    if isinstance(options, SyslogSinkConfig):
        return SyslogSink(options, severity_order)
    raise ValueError(f"no sink of kind {getattr(options, 'kind', None)!r}")


class AlertSinks:
    """Every configured sink, fed from the runner after each journal write."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        site: str = "",
        descriptions: Mapping[str, str] | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.site = site
        self.descriptions = dict(descriptions or {})

    @classmethod
    def from_config(cls, cfg: Any) -> AlertSinks:
        order = [s.name for s in cfg.alerting.severities]
        sinks = [build_sink(options, order, cfg.state_dir) for options in getattr(cfg, "sinks", [])]
        descriptions = {t.name: t.description for t in cfg.tags if t.description}
        return cls(sinks, cfg.site, descriptions)

    def start(self, journal: Path | None = None, journal_seq: int = 0) -> None:
        """Start each sink's thread; a durable sink first takes what the journal has that it missed.

        ``journal_seq`` is the journal's last sequence number: a webhook configured for the first
        time starts after it instead of sending the whole history.
        """
        for sink in self.sinks:
            if isinstance(sink, WebhookSink):
                sink.start_from(journal_seq)
            if journal is not None and isinstance(sink, WebhookSink):
                missed = sink.catch_up(self.stamp(rec) for rec in read_journal(journal, after_seq=sink.spool.last_seq))
                if missed:
                    log.info("alerts taken from the journal for a sink", extra={"sink": sink.name, "count": missed})
            sink.start()

    def stamp(self, record: Mapping[str, object]) -> dict[str, object]:
        alert = {k: v for k, v in record.items() if k != "written"}
        alert["site"] = self.site
        description = self.descriptions.get(str(record.get("tag")))
        if description:
            alert["description"] = description
        return alert

    def publish(self, records: Iterable[Mapping[str, object]]) -> None:
        """Called on the detection loop: only non-blocking hand-offs happen here."""
        if not self.sinks:
            return
        for record in records:
            alert = self.stamp(record)
            for sink in self.sinks:
                if sink.wants(alert):
                    sink.offer(alert)

    def stop(self, grace_s: float = 5.0) -> None:
        for sink in self.sinks:
            sink.stop(grace_s)

    def __len__(self) -> int:
        return len(self.sinks)


__all__ = [
    "SINKS",
    "Alert",
    "AlertSinks",
    "Sink",
    "SinkConfig",
    "SinkStats",
    "SyslogSink",
    "WebhookSink",
    "build_sink",
    "sink_problems",
]
