"""Options of a Modbus TCP source: the device, the polling, and one register entry per tag.

A tag's ``column`` is not used by Modbus sources: where a tag lives on the
device (table, address, type, byte/word order, scale, offset) is given in the
source's ``registers:`` list, one entry per tag, checked against the source's
tags so that a typo is an error at its path (``sources[1].registers[3].tag``),
not a tag that silently never updates.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from collector.sources import ClientTls, SourceBase, Strict

Table = Literal["holding", "input", "coil", "discrete"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "float64", "bool"]
Order = Literal["ABCD", "DCBA", "BADC", "CDAB"]

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
# Registers (16-bit words) a value of each type occupies; a bool is one bit of a coil/discrete table.
WORDS: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "float64": 4,
    "bool": 1,
}
MAX_REGISTERS_PER_READ = 125  # Modbus application protocol, FC3/FC4
MAX_BITS_PER_READ = 2000  # FC1/FC2
ADDRESS_SPACE = 65536


class RegisterSpec(Strict):
    """Where one tag lives on the device and how its raw value becomes an engineering value."""

    tag: str = Field(description="Name of a tag of this source.")
    table: Table = Field(
        default="holding", description="holding (FC3), input (FC4), coil (FC1) or discrete (FC2) inputs."
    )
    address: Annotated[int, Field(ge=0, lt=ADDRESS_SPACE)] = Field(
        default=0, description="0-based PDU address as on the wire (a 1-based 4xxxx reference minus 1)."
    )
    type: RegisterType | None = Field(
        default=None,
        description="int16, uint16, int32, uint32, float32, int64, float64 or bool; "
        "null: bool for coil/discrete, uint16 for holding/input.",
    )
    order: Order = Field(
        default="ABCD",
        description="Byte order of the value as letters A (most significant) .. D across the registers: "
        "ABCD big endian, CDAB word-swapped, BADC byte-swapped, DCBA little endian.",
    )
    scale: float = Field(default=1.0, allow_inf_nan=False, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, allow_inf_nan=False, description="value = raw * scale + offset.")
    no_value: int | None = Field(
        default=None, description="A raw integer the device sends for 'no value' (e.g. -32768): read as BAD."
    )

    @property
    def resolved_type(self) -> str:
        if self.type is not None:
            return self.type
        return "bool" if self.table in BIT_TABLES else "uint16"

    @property
    def count(self) -> int:
        """Registers (or bits) the value occupies."""
        return WORDS[self.resolved_type]


class ModbusTlsOptions(ClientTls):
    """Modbus/TLS (Modbus Security, port 802): the device's certificate is always verified.

    Modbus/TLS devices usually demand a client certificate too (cert_file and key_file).
    """


class ModbusOptions(SourceBase):
    kind: Literal["modbus"] = Field(description="modbus: a Modbus TCP device, polled, read-only.")
    host: str = Field(default="127.0.0.1", min_length=1, description="Device or gateway address (IP or DNS name).")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=502, description="TCP port of the Modbus server.")
    unit_id: Annotated[int, Field(ge=0, le=255)] = Field(
        default=1, description="Unit id (slave id) of the device behind this address; 0..255."
    )
    poll_interval_s: Annotated[float, Field(ge=0.01, le=3600)] = Field(
        default=1.0, description="Seconds between the starts of two polls of every register block."
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=3.0, description="Seconds to wait for a TCP connect or for the answer to one read."
    )
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=0.5, description="First delay before reconnecting; doubles per failed attempt, with jitter."
    )
    reconnect_max_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=10.0, description="Cap of the reconnect delay (never pymodbus' 300 s)."
    )
    max_registers_per_read: Annotated[int, Field(ge=1, le=MAX_REGISTERS_PER_READ)] = Field(
        default=MAX_REGISTERS_PER_READ, description="Largest FC3/FC4 read; 125 is the protocol's limit."
    )
    max_bits_per_read: Annotated[int, Field(ge=1, le=MAX_BITS_PER_READ)] = Field(
        default=MAX_BITS_PER_READ, description="Largest FC1/FC2 read; 2000 is the protocol's limit."
    )
    max_gap: Annotated[int, Field(ge=0, le=MAX_REGISTERS_PER_READ)] = Field(
        default=10,
        description="Unused registers (or bits) one read may span to join two entries; 0 reads only contiguous "
        "runs. A block whose gap the device refuses (illegal address) is split into contiguous reads.",
    )
    tls: ModbusTlsOptions | None = Field(
        default=None, description="null: plain Modbus TCP; a mapping: Modbus/TLS with a verified certificate."
    )
    registers: list[RegisterSpec] = Field(
        default_factory=list, description="One entry per tag of this source: where the device holds it."
    )

    @model_validator(mode="wrap")
    @classmethod
    def _registers_match_tags(cls, data: Any, handler: ModelWrapValidatorHandler[ModbusOptions]) -> ModbusOptions:
        model = handler(data)
        problems = list(_cross_problems(model))
        if problems:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(type=PydanticCustomError("modbus_registers", msg), loc=loc, input=value)
                    for loc, msg, value in problems
                ],
            )
        return model


def _cross_problems(opts: ModbusOptions) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Checks between the tags, the registers and the limits: (loc, message, offending input)."""
    out: list[tuple[tuple[str | int, ...], str, Any]] = []
    names = [t.name for t in opts.tags]
    known = set(names)
    for j, tag in enumerate(opts.tags):
        if tag.column is not None:
            out.append(
                (
                    ("tags", j, "column"),
                    "not used by modbus sources: give the tag's address in this source's registers",
                    tag.column,
                )
            )
    if opts.reconnect_min_s > opts.reconnect_max_s:
        out.append((("reconnect_min_s",), "must not exceed reconnect_max_s", opts.reconnect_min_s))
    first: dict[str, int] = {}
    for i, reg in enumerate(opts.registers):
        loc: tuple[str | int, ...] = ("registers", i)
        if reg.tag not in known:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            out.append(((*loc, "tag"), f"{reg.tag!r} is not a tag of this source (its tags: {shown})", reg.tag))
        elif reg.tag in first:
            out.append(
                ((*loc, "tag"), f"tag {reg.tag!r} already has a register at registers[{first[reg.tag]}]", reg.tag)
            )
        else:
            first[reg.tag] = i
        kind = reg.resolved_type
        if reg.table in BIT_TABLES and kind != "bool":
            out.append(((*loc, "type"), f"a {reg.table} is one bit: type must be bool (or null)", reg.type))
        elif reg.table not in BIT_TABLES and kind == "bool":
            out.append(
                (
                    (*loc, "type"),
                    f"must be one of int16, uint16, int32, uint32, float32, int64, float64 for a {reg.table} register",
                    reg.type,
                )
            )
        if reg.address + reg.count > ADDRESS_SPACE:
            out.append(((*loc, "address"), f"a {kind} at {reg.address} runs past address 65535", reg.address))
        if reg.table not in BIT_TABLES and reg.count > opts.max_registers_per_read:
            out.append(
                (
                    ("max_registers_per_read",),
                    f"must be at least {reg.count} for the {kind} at registers[{i}]",
                    opts.max_registers_per_read,
                )
            )
        if reg.no_value is not None and kind in ("float32", "float64", "bool"):
            out.append(((*loc, "no_value"), f"only for integer types, not {kind}", reg.no_value))
    for j, name in enumerate(names):
        if name not in first:
            out.append((("registers",), f"tag {name!r} (tags[{j}]) has no register entry", name))
    return out
