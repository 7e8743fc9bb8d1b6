"""The Modbus decoder and block planner: known values, every type and order, grouping, and property-based tests."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from collector.receivers.modbus.decode import ORDERS, TYPES, Block, DecodeError, Entry, decode_words, plan_blocks
from collector.receivers.modbus.options import WORDS

STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "int64": "q", "float64": "d"}
REGISTER_TYPES = [t for t in TYPES if t != "bool"]
LETTERS = "ABCDEFGH"


def encode(value: float | int, type_: str, order: str) -> list[int]:
    """Reference encoder, independent of the decoder: struct's big-endian bytes, rearranged by letter.

    The order names the wire bytes of a 32-bit value; for 16 bits only the byte swap applies, for
    64 bits the same pattern runs over four words (CDAB -> GH EF CD AB).
    """
    data = struct.pack(">" + STRUCT[type_], value)
    n = len(data)
    if n == 2:
        pattern = "AB" if order in ("ABCD", "CDAB") else "BA"
    elif n == 4:
        pattern = order
    else:
        pattern = {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"}[order]
    wire = bytes(data[LETTERS.index(c)] for c in pattern)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, n, 2)]


def test_known_words() -> None:
    # 123.456 as float32 is 0x42F6E979: ABCD 42F6 E979, CDAB E979 42F6, BADC F642 79E9, DCBA 79E9 F642.
    expected = np.float32(123.456)
    for order, words in {
        "ABCD": [0x42F6, 0xE979],
        "CDAB": [0xE979, 0x42F6],
        "BADC": [0xF642, 0x79E9],
        "DCBA": [0x79E9, 0xF642],
    }.items():
        assert decode_words(words, "float32", order)[0] == expected, order
        assert encode(float(expected), "float32", order) == words
    assert decode_words([0xFFFF], "int16")[0] == -1
    assert decode_words([0xFFFF], "uint16")[0] == 65535
    assert decode_words([0x0180], "int16", "BADC")[0] == 0x8001 - 65536
    assert decode_words([0x0001, 0x0000], "int32", "CDAB")[0] == 1
    assert decode_words([0, 0, 0, 1], "int64")[0] == 1
    assert decode_words([0x0100, 0, 0, 0], "int64", "DCBA")[0] == 1
    assert decode_words([[0x3FF0, 0, 0, 0], [0xC000, 0, 0, 0]], "float64").tolist() == [1.0, -2.0]
    assert math.isnan(decode_words([0x7FC0, 0], "float32")[0])
    assert decode_words([], "float32").shape == (0,)


@pytest.mark.parametrize("type_", REGISTER_TYPES)
@pytest.mark.parametrize("order", ORDERS)
def test_round_trip_against_the_reference_encoder(type_: str, order: str) -> None:
    rng = np.random.default_rng(7)
    if type_.startswith("float"):
        values = [0.0, -0.0, 1.5, -123.456, 3.4e38, 1e-30, *rng.normal(0, 1e3, 50).tolist()]
        if type_ == "float32":
            values = [float(np.float32(v)) for v in values]
    else:
        bits = 8 * struct.calcsize(STRUCT[type_])
        lo, hi = (0, 2**bits - 1) if type_.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        values = [lo, hi, 0, 1, -1 if lo < 0 else 2, *rng.integers(max(lo, -(2**52)), min(hi, 2**52), 50).tolist()]
    words = [encode(v, type_, order) for v in values]
    out = decode_words(words, type_, order)
    assert out.dtype == np.float64 and out.tolist() == [float(v) for v in values]


@pytest.mark.parametrize("word_order", ["big", "little"])
def test_float32_and_int32_agree_with_pymodbus(word_order: str) -> None:
    """pymodbus' own convert_from_registers as a second, independent reference (ABCD = big, CDAB = little)."""
    convert = AsyncModbusTcpClient.convert_from_registers
    kinds = AsyncModbusTcpClient.DATATYPE
    order = "ABCD" if word_order == "big" else "CDAB"
    rng = np.random.default_rng(1)
    regs = rng.integers(0, 65536, size=(200, 4)).tolist()
    for type_, dt in [("float32", kinds.FLOAT32), ("int32", kinds.INT32), ("uint32", kinds.UINT32)]:
        ours = decode_words([r[:2] for r in regs], type_, order)
        theirs = [convert(r[:2], dt, word_order=word_order) for r in regs]
        np.testing.assert_array_equal(ours, np.array(theirs, dtype=np.float64))
    for type_, dt in [("float64", kinds.FLOAT64), ("int64", kinds.INT64)]:
        ours = decode_words(regs, type_, order)
        theirs = [convert(r, dt, word_order=word_order) for r in regs]
        np.testing.assert_array_equal(ours, np.array(theirs, dtype=np.float64))


