"""The receiver interface: what every protocol source implements, and what it is given.

A receiver reads one source and pushes ``SampleBatch`` objects into the
pipeline's queue. It only ever reads: no receiver may write to a controller.
It never lets an I/O error escape ``run``: it marks itself down, counts the
error by kind, and retries; the daemon goes on.
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from collector.queue import SampleQueue
from collector.sources import SourceBase


@dataclass
class SourceStatus:
    """Health of one source, read by the exporter at scrape time; updated per batch, not per sample."""

    up: bool = False
    samples: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    last_sample_time: float = float("nan")  # wall clock of the last sample received
    finished: bool = False

    def count_error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] += n


@dataclass(frozen=True)
class ReceiverContext:
    """What the daemon hands a receiver: where its tags go and where to push samples."""

    index: int  # position of the source in the config
    tag_index: Mapping[str, int]  # the source's own tag key (column, node, register) -> frame column
    queue: SampleQueue
    tick_s: float
    log: logging.Logger
    clock: Callable[[], float] = time.time


def reconnect_delay(failures: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter: min_s doubled per failure, at most max_s, drawn in [d/2, d].

    The jitter keeps many sources that lost the same server from reconnecting in lock step.
    """
    delay = min(max_s, min_s * 2.0 ** min(failures, 30))
    return delay * (rng or random).uniform(0.5, 1.0)


class Receiver(ABC):
    kind: ClassVar[str]
    options_model: ClassVar[type[SourceBase]]
    # Live receivers' timestamps follow the wall clock; the pipeline closes their
    # ticks by wall time. Others (a recording) promise a watermark in each batch.
    live: ClassVar[bool] = True

    def __init__(self, options: SourceBase, context: ReceiverContext) -> None:
        self.options = options
        self.context = context
        self.status = SourceStatus()

    @property
    def name(self) -> str:
        return self.options.name

    @abstractmethod
    async def run(self) -> None:
        """Read until cancelled (or, for a finite source, until its end); never raise on I/O."""
