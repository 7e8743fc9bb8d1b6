"""The replay source: a recording fed through the same pipeline as a live controller.

In the daemon it plays in real time (or ``speed`` times faster), optionally
shifted to the present and looped, which makes a live demo without a plant.
For ``plantwatch replay`` it reads as fast as the pipeline takes it, with the
recording's own timestamps. Either way every batch carries a watermark (the
last timestamp sent), so ticks close on the recording's time, never on the
wall clock: that is what makes live and replay verdicts identical.
"""

from __future__ import annotations

import asyncio
import math
from typing import ClassVar

import numpy as np

from collector.logs import LogOnce
from collector.receivers.base import Receiver, ReceiverContext
from collector.receivers.replay.options import ReplayOptions
from collector.receivers.replay.recording import Chunk, Recording, RecordingError
from collector.samples import Quality, SampleBatch

MAX_CELLS_PER_BATCH = 1 << 18


class ReplayReceiver(Receiver):
    kind: ClassVar[str] = "replay"
    options_model: ClassVar[type[ReplayOptions]] = ReplayOptions
    live: ClassVar[bool] = False

    def __init__(self, options: ReplayOptions, context: ReceiverContext, *, realtime: bool = True) -> None:
        super().__init__(options, context)
        self.options: ReplayOptions = options
        self.realtime = realtime
        self.keys = [tag.source_key for tag in options.tags]
        self._tag_ids = np.array([context.tag_index[k] for k in self.keys], dtype=np.int32)
        self.rows_sent = 0
        self._warn_once = LogOnce(context.log)

    def open(self) -> Recording:
        return Recording(self.options, self.keys)

    async def run(self) -> None:
        log = self.context.log
        try:
            recording = self.open()
            self.status.up = True
            await self._play(recording)
        except (OSError, RecordingError) as exc:
            self.status.count_error("recording")
            log.error("replay source failed", extra={"source": self.name, "error": str(exc)})
        finally:
            self.status.up = False
            self.status.finished = True
            await self.context.queue.put(SampleBatch.end_of_stream(self.context.index))

    async def _play(self, recording: Recording) -> None:
        opts = self.options
        rows = max(1, MAX_CELLS_PER_BATCH // max(1, len(self.keys)))
        offset: float | None = None if (self.realtime and opts.rebase) else 0.0
        started: tuple[float, float] | None = None  # (wall clock, recording time) at the first row
        while True:
            first_ts = last_ts = math.nan
            for chunk in recording.chunks(rows):
                if chunk.malformed:
                    self.status.count_error("malformed", chunk.malformed)
                    self._warn_once(
                        "malformed", "cells that are not numbers skipped", source=self.name, line=chunk.first_row
                    )
                if offset is None:
                    tick = self.context.tick_s
                    offset = math.ceil((self.context.clock() - chunk.ts[0]) / tick) * tick
                ts = chunk.ts + offset
                if math.isnan(first_ts):
                    first_ts = float(ts[0])
                last_ts = float(ts[-1])
                if not self.realtime:
                    await self._send(chunk, ts, slice(None))
                    continue
                if started is None:
                    started = (self.context.clock(), float(ts[0]))
                await self._pace(chunk, ts, started)
            if not (self.realtime and opts.loop) or math.isnan(first_ts):
                return
            # Time moves on across loops: the next pass starts one row interval after this one ended.
            step = opts.row_interval_s if opts.timestamp_column is None else self.context.tick_s
            offset = (offset or 0.0) + (last_ts - first_ts) + step

    async def _pace(self, chunk: Chunk, ts: np.ndarray, started: tuple[float, float]) -> None:
        wall0, rec0 = started
        due = wall0 + (ts - rec0) / self.options.speed
        sent = 0
        while sent < len(ts):
            now = self.context.clock()
            ready = int(np.searchsorted(due, now, side="right"))
            if ready > sent:
                await self._send(chunk, ts, slice(sent, ready))
                sent = ready
            else:
                await asyncio.sleep(min(0.5, max(0.0, float(due[sent]) - now)))

    async def _send(self, chunk: Chunk, ts: np.ndarray, rows: slice) -> None:
        values = chunk.values[rows]
        n_rows, n_tags = values.shape
        if not n_rows:
            return
        flat = values.ravel()
        present = ~np.isnan(flat)  # an empty cell is no sample; inf is a sample the pipeline flags
        tag = np.tile(self._tag_ids, n_rows)[present]
        row_ts = np.repeat(ts[rows], n_tags)[present]
        label = np.repeat(chunk.label[rows], n_tags)[present]
        count = int(present.sum())
        now = self.context.clock()
        batch = SampleBatch(
            source=self.context.index,
            tag=tag,
            value=flat[present],
            ts=row_ts,
            recv_ts=np.full(count, now),
            quality=np.full(count, Quality.GOOD, dtype=np.uint8),
            label=label,
            watermark=float(ts[rows][-1]),
        )
        await self.context.queue.put(batch)
        self.rows_sent += n_rows
        self.status.samples += count
        self.status.last_sample_time = now