def test_declared_errors_only() -> None:
    for raw, type_ in [
        ([1, 2, 3], "float32"),  # not whole values
        ([70000, 0], "float32"),  # not a 16-bit word
        ([-1], "int16"),
        ([1.5], "int16"),
        ([[1, 2], [3]], "float32"),  # ragged
        (["a"], "uint16"),
        ([1], "bool"),
        ([1], "float16"),
        ([[1, 2, 3]], "float32"),
    ]:
        with pytest.raises(DecodeError):
            decode_words(raw, type_)
    with pytest.raises(DecodeError):
        decode_words([1], "int16", "ABDC")


# -- property-based ------------------------------------------------------------------------------

word = st.integers(min_value=0, max_value=0xFFFF)
anything_int = st.integers(min_value=-(2**70), max_value=2**70)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    type_=st.sampled_from(TYPES),
    order=st.sampled_from(ORDERS),
    raw=st.one_of(
        st.lists(word, max_size=24),
        st.lists(anything_int, max_size=12),
        st.lists(st.lists(word, min_size=0, max_size=5), max_size=6),
        st.lists(st.one_of(st.floats(), st.booleans(), st.text(max_size=3), st.none()), max_size=6),
    ),
)
def test_decode_words_returns_floats_or_raises_decode_error(type_: str, order: str, raw: Any) -> None:
    try:
        out = decode_words(raw, type_, order)
    except DecodeError:
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.ndim == 1
    flat = np.asarray(raw).size
    assert out.shape[0] * WORDS[type_] == flat


@settings(max_examples=300, deadline=None)
@given(
    type_=st.sampled_from(REGISTER_TYPES),
    order=st.sampled_from(ORDERS),
    words=st.lists(word, min_size=4, max_size=4),
)
def test_decode_inverts_the_reference_encoder(type_: str, order: str, words: list[int]) -> None:
    """Random words decode to a value that encodes back to the same words (NaN payloads aside)."""
    n = WORDS[type_]
    (value,) = decode_words(words[:n], type_, order).tolist()
    if math.isnan(value):
        return
    if type_.startswith("float") or abs(value) < 2**53:
        back = value if type_.startswith("float") else int(value)
        if type_ == "float32":
            back = float(np.float32(value))
        assert encode(back, type_, order) == words[:n]


@st.composite
def block_and_data(draw: st.DrawFn) -> tuple[Block, Any]:
    table = draw(st.sampled_from(["holding", "input", "coil", "discrete"]))
    entries = []
    for k in range(draw(st.integers(1, 6))):
        type_ = "bool" if table in ("coil", "discrete") else draw(st.sampled_from(REGISTER_TYPES))
        no_value = draw(st.one_of(st.none(), st.integers(-40000, 70000))) if "int" in type_ else None
        entries.append(
            Entry(
                tag=k,
                name=f"T{k}",
                table=table,
                address=draw(st.integers(0, 40)),
                type=type_,
                order=draw(st.sampled_from(ORDERS)),
                scale=draw(st.floats(-1e6, 1e6, allow_nan=False)),
                offset=draw(st.floats(-1e6, 1e6, allow_nan=False)),
                no_value=no_value,
            )
        )
    (block,) = plan_blocks(entries, max_registers=125, max_bits=2000, max_gap=125)
    if table in ("coil", "discrete"):
        data = draw(st.one_of(st.lists(st.booleans(), max_size=60), st.lists(st.integers(-2, 3), max_size=60)))
    else:
        data = draw(st.one_of(st.lists(word, max_size=60), st.lists(anything_int, max_size=60)))
    return block, data


@settings(max_examples=300, deadline=None)
@given(case=block_and_data())
def test_block_decode_returns_floats_or_raises_decode_error(case: tuple[Block, Any]) -> None:
    block, data = case
    try:
        tag, value, good = block.decode(data)
    except DecodeError:
        return
    assert len(data) >= block.count
    assert sorted(tag.tolist()) == sorted(e.tag for e in block.entries)
    assert value.dtype == np.float64 and good.dtype == bool and value.shape == good.shape == tag.shape
    assert np.isnan(value[~good]).all()  # a no-value marker is never a number


