"""The tag catalogs: honest enough that a plantwatch config can be generated from them."""

from __future__ import annotations

import re

import pytest

from collector.config import parse_config
from collector.sources import TAG_NAME_PATTERN as COLLECTOR_PATTERN
from sim_plant.catalog import ROLES, TAG_NAME_PATTERN, TagSpec, as_config_tags
from sim_plant.plants import PLANTS, ChemicalPlant, OilPlant, Plant, RadiologicalPlant


def test_plants_registry_is_the_three_models() -> None:
    assert list(PLANTS.items()) == [("oil", OilPlant), ("chemical", ChemicalPlant), ("radiological", RadiologicalPlant)]
    assert [cls.name for cls in PLANTS.values()] == list(PLANTS)


def test_tag_pattern_is_the_collectors() -> None:
    assert TAG_NAME_PATTERN == COLLECTOR_PATTERN


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_catalog_sanity(cls: type[Plant]) -> None:
    tags = cls.TAGS
    assert 10 <= len(tags) <= 20
    names = [t.name for t in tags]
    assert len(set(names)) == len(names)
    assert len({n.lower() for n in names}) == len(names), "names must differ in more than case"
    loops = {t.loop for t in tags if t.role == "setpoint"}
    for t in tags:
        assert re.fullmatch(TAG_NAME_PATTERN, t.name), t.name
        assert t.lo < t.hi, t.name
        assert t.role in ROLES
        assert t.description.strip() and t.area.strip()
        if t.role in ("measurement", "setpoint", "actuator"):
            assert t.unit.strip(), f"{t.name} needs a unit"
        if t.role == "status":
            assert t.noise_sd == 0 and t.counts_per_unit is None, "a status is exact"
            assert (t.lo < 0 < t.hi) != (t.lo < 1 < t.hi), f"{t.name}: its range must say which of 0/1 is normal"
        if t.role == "setpoint":
            assert t.noise_sd == 0 and t.loop is not None and t.name in cls.SETPOINTS
            assert t.lo <= cls.SETPOINTS[t.name] <= t.hi
        if t.role == "actuator" and t.loop is not None:
            assert t.loop in loops, f"{t.name}: loop {t.loop} has no setpoint tag"
    # every loop with a setpoint acts on something and measures something
    for loop in loops:
        roles = {t.role for t in tags if t.loop == loop}
        assert {"setpoint", "measurement"} <= roles, loop
    assert {t.role for t in tags} >= {"measurement", "setpoint", "actuator", "status"}


def test_radiological_monitors_count() -> None:
    monitors = [t for t in RadiologicalPlant.TAGS if t.counts_per_unit is not None]
    assert len(monitors) >= 3
    assert {t.unit for t in monitors} == {"uSv/h", "Bq/m3"}


@pytest.mark.parametrize("cls", PLANTS.values(), ids=PLANTS.keys())
def test_config_tags_make_a_valid_plantwatch_config(cls: type[Plant], tmp_path) -> None:
    tags = as_config_tags(cls.TAGS)
    assert [t["name"] for t in tags] == cls.tag_names()
    recording = tmp_path / "r.csv"
    recording.write_text("timestamp\n")
    doc = {
        "site": "sim",
        "state_dir": "state",
        "sources": [{"name": cls.name, "kind": "replay", "path": str(recording), "tags": tags}],
    }
    cfg = parse_config(doc, tmp_path)
    by_name = {t.name: t for t in cfg.tags}
    for spec in cls.TAGS:
        tag = by_name[spec.name]
        assert tag.range == (spec.lo, spec.hi)
        assert tag.unit == spec.unit
        assert tag.type == ("discrete" if spec.role == "status" else "analog")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "9BAD"}, "does not match"),
        ({"name": "TK 1"}, "does not match"),
        ({"lo": 2.0, "hi": 2.0}, "must be below"),
        ({"role": "alarm"}, "role"),
        ({"noise_sd": -1.0}, "negative"),
        ({"counts_per_unit": 0.0}, "positive"),
    ],
)
def test_tagspec_rejects_nonsense(kwargs: dict, message: str) -> None:
    base = {"name": "X.Y", "unit": "m", "lo": 0.0, "hi": 1.0, "description": "d", "area": "a"}
    with pytest.raises(ValueError, match=message):
        TagSpec(**{**base, **kwargs})


def test_tagspec_is_frozen() -> None:
    spec = OilPlant.TAGS[0]
    with pytest.raises(AttributeError):
        spec.lo = 0.0  # type: ignore[misc]
