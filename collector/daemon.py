"""``plantwatch run``: the daemon's lifecycle around the shared runner.

Start: restore state, open the journal, serve /metrics, start receivers.
SIGTERM or SIGINT: stop receivers, score what they queued, fsync the journal,
snapshot, stop serving, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from collector import __version__
from collector.audit import AUDIT_FILE, AuditTrail
from collector.baseline import restore_active
from collector.config import PlantConfig
from collector.exporters.prometheus import MetricsServer, PlantCollector
from collector.health import Readiness
from collector.journal import AlertJournal
from collector.notify import notify, watchdog_interval
from collector.posture import PostureCollector
from collector.reload import Reloader
from collector.runner import Runner
from collector.sinks import AlertSinks
from collector.sinks.metrics import SinkCollector
from collector.state import StateStore

log = logging.getLogger("plantwatch.daemon")

JOURNAL = "alerts.jsonl"


async def serve(cfg: PlantConfig, config_path: Path | None = None) -> int:
    """Run until SIGTERM; with ``config_path``, SIGHUP re-reads it (see collector.reload)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(cfg.state_dir)
    with AlertJournal(cfg.state_dir / JOURNAL) as journal, AuditTrail(cfg.state_dir / AUDIT_FILE) as audit:
        sinks = AlertSinks.from_config(cfg)
        runner = Runner(cfg, journal, realtime=True, store=store, sinks=sinks, audit=audit)
        resumed = runner.restore()
        baseline = restore_active(runner, cfg.state_dir, audit)  # an activated baseline wins over an older snapshot
        if baseline is not None:
            audit.record("baseline_restored", **baseline, snapshot=str(store.path) if resumed else None)
        elif resumed:
            audit.record("baseline_restored", snapshot=str(store.path), journal_seq=journal.seq)
        else:
            audit.record("baseline_new", reason="no snapshot in state_dir; detectors learn from scratch")
        sinks.start(journal.path, journal.seq)
        registry = CollectorRegistry(auto_describe=False)

        def plant_collector(r: Runner) -> PlantCollector:
            return PlantCollector(
                r.cfg.site, r.pipeline, r.queue, r.receivers, r.counters, per_tag_values=r.cfg.exporter.per_tag_values
            )

        exported = [plant_collector(runner)]
        registry.register(exported[0])
        registry.register(SinkCollector(cfg.site, lambda: runner.sinks))
        posture = PostureCollector(cfg, config_path)
        registry.register(posture)

        def re_export(r: Runner) -> None:  # a reload replaced the pipeline or the receivers the exporter reads
            registry.unregister(exported[0])
            exported[0] = plant_collector(r)
            registry.register(exported[0])
            posture.refresh(r.cfg)

        reloader = Reloader(config_path, runner, audit, journal.path, re_export) if config_path else None
        if reloader is not None:
            registry.register(reloader)
        readiness = Readiness(  # lambdas: a reload may replace the receivers and the pipeline
            lambda: runner.receivers,
            lambda: runner.pipeline.bank.warm_tags(),
            lambda: runner.pipeline.bank.enabled_tags(),
        )
        server = MetricsServer.from_config(registry, cfg.exporter, readiness.respond)
        server.start()
        log.info(
            "plantwatch started",
            extra={
                "version": __version__,
                "site": cfg.site,
                "metrics": cfg.exporter.url,
                "sources": len(cfg.sources),
                "tags": len(cfg.tags),
                "state_dir": str(cfg.state_dir),
            },
        )
        audit.record("start", version=__version__, site=cfg.site, pid=os.getpid(), sources=len(cfg.sources))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request_stop() -> None:
            notify("STOPPING=1")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_stop)
        if reloader is not None:
            loop.add_signal_handler(signal.SIGHUP, reloader.requested.set)
        reloading = asyncio.create_task(reloader.serve() if reloader else asyncio.sleep(0), name="reload")
        notify(f"READY=1\nSTATUS=watching {len(cfg.tags)} tags from {len(cfg.sources)} sources")
        pinger = asyncio.create_task(_watchdog(watchdog_interval()), name="watchdog")
        try:
            await runner.run(stop)
        finally:
            pinger.cancel()
            reloading.cancel()
            server.stop()
            if runner.sinks is not None:
                runner.sinks.stop()
        audit.record("baseline_saved", snapshot=str(store.path), journal_seq=journal.seq)
        audit.record("stop", journal_lines=runner.counters.journal_lines, abandoned_receivers=len(runner.abandoned))
        log.info(
            "plantwatch stopped",
            extra={"journal_lines": runner.counters.journal_lines, "snapshot": str(store.path)},
        )
    if runner.abandoned:
        # The journal is closed and the snapshot written; a stuck receiver task would make
        # asyncio.run wait for it forever, so leave now with the clean exit code.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


async def _watchdog(interval: float | None) -> None:
    """WATCHDOG=1 from the event loop the runner shares: a stuck detection loop stops the pings."""
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
