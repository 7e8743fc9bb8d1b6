"""The Modbus register map of a plant, derived from its tag catalog: deterministic, documented, pure.

The map depends only on the order of the catalog (``TAGS``) and the word order;
the same catalog always gives the same addresses, so a receiver config written
from ``register_map`` today still reads the right registers tomorrow.

Four tables, every address 0-based as on the wire (PDU addressing; a "1-based
reference" in a vendor manual or in ``mbpoll`` without ``-0`` is address + 1):

* ``holding`` (FC3): every analog tag (measurement, setpoint, actuator) in
  catalog order as an IEEE-754 float32 in two registers: analog tag ``j`` at
  address ``2 j``. Word order "big" = ABCD (high word first, the Modbus
  convention), "little" = CDAB (low word first); bytes in a word are always big
  endian. NaN is served as the quiet NaN 0x7FC00000.
* ``input`` (FC4): the same analog tags, one int16 register each: analog tag
  ``j`` at address ``j``; ``raw = round(value * 10**decimals)`` and
  ``value = raw * scale`` with ``scale = 10**-decimals``. ``decimals`` is the
  largest integer (at most ``MAX_DECIMALS``) that keeps the whole of
  ``[lo - HEADROOM * span, hi + HEADROOM * span]`` (``span = hi - lo``) within
  +-32767, so a reading far outside its normal range (a valve driven wide
  open, a tank filling up) still fits. Beyond +-32767 the register saturates, as
  a transmitter's output does; -32768 (0x8000) is reserved for "no value" (NaN).
* ``coil`` (FC1) and ``discrete`` (FC2): every status tag in catalog order, one
  bit each: status tag ``m`` at address ``m`` in both tables (1 when the value
  is >= 0.5). The bits of the last 16-bit word past the last status read 0.

Nothing in any table is writable: see ``sim_plant/servers/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sim_plant.catalog import TagSpec

WordOrder = Literal["big", "little"]
WORD_ORDERS: tuple[WordOrder, ...] = ("big", "little")
Table = Literal["holding", "input", "coil", "discrete"]

INT16_MAX = 32767
INT16_NO_VALUE = -32768  # served in an input register when the tag has no value (NaN)
HEADROOM = 10.0  # the int16 scale keeps [lo - HEADROOM * span, hi + HEADROOM * span] representable
MAX_DECIMALS = 6

# The unit id (Modbus "slave id") of each plant's server; any other plant must name its own.
UNIT_IDS: dict[str, int] = {"oil": 1, "chemical": 2, "radiological": 3}


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """Where one tag is served, in one table.

    ``count`` is the number of registers (or bits) the value occupies; a reader
    gets the engineering value as ``decoded * scale`` (``scale`` is 1.0 except
    for the scaled int16 input registers). ``word_order`` is given for float32
    entries only.
    """

    tag: str
    table: Table
    address: int
    count: int
    type: Literal["float32", "int16", "bool"]
    scale: float
    decimals: int = 0
    word_order: WordOrder | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def int16_decimals(lo: float, hi: float) -> int:
    """Decimal digits kept by the int16 register of a tag whose normal range is [lo, hi]."""
    span = hi - lo
    peak = max(abs(lo - HEADROOM * span), abs(hi + HEADROOM * span))
    if peak == 0.0:
        return MAX_DECIMALS
    decimals = math.floor(math.log10(INT16_MAX / peak))
    # log10 can land a hair above an exact power of ten; step back until it fits.
    while decimals > -9 and round(peak * 10.0**decimals) > INT16_MAX:
        decimals -= 1
    return min(decimals, MAX_DECIMALS)


def check_word_order(word_order: str) -> WordOrder:
    if word_order not in WORD_ORDERS:
        raise ValueError(f"word_order must be one of {WORD_ORDERS}, not {word_order!r}")
    return word_order  # type: ignore[return-value]


def analog_tags(tags: Iterable[TagSpec]) -> list[TagSpec]:
    return [t for t in tags if not t.discrete]


def status_tags(tags: Iterable[TagSpec]) -> list[TagSpec]:
    return [t for t in tags if t.discrete]


def register_map(tags: Sequence[TagSpec], word_order: str = "big") -> list[RegisterEntry]:
    """Every entry of the map in table order (holding, input, coil, discrete), each table by address."""
    order = check_word_order(word_order)
    analog = analog_tags(tags)
    status = status_tags(tags)
    entries: list[RegisterEntry] = []
    for j, spec in enumerate(analog):
        entries.append(RegisterEntry(spec.name, "holding", 2 * j, 2, "float32", 1.0, 0, order))
    for j, spec in enumerate(analog):
        decimals = int16_decimals(spec.lo, spec.hi)
        entries.append(RegisterEntry(spec.name, "input", j, 1, "int16", 10.0**-decimals, decimals))
    for table in ("coil", "discrete"):
        for m, spec in enumerate(status):
            entries.append(RegisterEntry(spec.name, table, m, 1, "bool", 1.0))  # type: ignore[arg-type]
    return entries


def unit_id_for(plant_name: str) -> int:
    try:
        return UNIT_IDS[plant_name]
    except KeyError:
        raise ValueError(f"no default Modbus unit id for plant {plant_name!r}; pass unit_id") from None


def markdown_table(tags: Sequence[TagSpec], word_order: str = "big") -> str:
    """The map as a Markdown table, one row per tag in catalog order (what the README shows per plant).

    Addresses are 0-based; ``a-b`` is a two-register float32. The int16 columns give the scale
    (``value = raw * scale``) and the largest magnitude the register holds before it saturates.
    """
    rows: dict[str, dict[str, RegisterEntry]] = {}
    for e in register_map(tags, word_order):
        rows.setdefault(e.tag, {})[e.table] = e
    lines = [
        "| tag | unit | holding float32 (FC3) | input int16 (FC4) | int16 scale | int16 saturates at "
        "| coil (FC1) = discrete input (FC2) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for spec in tags:
        t = rows[spec.name]
        if spec.discrete:
            cells = ["-", "-", "-", "-", str(t["coil"].address)]
        else:
            h, i = t["holding"], t["input"]
            cells = [f"{h.address}-{h.address + 1}", str(i.address), f"{i.scale:g}", f"±{INT16_MAX * i.scale:g}", "-"]
        lines.append("| " + " | ".join([spec.name, spec.unit or "-", *cells]) + " |")
    return "\n".join(lines)


__all__ = [
    "HEADROOM",
    "INT16_MAX",
    "INT16_NO_VALUE",
    "UNIT_IDS",
    "WORD_ORDERS",
    "RegisterEntry",
    "Table",
    "WordOrder",
    "analog_tags",
    "check_word_order",
    "int16_decimals",
    "markdown_table",
    "register_map",
    "status_tags",
    "unit_id_for",
]
