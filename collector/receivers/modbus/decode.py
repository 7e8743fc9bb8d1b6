"""Register blocks and their decoding: pure functions, no I/O, vectorized with numpy.

``plan_blocks`` groups the register entries of one table into as few reads as
the limits allow (contiguous or near entries share a read). ``decode_words``
turns raw 16-bit words into engineering floats for one type and byte order,
and ``Block.decode`` does that for a whole read, one numpy pass per
(type, order) group of the block; ``PollImage`` does it for every read of a
poll at once, which is what the receiver uses. The only error any of them
raises is ``DecodeError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collector.receivers.modbus.options import BIT_TABLES, WORDS

# Big-endian dtype of each register type; bool is handled apart (one bit each).
_DTYPE: dict[str, str] = {
    "int16": ">i2",
    "uint16": ">u2",
    "int32": ">i4",
    "uint32": ">u4",
    "float32": ">f4",
    "int64": ">i8",
    "float64": ">f8",
}
ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")
TYPES = ("int16", "uint16", "int32", "uint32", "float32", "int64", "float64", "bool")


class DecodeError(ValueError):
    """Raw data that cannot be decoded as configured (wrong length, not 16-bit words); says why."""


def _as_words(raw: Any, count: int) -> np.ndarray:
    """``raw`` as an (n, count) uint16 array, or DecodeError."""
    try:
        arr = np.asarray(raw)
    except (TypeError, ValueError) as exc:  # ragged nesting and the like
        raise DecodeError(f"not an array of register words: {exc}") from None
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)  # np.asarray([]) is float64
        else:
            raise DecodeError(f"register words must be integers, not {arr.dtype}")
    if arr.ndim == 1:
        if arr.shape[0] % count:
            raise DecodeError(f"{arr.shape[0]} words are not a whole number of {count}-word values")
        arr = arr.reshape(-1, count)
    if arr.ndim != 2 or arr.shape[1] != count:
        raise DecodeError(f"expected (n, {count}) register words, got shape {arr.shape}")
    if arr.dtype.itemsize == 2 and arr.dtype.kind == "u":  # already 16-bit words (either byte order)
        return arr.astype(np.uint16, copy=False)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
        raise DecodeError("a register word is outside 0..65535")
    return arr.astype(np.uint16)


def decode_words(raw: Any, type_: str, order: str = "ABCD") -> np.ndarray:
    """Values of ``n`` registers groups: ``raw`` is (n, words) or flat, each word 0..65535; float64 out.

    ``order`` names the bytes of the value, A most significant, in the order the
    device sends them: ABCD big endian (the Modbus convention), CDAB with the
    words swapped, BADC with the bytes of each word swapped, DCBA little endian.
    For 64-bit values the same rule runs over four words (CDAB = GHEFCDAB); for
    16-bit values only the byte swap matters.
    """
    if type_ == "bool":
        raise DecodeError("bool values are bits, not register words")
    if type_ not in _DTYPE:
        raise DecodeError(f"unknown register type {type_!r}")
    if order not in ORDERS:
        raise DecodeError(f"unknown order {order!r}")
    count = WORDS[type_]
    words = _as_words(raw, count)
    if order in ("CDAB", "DCBA"):
        words = words[:, ::-1]  # low word first on the wire: put the high word first
    # Each word's bytes in big-endian order, or swapped (BADC, DCBA): pick the representation accordingly.
    wire = np.ascontiguousarray(words, dtype=">u2" if order in ("ABCD", "CDAB") else "<u2")
    with np.errstate(invalid="ignore"):  # signalling-NaN payloads become quiet NaN: a value, not an error
        return wire.view(_DTYPE[type_]).reshape(-1).astype(np.float64)


def decode_bits(raw: Any) -> np.ndarray:
    """Coil or discrete-input bits as 0.0 / 1.0."""
    try:
        arr = np.asarray(raw)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"not an array of bits: {exc}") from None
    if arr.ndim != 1:
        raise DecodeError(f"expected a flat list of bits, got shape {arr.shape}")
    if arr.size and arr.dtype != bool and (arr.dtype.kind not in "iu" or int(arr.min()) < 0 or int(arr.max()) > 1):
        raise DecodeError("bits must be booleans or 0/1")
    return arr.astype(np.float64)


@dataclass(frozen=True, slots=True)
class Entry:
    """One register entry resolved against the frame: where to read it and which column it feeds."""

    tag: int  # frame column
    name: str
    table: str
    address: int
    type: str
    order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    no_value: int | None = None

    @property
    def count(self) -> int:
        return WORDS[self.type]

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True)
class _Group:
    """The entries of a block that share a type and order, as arrays for one vectorized decode."""

    type: str
    order: str
    index: np.ndarray  # (n, words) positions of each entry's words in the block
    tag: np.ndarray  # int32 frame columns
    scale: np.ndarray
    offset: np.ndarray
    no_value: np.ndarray  # float64 raw no-value marker per entry; NaN when none


@dataclass(eq=False)
class Block:
    """One read: ``count`` registers (or bits) of ``table`` from ``start``, feeding ``entries``."""

    table: str
    start: int
    count: int
    entries: list[Entry]
    _groups: list[_Group] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        by_kind: dict[tuple[str, str], list[Entry]] = {}
        for e in self.entries:
            by_kind.setdefault((e.type, e.order if e.type != "bool" else "ABCD"), []).append(e)
        for (type_, order), group in by_kind.items():
            width = WORDS[type_]
            first = np.array([e.address - self.start for e in group], dtype=np.intp)
            self._groups.append(
                _Group(
                    type=type_,
                    order=order,
                    index=first[:, None] + np.arange(width, dtype=np.intp),
                    tag=np.array([e.tag for e in group], dtype=np.int32),
                    scale=np.array([e.scale for e in group], dtype=np.float64),
                    offset=np.array([e.offset for e in group], dtype=np.float64),
                    no_value=np.array([np.nan if e.no_value is None else e.no_value for e in group], dtype=np.float64),
                )
            )

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES

    @property
    def tags(self) -> np.ndarray:
        return np.array([e.tag for e in self.entries], dtype=np.int32)

    @property
    def has_gaps(self) -> bool:
        covered = np.zeros(self.count, dtype=bool)
        for e in self.entries:
            covered[e.address - self.start : e.end - self.start] = True
        return not bool(covered.all())

    def decode(self, data: Sequence[int] | Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tag, value, good) for a response's registers or bits; DecodeError if it is short or malformed.

        ``good`` is False where the device sent its no-value marker (the value is NaN then).
        """
        if len(data) < self.count:
            raise DecodeError(f"short response: {len(data)} of {self.count} {'bits' if self.is_bits else 'registers'}")
        raw_data = data[: self.count]
        if not isinstance(raw_data, np.ndarray):
            raw_data = list(raw_data)
        if self.is_bits:
            bits = decode_bits(raw_data)
        else:
            words = _as_words(raw_data, 1).reshape(-1)
        tags, values, good = [], [], []
        for g in self._groups:
            if g.type == "bool":
                raw = bits[g.index[:, 0]]
            else:
                raw = decode_words(words[g.index], g.type, g.order)
            missing = raw == g.no_value  # NaN markers compare False
            value = raw * g.scale + g.offset
            value[missing] = np.nan
            tags.append(g.tag)
            values.append(value)
            good.append(~missing)
        if len(tags) == 1:
            return tags[0], values[0], good[0]
        return np.concatenate(tags), np.concatenate(values), np.concatenate(good)

    def split(self) -> list[Block]:
        """The same entries as contiguous reads only (no gaps), for a device that refuses the gaps."""
        limit = self.count  # the parts are never longer than this block
        return plan_blocks(self.entries, max_registers=limit, max_bits=limit, max_gap=0)


