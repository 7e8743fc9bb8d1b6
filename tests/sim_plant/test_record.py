"""Recordings: the format the replay source reads, and the command line that writes them."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from collector.receivers.replay.options import ReplayOptions
from collector.receivers.replay.recording import Recording
from sim_plant.catalog import as_config_tags
from sim_plant.plants import PLANTS
from sim_plant.record import DEFAULT_START, main, record
from tests.conftest import ROOT


def read(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_layout_and_values(tmp_path) -> None:
    plant = PLANTS["chemical"](seed=1)
    expected = [plant.measured()]
    out = record(plant, 120, tmp_path / "r.csv", include_true=True)
    names = plant.tag_names()
    rows = read(out)
    assert rows[0] == ["timestamp", *names, *(f"{n}.true" for n in names), "label"]
    assert len(rows) == 121
    assert rows[1][0] == "2026-01-15T00:00:00" and rows[2][0] == "2026-01-15T00:00:01"
    assert {r[-1] for r in rows[1:]} == {"0"}
    first = np.array([float(c) for c in rows[1][1 : 1 + len(names)]])
    assert np.allclose(first, expected[0], rtol=1e-6)
    true_cols = np.array([[float(c) for c in r[1 + len(names) : -1]] for r in rows[1:]])
    measured_cols = np.array([[float(c) for c in r[1 : 1 + len(names)]] for r in rows[1:]])
    assert not np.array_equal(true_cols, measured_cols)
    assert plant.steps == 120


def test_without_true_columns(tmp_path) -> None:
    rows = read(record(PLANTS["oil"](seed=1), 3, tmp_path / "r.csv"))
    assert rows[0] == ["timestamp", *PLANTS["oil"].tag_names(), "label"]


def test_a_warm_plant_keeps_its_clock_and_start_is_utc(tmp_path) -> None:
    plant = PLANTS["oil"](seed=1)
    plant.run(60)
    paris = timezone(timedelta(hours=1))
    rows = read(record(plant, 2, tmp_path / "r.csv", start=datetime(2026, 3, 1, 13, 0, tzinfo=paris)))
    assert rows[1][0] == "2026-03-01T12:01:00", "written in UTC, 60 s into the plant's clock"
    with pytest.raises(ValueError, match="timezone"):
        record(plant, 1, tmp_path / "n.csv", start=datetime(2026, 1, 1))


@pytest.mark.parametrize("name", PLANTS)
def test_the_replay_source_reads_it(name: str, tmp_path) -> None:
    cls = PLANTS[name]
    out = record(cls(seed=4), 300, tmp_path / f"{name}.csv")
    options = ReplayOptions(name=name, kind="replay", path=out, label_column="label", tags=as_config_tags(cls.TAGS))
    recording = Recording(options, cls.tag_names())
    chunks = list(recording.chunks(rows_per_chunk=128))
    ts = np.concatenate([c.ts for c in chunks])
    values = np.concatenate([c.values for c in chunks])
    assert sum(c.malformed for c in chunks) == 0
    assert ts[0] == DEFAULT_START.timestamp() and np.all(np.diff(ts) == 1.0)
    again = cls(seed=4)
    expected = np.vstack([again.measured(), again.run(299)[1]])
    assert np.allclose(values, expected, rtol=1e-6, atol=1e-9)
    assert np.isfinite(values).all()


def test_cli_in_process(tmp_path, capsys) -> None:
    out = tmp_path / "cli.csv"
    assert main(["--plant", "radiological", "--steps", "50", str(out), "--seed", "1"]) == 0
    assert len(read(out)) == 51
    assert "50 rows of 18 tags" in capsys.readouterr().out


def test_cli_as_a_module(tmp_path) -> None:
    out = tmp_path / "m.csv"
    done = subprocess.run(
        [sys.executable, "-m", "sim_plant.record", "--plant", "oil", "--steps", "30", str(out), "--seed", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == record(PLANTS["oil"](seed=1), 30, tmp_path / "same.csv").read_bytes()


def test_cli_rejects_an_unknown_plant(tmp_path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--plant", "nuclear", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
