"""What receivers hand to the pipeline: samples, one tag reading each, in columnar batches.

A receiver may think in single readings (``Sample``), but the queue carries
``SampleBatch`` objects (numpy columns), so that the pipeline never touches a
Python object per reading on its hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import numpy as np


class Quality(IntEnum):
    """Quality of a reading, ordered from worst to best as in OPC-UA status codes.

    ``NONE`` means no reading arrived for the tag in a tick.
    """

    NONE = 0
    BAD = 1
    UNCERTAIN = 2
    GOOD = 3


class Sample(NamedTuple):
    """One reading of one tag, as a receiver saw it."""

    tag: int
    value: float
    source_ts: float
    recv_ts: float
    quality: Quality
    source: int


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Readings from one source, as parallel columns.

    ``watermark`` is the source's promise that no later batch will carry a
    timestamp below it; the frame assembler closes ticks behind the smallest
    watermark of all sources. ``None`` means the source keeps no such promise
    (a live protocol source), and wall-clock lateness decides instead.
    """

    source: int
    tag: np.ndarray  # int32 tag index
    value: np.ndarray  # float64
    ts: np.ndarray  # float64 seconds since the epoch, source time when known
    recv_ts: np.ndarray  # float64 seconds since the epoch, receive time
    quality: np.ndarray  # uint8 Quality
    label: np.ndarray | None = None  # per-sample ground truth from a recording, else None
    watermark: float | None = None

    def __len__(self) -> int:
        return int(self.tag.shape[0])

    @classmethod
    def from_samples(cls, source: int, samples: list[Sample], watermark: float | None = None) -> SampleBatch:
        """Columnise single readings; for receivers that get one value at a time."""
        n = len(samples)
        tag = np.fromiter((s.tag for s in samples), dtype=np.int32, count=n)
        value = np.fromiter((s.value for s in samples), dtype=np.float64, count=n)
        ts = np.fromiter((s.source_ts for s in samples), dtype=np.float64, count=n)
        recv = np.fromiter((s.recv_ts for s in samples), dtype=np.float64, count=n)
        quality = np.fromiter((s.quality for s in samples), dtype=np.uint8, count=n)
        return cls(source, tag, value, ts, recv, quality, watermark=watermark)

    @classmethod
    def end_of_stream(cls, source: int) -> SampleBatch:
        """An empty batch that tells the pipeline this source will send nothing more."""
        empty_f = np.empty(0, dtype=np.float64)
        return cls(
            source,
            np.empty(0, dtype=np.int32),
            empty_f,
            empty_f,
            empty_f,
            np.empty(0, dtype=np.uint8),
            watermark=float("inf"),
        )
