"""A bounded on-disk queue of alerts for one sink: what is written here survives a crash.

Two files in ``state_dir/sinks/``: ``<name>.spool.jsonl`` holds alerts in
journal order (one JSON line each, appended with one ``write`` and an
``fsync`` per batch) and ``<name>.acked`` holds the highest journal sequence
number the receiver has acknowledged (replaced atomically: write, fsync,
rename). Everything in the spool above the acked number is still owed. When
nothing is owed the spool is truncated; when acknowledged lines pile up it is
rewritten with only what is owed. A torn last line (power lost mid-write) is
cut at open, as in the alert journal.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from collector.journal import _cut_torn_tail

COMPACT_AFTER = 1024  # acknowledged lines tolerated in the file before it is rewritten


class Spool:
    def __init__(self, folder: Path, name: str, capacity: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.spool.jsonl"
        self.acked_path = folder / f"{name}.acked"
        self.fresh = not self.path.exists() and not self.acked_path.exists()  # a sink configured just now
        self.capacity = capacity
        self.dropped = 0
        self.repaired_bytes = _cut_torn_tail(self.path)
        self.acked = int(self.acked_path.read_text().strip() or 0) if self.acked_path.exists() else 0
        self.pending: collections.deque[dict[str, object]] = collections.deque()
        self._stale_lines = 0
        self.last_seq = self.acked
        if self.path.exists():
            with self.path.open("rb") as handle:
                for raw in handle:
                    rec = json.loads(raw)
                    seq = int(rec["seq"])
                    self.last_seq = max(self.last_seq, seq)
                    if seq > self.acked:
                        self.pending.append(rec)
                    else:
                        self._stale_lines += 1
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._trim()

    def extend(self, alerts: Iterable[Mapping[str, object]]) -> int:
        """Append alerts not spooled before (by seq), durably; returns how many were new."""
        fresh = [dict(a) for a in alerts if int(a["seq"]) > self.last_seq]  # type: ignore[call-overload]
        if not fresh:
            return 0
        data = "".join(json.dumps(a, separators=(",", ":"), default=str) + "\n" for a in fresh).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.pending.extend(fresh)
        self.last_seq = int(fresh[-1]["seq"])  # type: ignore[call-overload]
        self._trim()
        return len(fresh)

    def ack(self, seq: int) -> None:
        """The receiver has the alert ``seq`` and everything before it: never send them again."""
        while self.pending and int(self.pending[0]["seq"]) <= seq:  # type: ignore[call-overload]
            self.pending.popleft()
            self._stale_lines += 1
        self._write_acked(seq)
        if not self.pending:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._stale_lines = 0
        elif self._stale_lines >= COMPACT_AFTER:
            self._rewrite()

    def _trim(self) -> None:
        """Keep at most ``capacity`` owed alerts: the oldest go first, counted."""
        excess = len(self.pending) - self.capacity
        if excess > 0:
            self.dropped += excess
            self.ack(int(self.pending[excess - 1]["seq"]))  # type: ignore[call-overload]

    def _write_acked(self, seq: int) -> None:
        self.acked = seq
        tmp = self.acked_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, f"{seq}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.acked_path)
        _fsync_dir(self.acked_path.parent)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            for rec in self.pending:
                handle.write(json.dumps(rec, separators=(",", ":"), default=str).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._stale_lines = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
