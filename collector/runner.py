"""The loop shared by ``plantwatch run`` and ``plantwatch replay``: one code path for both.

Receivers push batches; the runner drains the queue into the pipeline,
closes whatever ticks the watermark allows, journals the transitions and,
in the daemon, snapshots learned state now and then. Replay differs only in
its receivers (a recording read flat out) and in stopping when they finish.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from collector.audit import AuditTrail, SourceWatch
from collector.config import PlantConfig
from collector.exporters.prometheus import DaemonCounters
from collector.journal import AlertJournal, read_journal
from collector.logs import LogOnce
from collector.pipeline import FrameResult, Pipeline
from collector.queue import SampleQueue
from collector.receivers import RECEIVERS, Receiver, ReceiverContext
from collector.samples import SampleBatch
from collector.sinks import AlertSinks
from collector.state import StateStore

log = logging.getLogger("plantwatch.runner")

FrameHook = Callable[[FrameResult], None]
STOP_GRACE_S = 5.0


def build_receivers(
    cfg: PlantConfig, queue: SampleQueue, *, realtime: bool, clock: Callable[[], float] = time.time
) -> list[Receiver]:
    receivers: list[Receiver] = []
    column = 0
    for index, source in enumerate(cfg.sources):
        tag_index = {tag.source_key: column + j for j, tag in enumerate(source.tags)}
        column += len(source.tags)
        receivers.append(make_receiver(cfg, source, index, tag_index, queue, realtime=realtime, clock=clock))
    return receivers


def make_receiver(
    cfg: PlantConfig,
    source: Any,
    index: int,
    tag_index: dict[str, int],
    queue: SampleQueue,
    *,
    realtime: bool,
    clock: Callable[[], float] = time.time,
) -> Receiver:
    """One receiver whose batches carry ``index`` as their source and ``tag_index``'s columns."""
    context = ReceiverContext(
        index=index,
        tag_index=tag_index,
        queue=queue,
        tick_s=cfg.pipeline.tick_s,
        log=logging.getLogger(f"plantwatch.source.{source.name}"),
        clock=clock,
    )
    kwargs: dict[str, Any] = {} if realtime else {"realtime": False}
    return RECEIVERS[source.kind](source, context, **kwargs)