@dataclass(frozen=True)
class _PollGroup:
    """A ``_Group`` gathered over every block of a poll: positions in the poll's image, block of each entry."""

    type: str
    order: str
    index: np.ndarray  # (n, words) positions in the word image, or (n, 1) in the bit image
    tag: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    no_value: np.ndarray
    block: np.ndarray  # intp: which block of the poll each entry is read by


class PollImage:
    """Every block of one poll side by side in one word image and one bit image, decoded at once.

    A poll reads many blocks (162 reads for 10k float32 tags); decoding each
    response on its own costs a dozen numpy calls per read. Here each response
    is only copied into its slice of the image (``fill``), and ``decode`` then
    runs one numpy pass per (type, order) group over the whole poll, leaving
    out the entries of the blocks that were not read. Same values as
    ``Block.decode`` on each block, entry for entry.
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        self.blocks = list(blocks)
        self._offset: list[int] = []
        words = bits = 0
        for b in self.blocks:
            self._offset.append(bits if b.is_bits else words)
            if b.is_bits:
                bits += b.count
            else:
                words += b.count
        self.words = np.zeros(words, dtype=np.uint16)
        self.bits = np.zeros(bits, dtype=np.float64)
        self.block_tags = [b.tags for b in self.blocks]
        parts: dict[tuple[str, str], list[tuple[int, _Group]]] = {}
        for k, b in enumerate(self.blocks):
            for g in b._groups:
                parts.setdefault((g.type, g.order), []).append((k, g))
        self._groups = [
            _PollGroup(
                type=type_,
                order=order,
                index=np.concatenate([g.index + self._offset[k] for k, g in found]),
                tag=np.concatenate([g.tag for _, g in found]),
                scale=np.concatenate([g.scale for _, g in found]),
                offset=np.concatenate([g.offset for _, g in found]),
                no_value=np.concatenate([g.no_value for _, g in found]),
                block=np.concatenate([np.full(g.tag.shape[0], k, dtype=np.intp) for k, g in found]),
            )
            for (type_, order), found in parts.items()
        ]

    def fill(self, k: int, data: Any) -> None:
        """Copy block ``k``'s response (registers or bits) into the image; DecodeError if short or malformed."""
        block, at = self.blocks[k], self._offset[k]
        if len(data) < block.count:
            kind = "bits" if block.is_bits else "registers"
            raise DecodeError(f"short response: {len(data)} of {block.count} {kind}")
        raw = data[: block.count]
        if not isinstance(raw, np.ndarray):
            raw = list(raw)
        if block.is_bits:
            self.bits[at : at + block.count] = decode_bits(raw)
        else:
            self.words[at : at + block.count] = _as_words(raw, 1).reshape(-1)

    def decode(self, read: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tag, value, good, block) of every entry of the blocks flagged in ``read`` (bool per block)."""
        tags, values, good, blocks = [], [], [], []
        for g in self._groups:
            keep = read[g.block]
            if keep.all():
                index, tag, scale, offset, no_value, block = g.index, g.tag, g.scale, g.offset, g.no_value, g.block
            elif keep.any():
                index, tag, scale, offset = g.index[keep], g.tag[keep], g.scale[keep], g.offset[keep]
                no_value, block = g.no_value[keep], g.block[keep]
            else:
                continue
            raw = self.bits[index[:, 0]] if g.type == "bool" else decode_words(self.words[index], g.type, g.order)
            missing = raw == no_value  # NaN markers compare False
            value = raw * scale + offset
            value[missing] = np.nan
            tags.append(tag)
            values.append(value)
            good.append(~missing)
            blocks.append(block)
        if not tags:
            empty = np.empty(0)
            return empty.astype(np.int32), empty, empty.astype(bool), empty.astype(np.intp)
        return np.concatenate(tags), np.concatenate(values), np.concatenate(good), np.concatenate(blocks)


def plan_blocks(entries: Iterable[Entry], *, max_registers: int, max_bits: int, max_gap: int) -> list[Block]:
    """Group entries into the fewest reads: per table, by address, greedily.

    Two neighbours share a read when the unused span between them is at most
    ``max_gap`` and the read stays within the per-read limit. Overlapping
    entries (one register read two ways) share a read too. Greedy over sorted
    addresses gives the fewest reads for these constraints.
    """
    by_table: dict[str, list[Entry]] = {}
    for e in entries:
        by_table.setdefault(e.table, []).append(e)
    blocks: list[Block] = []
    for table in ("holding", "input", "coil", "discrete"):
        todo = sorted(by_table.get(table, []), key=lambda e: (e.address, e.end))
        limit = max_bits if table in BIT_TABLES else max_registers
        current: list[Entry] = []
        start = end = 0
        for e in todo:
            if e.count > limit:
                raise ValueError(f"{e.name}: a {e.type} needs {e.count} registers, more than one read of {limit}")
            if current and e.address - end <= max_gap and max(end, e.end) - start <= limit:
                current.append(e)
                end = max(end, e.end)
                continue
            if current:
                blocks.append(Block(table, start, end - start, current))
            current, start, end = [e], e.address, e.end
        if current:
            blocks.append(Block(table, start, end - start, current))
    return blocks
