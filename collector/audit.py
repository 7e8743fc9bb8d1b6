"""The audit trail: what happened to the daemon, as append-only JSON lines a security team can read.

``state_dir/audit.jsonl`` gets one line per event: start, stop, reload,
source connected and disconnected, authentication and certificate failures,
baselines restored or saved, and every alert transition. Each line is a
whole JSON object with ``ts`` in UTC (ISO 8601, milliseconds, ``Z``) and an
``event`` name; it needs nothing but a text editor or ``jq`` to read, with
plantwatch stopped.

fsync policy: every call to ``record`` or ``record_many`` is one ``write``
(lines never interleave or tear in the middle of the file) followed by
``fsync`` before it returns. Audit events are rare (lifecycle, connection
changes, alert transitions batched per tick), so the cost is a few fsyncs a
minute on a quiet plant. A line torn by a power cut is cut at the next start.

Receivers report to the audit trail without knowing it: ``SourceWatch``
compares each receiver's ``SourceStatus`` (up flag, error counters) with
what it saw last and turns the differences into events, in one place.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from collector.journal import _cut_torn_tail

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"

# Error kinds the receivers count (status.errors) that an auditor must see, by audit event.
AUTH_KINDS = ("auth", "refused_not_authorized", "refused_bad_user_name_or_password")
CERT_KINDS = ("security", "tls", "tls_config")


def utc_stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def failure_event(kind: str) -> str | None:
    """The audit event for a receiver error kind, or None if it is not a security event."""
    if kind in AUTH_KINDS or (kind.startswith("refused_") and ("auth" in kind or "password" in kind)):
        return "authentication_failure"
    if kind in CERT_KINDS or "certificate" in kind:
        return "certificate_failure"
    return None


class AuditTrail:
    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        repaired = _cut_torn_tail(path)
        if repaired:
            log.warning("audit trail had a torn last line; cut it", extra={"path": str(path), "bytes": repaired})
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.lines = 0

    def record(self, event: str, **fields: object) -> None:
        self.record_many([{"event": event, **fields}])

    def record_many(self, events: Iterable[Mapping[str, object]]) -> int:
        """Write events as one durable block; each gets the current UTC time unless it has one."""
        now = utc_stamp(self.clock())
        lines = [
            json.dumps({"ts": now, **e} if "ts" not in e else dict(e), separators=(",", ":"), default=str)
            for e in events
        ]
        if not lines or self._fd < 0:
            return 0
        view = memoryview(("\n".join(lines) + "\n").encode("utf-8"))
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.lines += len(lines)
        return len(lines)

    def alert_transitions(self, records: Iterable[Mapping[str, object]]) -> int:
        """Alert transitions as the journal wrote them; ``alert_ts`` is the tick time, in UTC."""
        events = []
        for rec in records:
            fields = {k: v for k, v in rec.items() if k not in ("written", "event", "ts")}
            events.append({"event": f"alert_{rec.get('event')}", "alert_ts": utc_stamp(float(rec["ts"])), **fields})  # type: ignore[arg-type]
        return self.record_many(events)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SourceWatch:
    """Turns changes in the receivers' status into audit events; polled by the runner each pass."""

    def __init__(self, receivers: Sequence[Any]) -> None:
        self.receivers = list(receivers)
        self._up = [False] * len(self.receivers)
        self._errors: list[dict[str, int]] = [{} for _ in self.receivers]

    def carried_to(self, receivers: Sequence[Any], previous: Sequence[Any]) -> SourceWatch:
        """A watch over a reloaded set of receivers that remembers what it saw of the ones kept."""
        watch = SourceWatch(receivers)
        for j, receiver in enumerate(receivers):
            for i, old in enumerate(previous):
                if old is receiver and i < len(self._up):
                    watch._up[j], watch._errors[j] = self._up[i], self._errors[i]
        return watch

    def poll(self) -> list[dict[str, object]]:
        events: list[dict[str, object]] = []
        for i, receiver in enumerate(self.receivers):
            status = receiver.status
            source = {"source": receiver.name, "kind": receiver.kind}
            for kind, count in status.errors.items():
                new = count - self._errors[i].get(kind, 0)
                event = failure_event(kind)
                if new > 0 and event is not None:
                    events.append({"event": event, **source, "error": kind, "count": new})
            self._errors[i] = dict(status.errors)
            if status.up != self._up[i]:
                events.append({"event": "source_connected" if status.up else "source_disconnected", **source})
                self._up[i] = status.up
        return events


def read_audit(path: Path) -> Iterator[dict[str, object]]:
    """The trail's events, skipping an unfinished last line; for tools and tests."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for raw in handle:
            if raw.endswith(b"\n"):
                yield json.loads(raw)