class Runner:
    def __init__(
        self,
        cfg: PlantConfig,
        journal: AlertJournal,
        *,
        realtime: bool,
        store: StateStore | None = None,
        on_frame: FrameHook | None = None,
        clock: Callable[[], float] = time.time,
        sinks: AlertSinks | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.cfg = cfg
        self.sinks = sinks
        self.audit = audit
        self.journal = journal
        self.store = store
        self.on_frame = on_frame
        self.clock = clock
        self.realtime = realtime
        self.queue = SampleQueue(cfg.pipeline.queue_capacity, cfg.pipeline.overflow)
        self.receivers = build_receivers(cfg, self.queue, realtime=realtime, clock=clock)
        self.pipeline = Pipeline(cfg, [r.live for r in self.receivers])
        self.source_watch = SourceWatch(self.receivers)
        # After a reload that moved columns, batches from receivers kept running are re-addressed:
        # emitted source id -> (pipeline source index, old column -> new column or None if unchanged).
        self.routes: dict[int, tuple[int, np.ndarray | None]] | None = None
        self.tasks: dict[Receiver, asyncio.Task[None]] = {}
        self.counters = DaemonCounters()
        self._next_snapshot = math.inf
        self.restored_meta: dict[str, Any] | None = None  # the snapshot's header, once restore() found one
        self.snapshot_meta: dict[str, Any] = {}  # carried into every snapshot (the baseline activation seen)
        self.abandoned: list[asyncio.Task[None]] = []  # receivers that ignored cancellation at shutdown
        self._warn_once = LogOnce(log)
        self._seen = {"non_finite": 0, "late": 0, "too_early": 0, "unknown_tag": 0, "queue_full": 0}

    # -- state ---------------------------------------------------------------------------------
    def restore(self) -> bool:
        """Resume from the last snapshot and the journal written after it; False if none."""
        if self.store is None:
            return False
        loaded = self.store.load()
        if loaded is None:
            return False
        arrays, meta = loaded
        self.pipeline.restore(arrays, meta)
        self.restored_meta = meta
        seq = int(meta.get("journal_seq", 0))
        applied = self.pipeline.alerts.apply_journal(read_journal(self.journal.path, after_seq=seq))
        self.counters.restored = True
        log.info(
            "state restored",
            extra={
                "snapshot": str(self.store.path),
                "last_tick_ts": meta.get("last_tick_ts"),
                "journal_after": applied,
            },
        )
        return True

    def snapshot(self) -> None:
        if self.store is None:
            return
        arrays, meta = self.pipeline.snapshot()
        meta.update(self.snapshot_meta)
        meta["journal_seq"] = self.journal.seq
        meta["written"] = self.clock()
        self.store.save(arrays, meta)
        self.counters.snapshots += 1
        self.counters.last_snapshot_time = self.clock()

    # -- loop ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, until_finished: bool = False) -> None:
        self.tasks = {r: asyncio.create_task(r.run(), name=f"receiver:{r.name}") for r in self.receivers}
        interval = self.cfg.pipeline.snapshot_interval_s
        self._next_snapshot = self.clock() + interval
        poll = min(0.25, self.cfg.pipeline.tick_s / 4)
        try:
            while not stop.is_set():
                await self.queue.wait(poll)
                self._take()
                if until_finished and self.pipeline.all_finished and not self.queue.depth:
                    break
                if self.store is not None and self.clock() >= self._next_snapshot:
                    self.snapshot()
                    self._next_snapshot = self.clock() + interval
                if not self.realtime:
                    await asyncio.sleep(0)  # let the recording refill the queue
        finally:
            await self.stop_receivers(list(self.tasks))
            self._take()  # what the receivers had already queued is scored, not lost
            self.snapshot()

    async def stop_receivers(self, receivers: list[Receiver]) -> None:
        """Cancel receivers' tasks (at shutdown, or the ones a reload replaced)."""
        pairs = [(r, self.tasks.pop(r)) for r in receivers if r in self.tasks]
        for _, task in pairs:
            task.cancel()
        # A receiver whose library swallows the cancellation must not hold the shutdown hostage:
        # after STOP_GRACE_S it is abandoned (and logged), and the journal and snapshot still get written.
        tasks = [task for _, task in pairs]
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S) if tasks else (set(), set())
        for r, task in pairs:
            if task in pending:
                self.abandoned.append(task)
                log.error("receiver did not stop; abandoned", extra={"source": r.name, "grace_s": STOP_GRACE_S})
            elif not task.cancelled() and task.exception() is not None:
                log.error("receiver stopped with an error", extra={"source": r.name, "error": repr(task.exception())})

    def _take(self) -> None:
        for batch in self.queue.drain():
            if self.routes is not None:
                routed = route(batch, self.routes)
                if routed is None:
                    continue  # from a receiver a reload removed
                batch = routed
            self.pipeline.feed(batch)
        if self.audit is not None:
            self.audit.record_many(self.source_watch.poll())
        self._report_losses()
        result = self.pipeline.advance(self.clock())
        if result is None:
            return
        if result.transitions:
            records = [t.as_record() for t in result.transitions]
            self.counters.journal_lines += self.journal.append(records)
            first = self.journal.seq - len(records) + 1  # the journal numbered them in this order
            records = [{"seq": first + k, **rec} for k, rec in enumerate(records)]
            if self.sinks is not None:
                self.sinks.publish(records)  # non-blocking hand-offs; each sink delivers in its own thread
            if self.audit is not None:
                self.audit.alert_transitions(records)
            for t in result.transitions:
                fields = {"tag": t.tag, "detector": t.detector, "severity": t.severity, "score": round(t.score, 3)}
                if t.reason is not None:
                    fields["reason"] = t.reason
                log.info(f"alert {t.event}", extra=fields)
        if self.on_frame is not None:
            self.on_frame(result)

    def _report_losses(self) -> None:
        """One log line per kind of loss; the counters on /metrics keep the full count."""
        asm = self.pipeline.assembler
        now = {
            "non_finite": self.pipeline.stats.non_finite,
            "late": asm.late,
            "too_early": asm.too_early,
            "unknown_tag": asm.unknown_tag,
            "queue_full": self.queue.dropped,
        }
        for kind, count in now.items():
            if count > self._seen[kind]:
                self._warn_once(kind, f"samples {kind.replace('_', ' ')}", count=count)
        self._seen = now


def route(batch: SampleBatch, routes: dict[int, tuple[int, np.ndarray | None]]) -> SampleBatch | None:
    """Re-address a batch from a receiver that kept running across a reload (one numpy take)."""
    target = routes.get(batch.source)
    if target is None:
        return None
    index, columns = target
    if columns is None:
        return batch if index == batch.source else replace(batch, source=index)
    return replace(batch, source=index, tag=columns[batch.tag])
