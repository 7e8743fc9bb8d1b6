"""Snapshots of learned state in state_dir, written so that a crash never leaves half a file.

A snapshot is one ``.npz`` of named arrays plus a JSON header (tag and
detector names, the last tick scored, the journal's sequence number). It is
written to a temporary file, fsync'd, and renamed over the old one; the
previous snapshot is kept as ``.prev`` so a damaged latest one still leaves
something to resume from.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SNAPSHOT = "snapshot.npz"
FORMAT_VERSION = 1


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / SNAPSHOT
        self.prev = state_dir / (SNAPSHOT + ".prev")

    def save(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        tmp = self.dir / (SNAPSHOT + ".tmp")
        header = json.dumps({"format": FORMAT_VERSION, **meta})
        with tmp.open("wb") as handle:
            np.savez(handle, __meta__=np.array(header), **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        if self.path.exists():
            os.replace(self.path, self.prev)
        os.replace(tmp, self.path)
        _fsync_dir(self.dir)
        return self.path

    def load(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The newest readable snapshot, or None when there is none."""
        for path in (self.path, self.prev):
            if not path.exists():
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files if k != "__meta__"}
                    meta = json.loads(str(data["__meta__"]))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                log.warning("snapshot unreadable, trying an older one", extra={"path": str(path), "error": str(exc)})
                continue
            if meta.get("format") != FORMAT_VERSION:
                log.warning("snapshot format unknown, ignored", extra={"path": str(path)})
                continue
            return arrays, meta
        return None


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file, fsync'd, then moved in.

    With ``exclusive`` the file must not exist yet (``FileExistsError`` otherwise): it is linked
    in rather than renamed, so two writers racing for one name cannot overwrite each other. That
    is how an immutable file (a baseline version) is created.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def npz_bytes(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    """Arrays and a JSON header as the bytes of an ``.npz``, the layout ``StateStore`` writes and reads."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(json.dumps({"format": FORMAT_VERSION, **meta})), **arrays)
    return buffer.getvalue()


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and header of an ``.npz`` written by ``npz_bytes``; raises ValueError if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
            meta = json.loads(str(data["__meta__"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {meta.get('format')!r} unknown (this plantwatch reads {FORMAT_VERSION})")
    return arrays, meta


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def name_rows(current: list[str], saved: list[str]) -> np.ndarray:
    """For each current name, its row in the saved arrays, or -1 when the snapshot lacks it."""
    index = {name: i for i, name in enumerate(saved)}
    return np.array([index.get(name, -1) for name in current], dtype=np.int64)
