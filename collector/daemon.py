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

from prometheus_client import CollectorRegistry

from collector import __version__
from collector.config import PlantConfig
from collector.exporters.prometheus import MetricsServer, PlantCollector
from collector.journal import AlertJournal
from collector.runner import Runner
from collector.state import StateStore

log = logging.getLogger("plantwatch.daemon")

JOURNAL = "alerts.jsonl"


async def serve(cfg: PlantConfig) -> int:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(cfg.state_dir)
    with AlertJournal(cfg.state_dir / JOURNAL) as journal:
        runner = Runner(cfg, journal, realtime=True, store=store)
        runner.restore()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            PlantCollector(
                cfg.site,
                runner.pipeline,
                runner.queue,
                runner.receivers,
                runner.counters,
                per_tag_values=cfg.exporter.per_tag_values,
            )
        )
        auth = cfg.exporter.basic_auth
        credentials = (auth.username, auth.password.get_secret_value()) if auth else None
        server = MetricsServer(registry, cfg.exporter.host, cfg.exporter.port, credentials)
        server.start()
        log.info(
            "plantwatch started",
            extra={
                "version": __version__,
                "site": cfg.site,
                "metrics": f"http://{cfg.exporter.listen}/metrics",
                "sources": len(cfg.sources),
                "tags": len(cfg.tags),
                "state_dir": str(cfg.state_dir),
            },
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await runner.run(stop)
        finally:
            server.stop()
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
