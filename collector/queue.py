"""The bounded queue between receivers and the pipeline, with a named overflow policy.

Capacity is counted in samples, not batches, so a flood from one source
cannot hide behind a few large batches. Every sample given up is counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal

from collector.samples import SampleBatch

Overflow = Literal["drop_oldest", "drop_newest"]


class SampleQueue:
    """FIFO of sample batches; single event loop, no locks.

    ``put_nowait`` is for live receivers, which must never stall on the
    pipeline: when full it applies the overflow policy. ``put`` is for
    sources that can wait (a recording), so that replay loses nothing.
    """

    def __init__(self, capacity: int, overflow: Overflow = "drop_oldest") -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.overflow: Overflow = overflow
        self.depth = 0
        self.dropped = 0
        self._batches: deque[SampleBatch] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def put_nowait(self, batch: SampleBatch) -> None:
        size = len(batch)
        if self.depth + size > self.capacity and size:
            if self.overflow == "drop_newest":
                self.dropped += size
                return
            markers = []  # end-of-stream markers carry no samples and are never dropped
            while self._batches and self.depth + size > self.capacity:
                old = self._batches.popleft()
                if not len(old):
                    markers.append(old)
                    continue
                self.depth -= len(old)
                self.dropped += len(old)
            self._batches.extendleft(reversed(markers))
        self._append(batch)

    async def put(self, batch: SampleBatch) -> None:
        # A batch larger than the whole queue waits for an empty queue, then goes in.
        while self.depth and self.depth + len(batch) > self.capacity:
            self._writable.clear()
            await self._writable.wait()
        self._append(batch)

    def _append(self, batch: SampleBatch) -> None:
        self._batches.append(batch)
        self.depth += len(batch)
        self._readable.set()

    def drain(self) -> list[SampleBatch]:
        """Everything queued now, oldest first."""
        batches = list(self._batches)
        self._batches.clear()
        self.depth = 0
        self._readable.clear()
        self._writable.set()
        return batches

    async def wait(self, timeout: float) -> bool:
        """Wait until something is queued or ``timeout`` passes; True if something is."""
        if self._batches:
            return True
        try:
            await asyncio.wait_for(self._readable.wait(), timeout)
        except TimeoutError:
            return False
        return True
