"""The Modbus source's options: documented in sample.yaml and README.md, and bad configs rejected at their path."""

from __future__ import annotations

from typing import Annotated, Any, Union

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

import collector.config as config_module
from collector.receivers.modbus import ModbusOptions, ModbusReceiver, RegisterSpec
from collector.receivers.modbus.options import ModbusTlsOptions
from collector.receivers.replay import ReplayOptions
from collector.sources import TagConfig
from tests.conftest import ROOT

FOLDER = ROOT / "collector" / "receivers" / "modbus"


def test_sample_and_readme_document_every_option() -> None:
    """The same check as test_every_receiver_folder_documents_every_option, plus the register entry's keys."""
    assert ModbusReceiver.kind == "modbus" and ModbusReceiver.options_model is ModbusOptions
    readme = (FOLDER / "README.md").read_text()
    sample = yaml.safe_load((FOLDER / "sample.yaml").read_text())
    assert isinstance(sample, list) and sample[0]["kind"] == "modbus"
    source = sample[0]
    assert set(source) == set(ModbusOptions.model_fields), "sample.yaml must list every option"
    assert set(source["tags"][0]) == set(TagConfig.model_fields)
    assert set(source["registers"][0]) == set(RegisterSpec.model_fields)
    for key, field in ModbusOptions.model_fields.items():
        if key in ("name", "tags"):  # SourceBase's, documented with every source
            continue
        assert field.description, f"{key} has no description"
        if key != "kind":
            assert f"`{key}`" in readme, f"README.md does not list {key}"
        if key not in ("kind", "registers"):
            assert source[key] == field.get_default(call_default_factory=True), f"sample.yaml: {key} is not its default"
    for key, field in RegisterSpec.model_fields.items():
        assert field.description and f"`{key}`" in readme
        if key != "tag":
            assert source["registers"][0][key] == field.get_default(), f"sample.yaml: registers[0].{key}"
    opts = ModbusOptions.model_validate(source)
    assert opts.reconnect_max_s <= 10 and opts.max_registers_per_read == 125


def test_sample_shows_every_tls_option_with_its_default() -> None:
    """tls defaults to null, so a second sample source carries the tls mapping, every key at its default."""
    readme = (FOLDER / "README.md").read_text()
    sample = yaml.safe_load((FOLDER / "sample.yaml").read_text())
    assert [s["kind"] for s in sample] == ["modbus", "modbus"]
    assert sample[0]["tls"] is None
    tls = sample[1]["tls"]
    assert set(tls) == set(ModbusTlsOptions.model_fields), "sample.yaml must show every tls option"
    for key, field in ModbusTlsOptions.model_fields.items():
        assert tls[key] == field.get_default(), f"sample.yaml: tls.{key} is not its default"
        assert field.description and f"`tls.{key}`" in readme, f"README.md does not list tls.{key}"
    opts = ModbusOptions.model_validate(sample[1])
    assert opts.tls == ModbusTlsOptions() and opts.tls.verify_hostname


def base(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "plc",
        "kind": "modbus",
        "tags": [{"name": "A"}, {"name": "B"}, {"name": "C"}, {"name": "D"}],
        "registers": [
            {"tag": "A", "table": "holding", "address": 0, "type": "float32"},
            {"tag": "B", "table": "input", "address": 0, "type": "int16", "scale": 0.1},
            {"tag": "C", "table": "coil", "address": 0},
            {"tag": "D", "table": "discrete", "address": 3, "type": "bool"},
        ],
    }
    doc.update(changes)
    return doc