# -- grouping ------------------------------------------------------------------------------------


def entry(k: int, table: str, address: int, type_: str = "float32") -> Entry:
    return Entry(tag=k, name=f"T{k}", table=table, address=address, type=type_)


def shape(blocks: list[Block]) -> list[tuple[str, int, int]]:
    return [(b.table, b.start, b.count) for b in blocks]


def test_grouping_into_fewest_reads() -> None:
    floats = [entry(k, "holding", 2 * k) for k in range(100)]  # 200 registers
    assert shape(plan_blocks(floats, max_registers=125, max_bits=2000, max_gap=0)) == [
        ("holding", 0, 124),
        ("holding", 124, 76),
    ]
    assert len(plan_blocks(floats, max_registers=7, max_bits=2000, max_gap=0)) == 34  # 3 floats per read
    sparse = [entry(k, "holding", 4 * k) for k in range(10)]  # a float every 4 registers
    assert len(plan_blocks(sparse, max_registers=125, max_bits=2000, max_gap=0)) == 10
    assert shape(plan_blocks(sparse, max_registers=125, max_bits=2000, max_gap=2)) == [("holding", 0, 38)]
    bits = [entry(k, "coil", 3 * k, "bool") for k in range(1000)] + [entry(2000, "discrete", 7, "bool")]
    assert shape(plan_blocks(bits, max_registers=125, max_bits=2000, max_gap=2)) == [
        ("coil", 0, 1999),
        ("coil", 2001, 997),
        ("discrete", 7, 1),
    ]
    mixed = [entry(0, "input", 5, "int16"), entry(1, "input", 5, "uint16"), entry(2, "input", 4, "int32")]
    assert shape(plan_blocks(mixed, max_registers=125, max_bits=2000, max_gap=0)) == [("input", 4, 2)]
    with pytest.raises(ValueError, match="more than one read"):
        plan_blocks([entry(0, "holding", 0, "float64")], max_registers=3, max_bits=2000, max_gap=0)


def test_split_reads_contiguous_runs_only() -> None:
    (block,) = plan_blocks(
        [entry(0, "holding", 0), entry(1, "holding", 2), entry(2, "holding", 10)],
        max_registers=125,
        max_bits=2000,
        max_gap=10,
    )
    assert block.has_gaps and shape([block]) == [("holding", 0, 12)]
    parts = block.split()
    assert shape(parts) == [("holding", 0, 4), ("holding", 10, 2)] and not any(p.has_gaps for p in parts)


def test_block_decode_values_scale_and_no_value() -> None:
    entries = [
        Entry(0, "F", "holding", 0, "float32", "CDAB"),
        Entry(1, "I", "holding", 2, "int16", scale=0.1, offset=-5.0, no_value=-32768),
        Entry(2, "J", "holding", 3, "int16", scale=0.1, no_value=-32768),
        Entry(3, "U", "holding", 4, "uint32", "DCBA"),
    ]
    (block,) = plan_blocks(entries, max_registers=125, max_bits=2000, max_gap=0)
    words = [*encode(2.5, "float32", "CDAB"), 1234, 0x8000, *encode(70000, "uint32", "DCBA")]
    tag, value, good = block.decode(words)
    got = dict(zip(tag.tolist(), zip(value.tolist(), good.tolist(), strict=True), strict=True))
    assert got[0] == (2.5, True) and got[3] == (70000.0, True)
    assert got[1][1] and abs(got[1][0] - 118.4) < 1e-9
    assert math.isnan(got[2][0]) and got[2][1] is False
    with pytest.raises(DecodeError, match="short response"):
        block.decode(words[:-1])
    coils = [entry(0, "coil", 1, "bool"), entry(1, "coil", 3, "bool")]
    (bits,) = plan_blocks(coils, max_registers=125, max_bits=2000, max_gap=5)
    tag, value, good = bits.decode([True, False, False, True, True, False, False, False])  # pymodbus pads to 8
    assert dict(zip(tag.tolist(), value.tolist(), strict=True)) == {0: 1.0, 1: 0.0} and good.all()
