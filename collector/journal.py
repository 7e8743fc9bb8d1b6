"""The alert journal: append-only JSON lines in state_dir, fsync'd, never torn.

Each block of transitions is written with one ``write`` and made durable with
``fsync`` before the daemon moves on. Every line carries a sequence number
that continues across restarts. If the machine died in the middle of a write,
the incomplete last line is cut off at the next start (and said so in the
log), so every line a reader sees is a whole JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)


class AlertJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _cut_torn_tail(path)
        if self.repaired_bytes:
            log.warning("journal had a torn last line; cut it", extra={"path": str(path), "bytes": self.repaired_bytes})
        self.seq = _last_seq(path)
        self.lines_written = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def append(self, records: Iterable[Mapping[str, object]]) -> int:
        """Write records as one durable block; returns how many were written."""
        lines = []
        wall = time.time()
        for rec in records:
            self.seq += 1
            lines.append(json.dumps({"seq": self.seq, "written": round(wall, 3), **rec}, separators=(",", ":")))
        if not lines:
            return 0
        data = ("\n".join(lines) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.lines_written += len(lines)
        return len(lines)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AlertJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: Path, after_seq: int = 0) -> Iterator[dict[str, object]]:
    """The journal's records with ``seq`` above ``after_seq``, skipping an unfinished last line."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                return
            rec = json.loads(raw)
            if int(rec.get("seq", 0)) > after_seq:
                yield rec


def _cut_torn_tail(path: Path) -> int:
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline; everything after it is an unfinished line.
        pos = size
        step = 4096
        while pos > 0:
            start = max(0, pos - step)
            handle.seek(start)
            block = handle.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


def _last_seq(path: Path) -> int:
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 65536))
        tail = handle.read().splitlines()
    for raw in reversed(tail):
        try:
            return int(json.loads(raw)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0
