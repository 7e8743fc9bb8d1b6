"""SIGHUP: take a new config without losing what the running daemon has learned or connected.

The new file is validated whole first; an invalid one is refused (logged,
audited, counted) and the running config stays. A valid one is applied
between two passes of the runner's loop:

- a source whose settings are unchanged keeps its receiver, its task and its
  connection; if its columns moved (a source before it gained tags), its
  batches are re-addressed in the runner with one numpy take per batch;
- a new or changed source gets a new receiver; a removed one is stopped;
- the pipeline is rebuilt for the new tag list and detector settings and
  restored from the old one's state, matched by tag and detector name, so
  baselines and alert states carry over (new tags and detectors start cold);
- sinks whose settings changed are restarted (a webhook's spool carries over).

Changes that need new sockets or files (site, state_dir, exporter, pipeline)
are refused with the list of fields: restart for those.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.audit import AuditTrail
from collector.config import ConfigError, PlantConfig, load_config
from collector.notify import notify
from collector.pipeline import Pipeline
from collector.runner import Runner, make_receiver
from collector.sinks import AlertSinks, build_sink

log = logging.getLogger("plantwatch.reload")

RESTART_ONLY = ("site", "state_dir", "exporter", "pipeline")


class ReloadRefused(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {r}" for p, r in problems))


@dataclass
class ReloadOutcome:
    kept: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    pipeline_rebuilt: bool = False
    sinks_changed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.started or self.stopped or self.pipeline_rebuilt or self.sinks_changed)


def restart_only_changes(old: PlantConfig, new: PlantConfig) -> list[tuple[str, str]]:
    return [(name, "changed; takes effect only at a restart") for name in RESTART_ONLY
            if getattr(old, name) != getattr(new, name)]  # fmt: skip


async def apply_reload(runner: Runner, new: PlantConfig) -> ReloadOutcome:
    """Swap ``runner`` over to ``new``; raises ReloadRefused and changes nothing if it cannot."""
    old = runner.cfg
    problems = restart_only_changes(old, new)
    if problems:
        raise ReloadRefused(problems)
    outcome = ReloadOutcome(sinks_changed=old.sinks != new.sinks)
    runner._take()  # score what the old layout already queued

    by_name = {r.name: r for r in runner.receivers}
    receivers = []
    routes: dict[int, tuple[int, np.ndarray | None]] = {}
    next_id = max([len(old.sources), *(r.context.index + 1 for r in runner.receivers), *(runner.routes or {})])
    column = 0
    for index, source in enumerate(new.sources):
        tag_index = {tag.source_key: column + j for j, tag in enumerate(source.tags)}
        column += len(source.tags)
        kept = by_name.get(source.name)
        if kept is not None and kept.options == source:
            emitted = kept.context.tag_index
            moved = any(emitted[k] != tag_index[k] for k in tag_index)
            columns = None
            if moved:
                columns = np.full(max(emitted.values()) + 1, -1, dtype=np.int32)
                for key, col in emitted.items():
                    columns[col] = tag_index[key]
            routes[kept.context.index] = (index, columns)
            receivers.append(kept)
            outcome.kept.append(source.name)
        else:
            fresh = make_receiver(new, source, next_id, tag_index, runner.queue, realtime=runner.realtime,
                                  clock=runner.clock)  # fmt: skip
            routes[next_id] = (index, None)
            next_id += 1
            receivers.append(fresh)
            outcome.started.append(source.name)
    removed = [r for r in runner.receivers if r not in receivers]
    outcome.stopped = [r.name for r in removed]

    layout_same = [s.tags for s in old.sources] == [s.tags for s in new.sources]
    same_live = [r.live for r in receivers] == runner.pipeline.live
    if not (layout_same and same_live and old.detectors == new.detectors and old.alerting == new.alerting):
        pipeline = Pipeline(new, [r.live for r in receivers])
        arrays, meta = runner.pipeline.snapshot()
        pipeline.restore(arrays, meta)
        for j, receiver in enumerate(receivers):  # carry each kept source's stream position
            if receiver in runner.receivers:
                i = runner.receivers.index(receiver)
                pipeline.watermarks[j] = runner.pipeline.watermarks[i]
                pipeline.finished[j] = runner.pipeline.finished[i]
        runner.pipeline = pipeline
        outcome.pipeline_rebuilt = True

    identity = all(idx == src and cols is None for src, (idx, cols) in routes.items())
    old_receivers = runner.receivers
    runner.cfg = new
    runner.receivers = receivers
    runner.routes = None if identity else routes
    runner.source_watch = runner.source_watch.carried_to(receivers, old_receivers)
    for receiver in receivers:
        if receiver not in runner.tasks:
            runner.tasks[receiver] = asyncio.create_task(receiver.run(), name=f"receiver:{receiver.name}")
    await runner.stop_receivers(removed)
    return outcome


class Reloader(Collector):
    """Handles SIGHUP for the daemon and counts the outcomes for /metrics."""

    def __init__(
        self,
        path: Path,
        runner: Runner,
        audit: AuditTrail,
        journal: Path,
        on_applied: Callable[[Runner], None] | None = None,
    ) -> None:
        self.path = path
        self.runner = runner
        self.audit = audit
        self.journal = journal
        self.on_applied = on_applied
        self.results: Counter[str] = Counter({"applied": 0, "unchanged": 0, "refused": 0})
        self.requested = asyncio.Event()

    async def serve(self) -> None:
        """Wait for SIGHUPs (``requested``) and apply each; never raises."""
        while True:
            await self.requested.wait()
            self.requested.clear()
            notify("RELOADING=1")
            try:
                await self.reload()
            except Exception:  # a bug in a reload must not stop the daemon: the running config stays
                self.results["refused"] += 1
                log.exception("config reload failed; the running config stays")
            notify("READY=1")

    async def reload(self) -> str:
        try:
            new = await asyncio.to_thread(load_config, self.path)
            outcome = await apply_reload(self.runner, new)
        except (ConfigError, ReloadRefused) as exc:
            self.results["refused"] += 1
            problems = [f"{p}: {r}" if p else r for p, r in exc.problems]
            log.error("config reload refused; the running config stays", extra={"file": str(self.path),
                      "problems": problems})  # fmt: skip
            self.audit.record("reload_refused", file=str(self.path), problems=problems)
            return "refused"
        if not outcome.changed:
            self.results["unchanged"] += 1
            self.audit.record("reload", file=str(self.path), changed=False)
            log.info("config reloaded; nothing changed", extra={"file": str(self.path)})
            return "unchanged"
        if outcome.sinks_changed:
            await self._swap_sinks(new)
        if self.on_applied is not None:
            self.on_applied(self.runner)
        self.results["applied"] += 1
        fields = {"kept": outcome.kept, "started": outcome.started, "stopped": outcome.stopped,
                  "pipeline_rebuilt": outcome.pipeline_rebuilt, "sinks_changed": outcome.sinks_changed}  # fmt: skip
        self.audit.record("reload", file=str(self.path), changed=True, **fields)
        log.info("config reloaded", extra=fields)
        return "applied"

    async def _swap_sinks(self, new: PlantConfig) -> None:
        """Restart the sinks whose settings changed; the others go on untouched."""
        current = self.runner.sinks or AlertSinks([])
        old_by_name = {s.name: s for s in current.sinks}
        order = [s.name for s in new.alerting.severities]
        keep, fresh = [], []
        for options in new.sinks:
            sink = old_by_name.get(options.name)
            if (
                sink is not None
                and sink.options == options
                and sink.forwarded == frozenset(_forwarded_names(options, order))
            ):
                keep.append(sink)
            else:
                fresh.append(options)
        retired = [s for s in current.sinks if s not in keep]
        await asyncio.to_thread(AlertSinks(retired).stop)  # a webhook's spool is closed before its successor opens it
        started = AlertSinks([build_sink(o, order, new.state_dir) for o in fresh], new.site)
        started.start(self.journal, self.runner.journal.seq)
        descriptions = {t.name: t.description for t in new.tags if t.description}
        self.runner.sinks = AlertSinks([*keep, *started.sinks], new.site, descriptions)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "plantwatch_config_reloads", "SIGHUP reloads by result: applied, unchanged, refused.",
            labels=["site", "result"],
        )  # fmt: skip
        for result, count in sorted(self.results.items()):
            family.add_metric([self.runner.cfg.site, result], count)
        yield family


def _forwarded_names(options: object, order: list[str]) -> list[str]:
    from collector.sinks.base import _forwarded

    return sorted(_forwarded(options, order))  # type: ignore[arg-type]
