"""Reading recordings: historian exports, simulator recordings and public datasets, unconverted.

A recording is delimited text with a timestamp column (or none, for row
numbers) and one column per tag. It is read in chunks of rows, each turned
into numpy arrays in one go, so that a long file never sits in memory whole
and no Python object is made per value.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from collector.receivers.replay.options import ReplayOptions


class RecordingError(ValueError):
    """A recording that cannot be read as configured; says where."""


@dataclass(frozen=True)
class Chunk:
    ts: np.ndarray  # float64 seconds, one per row
    values: np.ndarray  # float64 (rows, tags); NaN where a cell was empty or not a number
    label: np.ndarray  # float64 per row; NaN when the recording has no label column
    malformed: int  # cells that were not numbers
    first_row: int  # 1-based line number of the chunk's first data row


def _split(line: str, separator: str) -> list[str]:
    if separator == "whitespace":
        return line.split()
    return next(csv.reader([line], delimiter=separator))


class Recording:
    """A recording file as configured by a replay source's options."""

    def __init__(self, options: ReplayOptions, tag_keys: list[str]) -> None:
        self.options = options
        self.path = Path(options.path)
        self.tag_keys = tag_keys
        self.size = self.path.stat().st_size
        with self.path.open("r", encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
        fields = [f.strip() for f in _split(first.rstrip("\r\n"), options.separator)]
        self.columns = fields if options.header else [str(i + 1) for i in range(len(fields))]
        missing = [key for key in tag_keys if key not in self.columns]
        if missing:
            raise RecordingError(f"{self.path}: no column for tag(s) {', '.join(missing)}")
        self._value_cols = [self.columns.index(key) for key in tag_keys]
        self._ts_col = self._column(options.timestamp_column, "timestamp_column")
        self._label_col = self._column(options.label_column, "label_column")

    def _column(self, name: str | None, option: str) -> int | None:
        if name is None:
            return None
        if name not in self.columns:
            raise RecordingError(f"{self.path}: {option} {name!r} is not a column (have {', '.join(self.columns)})")
        return self.columns.index(name)

    def count_rows(self) -> int:
        """Data rows in the file (lines, less the header), for a progress bar."""
        lines = 0
        last = b"\n"
        with self.path.open("rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        lines += last != b"\n"
        return max(0, lines - (1 if self.options.header else 0))

    def chunks(self, rows_per_chunk: int = 1024) -> Iterator[Chunk]:
        """The data rows, ``rows_per_chunk`` at a time."""
        opts = self.options
        with self.path.open("r", encoding="utf-8-sig", newline="") as handle:
            if opts.header:
                handle.readline()
            line_no = 2 if opts.header else 1
            row_index = 0
            while True:
                lines = list(itertools.islice(handle, rows_per_chunk))
                if not lines:
                    return
                rows = self._rows(lines, line_no)
                if rows:
                    yield self._chunk(rows, line_no, row_index)
                    row_index += len(rows)
                line_no += len(lines)

    def _rows(self, lines: list[str], first_line: int) -> list[list[str]]:
        sep = self.options.separator
        width = len(self.columns)
        rows: list[list[str]] = []
        if sep == "whitespace":
            split = [line.split() for line in lines]
        else:
            split = list(csv.reader(io.StringIO("".join(lines)), delimiter=sep))
        for offset, row in enumerate(split):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != width:
                raise RecordingError(
                    f"{self.path}: line {first_line + offset} has {len(row)} fields, the header has {width}"
                )
            rows.append(row)
        return rows

    def _chunk(self, rows: list[list[str]], first_line: int, row_index: int) -> Chunk:
        cells = np.array(rows, dtype=str)
        raw = np.char.strip(cells[:, self._value_cols])
        values, malformed = _to_float(raw)
        if self._label_col is None:
            label = np.full(len(rows), np.nan)
        else:
            label, _ = _to_float(np.char.strip(cells[:, self._label_col]))
        if self._ts_col is None:
            ts = (row_index + np.arange(len(rows), dtype=np.float64)) * self.options.row_interval_s
        else:
            ts = self._timestamps(cells[:, self._ts_col], first_line)
        return Chunk(ts, values, label, malformed, first_line)

    def _timestamps(self, raw: np.ndarray, first_line: int) -> np.ndarray:
        fmt = self.options.timestamp_format
        stripped = np.char.strip(raw)
        if fmt in ("epoch_s", "epoch_ms"):
            ts, bad = _to_float(stripped)
            if bad or not np.isfinite(ts).all():
                raise RecordingError(f"{self.path}: a timestamp near line {first_line} is not a number")
            return ts / 1000.0 if fmt == "epoch_ms" else ts
        if fmt == "iso":
            try:  # numpy parses plain ISO 8601 in C; fall back to datetime for offsets
                stamps = stripped.astype("datetime64[us]")
                return stamps.astype(np.int64).astype(np.float64) / 1e6
            except ValueError:
                pass
        out = np.empty(stripped.shape[0])
        for i, text in enumerate(stripped):
            try:
                moment = datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
            except ValueError:
                raise RecordingError(
                    f"{self.path}: line {first_line + i}: timestamp {text!r} does not match {fmt!r}"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            out[i] = moment.timestamp()
        return out


def _to_float(raw: np.ndarray) -> tuple[np.ndarray, int]:
    """Parse text cells to float64: empty cells become NaN silently, non-numbers NaN and counted."""
    empty = raw == ""
    filled = np.where(empty, "nan", raw)
    try:
        return filled.astype(np.float64), 0
    except ValueError:
        pass
    flat = filled.ravel()
    out = np.empty(flat.shape[0])
    bad = 0
    for i, text in enumerate(flat):  # only for chunks that hold a bad cell
        try:
            out[i] = float(text)
        except ValueError:
            out[i] = math.nan
            bad += 1
    return out.reshape(filled.shape), bad
