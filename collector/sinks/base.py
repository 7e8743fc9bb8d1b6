"""What every alert sink shares: a severity filter, a bounded hand-off and its own thread.

The detection loop only calls ``offer``: a ``put_nowait`` into a bounded
queue, never a socket or a disk write. A sink whose destination is slow or
gone fills its own queue and then drops (and counts) what does not fit;
detection never waits for it. Delivery happens in the sink's thread, which
``stop`` asks to finish what it holds within a grace period.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from collector.sinks.options import SinkBase

Alert = Mapping[str, object]  # one alert transition, as the journal writes it (with its seq)


@dataclass
class SinkStats:
    """Read by tests and logs; updated by the sink's thread and the hand-off."""

    offered: int = 0
    delivered: int = 0
    dropped: int = 0  # the hand-off or the spool was full
    failures: int = 0  # attempts that did not reach the destination
    last_error: str = ""


class Sink(ABC):
    kind: str = ""

    def __init__(self, options: SinkBase, severity_order: Sequence[str]) -> None:
        self.options = options
        self.name = options.name
        self.log = logging.getLogger(f"plantwatch.sink.{options.name}")
        self.stats = SinkStats()
        self.forwarded = _forwarded(options, severity_order)
        self.events = frozenset(options.events)
        self._handoff: queue.Queue[Alert] = queue.Queue(maxsize=options.handoff_capacity)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_full = False

    # -- called by the detection loop: never blocks ---------------------------------------------
    def wants(self, alert: Alert) -> bool:
        return alert.get("severity") in self.forwarded and alert.get("event") in self.events

    def offer(self, alert: Alert) -> bool:
        """Hand an alert to the sink's thread; False (and counted) if its queue is full."""
        self.stats.offered += 1
        try:
            self._handoff.put_nowait(alert)
        except queue.Full:
            self.stats.dropped += 1
            if not self._warned_full:
                self._warned_full = True
                self.log.warning(
                    "alert sink queue full; dropping (further drops are counted, not logged)",
                    extra={"sink": self.name, "capacity": self.options.handoff_capacity},
                )
            return False
        return True

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=f"sink:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """Deliver what is queued for at most ``grace_s``, then close; safe to call twice or before start."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(grace_s)
            if self._thread.is_alive():
                self.log.warning("alert sink did not finish in time", extra={"sink": self.name, "grace_s": grace_s})
        self.close()

    def _main(self) -> None:
        self.log.info("alert sink started", extra={"sink": self.name, "kind": self.kind})
        while True:
            try:
                alert = self._handoff.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    break
                self.idle()
                continue
            try:
                self.deliver(alert)
            except Exception as exc:  # a sink's bug must not take the thread down silently
                self.stats.failures += 1
                self.stats.last_error = repr(exc)
                self.log.exception("alert sink failed on an alert", extra={"sink": self.name})

    def wait_until(self, predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
        """Poll ``predicate(stats)`` until it holds or ``timeout`` passes: for tests and shutdown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.stats):
                return True
            time.sleep(0.02)
        return bool(predicate(self.stats))

    # -- per kind -------------------------------------------------------------------------------
    @abstractmethod
    def deliver(self, alert: Alert) -> None:
        """Send one alert (or keep it for later); runs in the sink's thread."""

    def idle(self) -> None:  # noqa: B027 (optional hook)
        """Called by the sink's thread when nothing new came in for a while (retries live here)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release sockets and files; after the thread has stopped."""


def _forwarded(options: SinkBase, order: Sequence[str]) -> frozenset[str]:
    if options.severities is not None:
        return frozenset(options.severities)
    if options.min_severity is not None and options.min_severity in order:
        return frozenset(order[order.index(options.min_severity) :])
    return frozenset(order)