def problems(doc: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        ModbusOptions.model_validate(doc)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_a_valid_source_and_its_defaults() -> None:
    opts = ModbusOptions.model_validate(base())
    assert (opts.host, opts.port, opts.unit_id, opts.reconnect_max_s) == ("127.0.0.1", 502, 1, 10.0)
    assert [r.resolved_type for r in opts.registers] == ["float32", "int16", "bool", "bool"]
    assert [r.count for r in opts.registers] == [2, 1, 1, 1]


def test_register_errors_carry_their_path() -> None:
    doc = base()
    doc["registers"][3] = {"tag": "D", "table": "discrete", "address": 3, "type": "float16"}
    ((loc, msg),) = problems(doc)
    assert loc == ("registers", 3, "type") and "int16" in msg and "float64" in msg

    doc = base()
    doc["registers"][1]["tag"] = "Z"
    found = problems(doc)
    assert (("registers", 1, "tag"), "'Z' is not a tag of this source (its tags: A, B, C, D)") in found
    assert (("registers",), "tag 'B' (tags[1]) has no register entry") in found

    doc = base()
    doc["registers"].append({"tag": "A", "table": "holding", "address": 8, "type": "int32"})
    assert problems(doc) == [(("registers", 4, "tag"), "tag 'A' already has a register at registers[0]")]

    doc = base()
    doc["registers"][2]["type"] = "int16"
    doc["registers"][0]["type"] = "bool"
    doc["registers"][1]["order"] = "ADCB"
    found = problems(doc)
    assert found[0][0] == ("registers", 1, "order")  # field errors first; the cross checks need a valid model
    doc["registers"][1]["order"] = "DCBA"
    found = dict(problems(doc))
    assert "type must be bool" in found[("registers", 2, "type")]
    assert found[("registers", 0, "type")].startswith("must be one of int16, uint16")

    doc = base()
    doc["registers"][0].update(address=65535)
    doc["registers"][1].update(no_value=-32768, scale=float("nan"))
    assert problems(doc) == [(("registers", 1, "scale"), "Input should be a finite number")]
    doc["registers"][1]["scale"] = 0.1
    assert problems(doc) == [(("registers", 0, "address"), "a float32 at 65535 runs past address 65535")]


def test_source_option_limits() -> None:
    for key, value in [
        ("max_registers_per_read", 126),
        ("max_bits_per_read", 2001),
        ("reconnect_max_s", 300),
        ("port", 0),
        ("unit_id", 256),
        ("timeout_s", 0),
        ("poll_interval_s", 0),
        ("max_gap", -1),
        ("bogus", 1),
    ]:
        found = problems(base(**{key: value}))
        assert [loc for loc, _ in found] == [(key,)], (key, found)
    assert problems(base(reconnect_min_s=5, reconnect_max_s=2)) == [
        (("reconnect_min_s",), "must not exceed reconnect_max_s")
    ]
    doc = base(max_registers_per_read=3)
    doc["registers"][0]["type"] = "float64"
    assert problems(doc) == [(("max_registers_per_read",), "must be at least 4 for the float64 at registers[0]")]
    doc = base()
    doc["tags"][0]["column"] = "40001"
    assert [loc for loc, _ in problems(doc)] == [("tags", 0, "column")]


def test_errors_render_as_config_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a config, the loader prints them as sources[1].registers[3].type: must be one of ..."""

    class Doc(BaseModel):
        sources: list[Annotated[Union[ReplayOptions, ModbusOptions], Field(discriminator="kind")]]  # noqa: UP007

    monkeypatch.setattr(config_module, "source_kinds", lambda: ["replay", "modbus"])
    second = base()
    second["registers"][3]["type"] = "float16"
    second["registers"][0]["tag"] = "nope"
    first = base(name="other")
    with pytest.raises(ValidationError) as info:
        Doc.model_validate({"sources": [first, second]})
    assert config_module._problems(info.value) == [
        (
            "sources[1].registers[3].type",
            "must be one of int16, uint16, int32, uint32, float32, int64, float64, bool",
        )
    ]
    second["registers"][3]["type"] = "bool"
    with pytest.raises(ValidationError) as info:
        Doc.model_validate({"sources": [first, second]})
    rendered = dict(config_module._problems(info.value))
    assert rendered["sources[1].registers[0].tag"].startswith("'nope' is not a tag of this source")
    assert rendered["sources[1].registers"] == "tag 'A' (tags[0]) has no register entry"


def test_sample_yaml_round_trips_through_yaml() -> None:
    """The sample's register entry keeps its meaning as a config file would carry it."""
    text = (FOLDER / "sample.yaml").read_text()
    opts = ModbusOptions.model_validate(yaml.safe_load(text)[0])
    assert opts.registers[0].resolved_type == "uint16" and opts.registers[0].order == "ABCD"
