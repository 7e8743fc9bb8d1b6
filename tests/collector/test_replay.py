"""The replay source and ``plantwatch replay``: formats, bad data, outputs, and one code path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import collector.receivers.replay.receiver as replay_receiver
from collector import __version__
from collector.config import load_config, parse_config
from collector.receivers import RECEIVERS
from collector.replay import run_replay
from collector.sources import TagConfig
from tests.conftest import DATASETS, DEMO_CONFIG, DEMO_RECORDING, ROOT


def test_every_receiver_folder_documents_every_option() -> None:
    for kind, cls in RECEIVERS.items():
        folder = ROOT / "collector" / "receivers" / kind
        assert (folder / "README.md").read_text().strip()
        sample = yaml.safe_load((folder / "sample.yaml").read_text())
        assert isinstance(sample, list) and sample[0]["kind"] == kind
        assert set(sample[0]) == set(cls.options_model.model_fields), "sample.yaml must list every option"
        assert set(sample[0]["tags"][0]) == set(TagConfig.model_fields)
        cfg = parse_config({"site": "s", "state_dir": "state", "sources": sample}, ROOT / "config")
        assert cfg.sources[0].kind == kind


def minimal_config(tmp_path: Path, recording: Path, tags: list[dict], tick_s: float = 1.0, **options) -> Path:
    doc = {
        "site": "t",
        "state_dir": str(tmp_path / "state"),
        "pipeline": {"tick_s": tick_s},
        "sources": [{"name": "rec", "kind": "replay", "path": str(recording), "tags": tags, **options}],
    }
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("recording", "options", "columns"),
    [
        (
            "skab/data/valve1/0.csv",
            {"separator": ";", "timestamp_column": "datetime", "label_column": "anomaly"},
            {"FLOW": "Volume Flow RateRMS", "PRESSURE": "Pressure"},
        ),
        (
            "batadal/BATADAL_dataset04.csv",
            {
                "timestamp_column": "DATETIME",
                "timestamp_format": "%d/%m/%y %H",
                "label_column": "ATT_FLAG",
                "tick_s": 3600,
            },
            {"L_T1": "L_T1", "P_J280": "P_J280"},
        ),
        (
            "tep/d01.dat",
            {
                "separator": "whitespace",
                "header": False,
                "timestamp_column": None,
                "row_interval_s": 180,
                "tick_s": 180,
            },
            {"XMEAS_01": "1", "XMV_11": "52"},
        ),
    ],
    ids=["skab", "batadal", "tep"],
)
def test_public_datasets_replay_without_conversion(
    tmp_path: Path, recording: str, options: dict, columns: dict
) -> None:
    path = DATASETS / recording
    assert path.exists(), f"{path} is missing: the datasets live in ../shared/datasets beside the checkout"
    tags = [{"name": name, "column": column} for name, column in columns.items()]
    cfg = load_config(minimal_config(tmp_path, path, tags, **options))
    summary = run_replay(cfg, path, tmp_path / "out", progress=False)
    rows = sum(
        1 for line in path.read_text().splitlines()[(0 if options.get("header") is False else 1) :] if line.strip()
    )
    assert summary.rows == rows
    assert rows <= summary.ticks <= rows * 1.1  # one tick per row, plus the gaps in the recording
    assert summary.malformed_cells == 0
    if "label_column" in options:
        assert summary.labelled_ticks > 0 and summary.pointwise is not None


def test_bad_cells_are_counted_and_survived(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = tmp_path / "bad.csv"
    lines = ["timestamp,A,B"]
    for i in range(200):
        a = "oops" if i == 50 else ("inf" if i == 60 else f"{10 + (i % 7) * 0.1:.2f}")
        b = "" if 100 <= i < 140 else f"{(i % 5) * 0.2:.2f}"
        lines.append(f"{1_700_000_000 + i},{a},{b}")
    rec.write_text("\n".join(lines) + "\n")
    cfg = load_config(minimal_config(tmp_path, rec, [{"name": "A"}, {"name": "B"}], timestamp_format="epoch_s"))
    summary = run_replay(cfg, rec, tmp_path / "out", progress=False)
    assert summary.rows == 200
    assert summary.malformed_cells == 1
    assert summary.non_finite == 1
    warned = [r for r in caplog.records if "further ones are counted" in r.getMessage()]
    assert sorted(getattr(r, "kind", "") for r in warned) == ["malformed", "non_finite"]
    alerts = list(csv.DictReader((tmp_path / "out" / "alerts.csv").open()))
    assert any(a["tag"] == "B" and a["detector"] == "stale" and a["event"] == "firing" for a in alerts)


def test_replay_outputs_carry_labels_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "collector", "replay", str(DEMO_RECORDING), "-c", str(DEMO_CONFIG), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "replay 100%" in result.stderr  # the progress bar, in its non-terminal form
    assert "against labels" in result.stdout
    with (out / "scores.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert "PT101.PRESSURE/ewma" in (reader.fieldnames or [])
    assert len(rows) == 1800
    assert rows[950]["label"] == "1" and rows[100]["label"] == "0"
    assert float(rows[950]["PT101.PRESSURE/ewma"]) >= 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 1800 and summary["pointwise"]["recall"] > 0.5
    journal = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert len(journal) == sum(summary["transitions"].values())


def test_batching_does_not_change_verdicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However the recording is cut into batches, the frames, scores and alerts are the same."""
    cfg = load_config(DEMO_CONFIG)
    outputs = []
    for cells in (1 << 18, 8 * 7, 8):  # the whole file, 7 rows, 1 row per batch
        monkeypatch.setattr(replay_receiver, "MAX_CELLS_PER_BATCH", cells)
        out = tmp_path / f"out{cells}"
        run_replay(cfg, DEMO_RECORDING, out, progress=False)
        outputs.append(((out / "scores.csv").read_text(), (out / "alerts.csv").read_text()))
    assert outputs[0] == outputs[1] == outputs[2]


def test_version_and_console_script() -> None:
    result = subprocess.run([sys.executable, "-m", "collector", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == f"plantwatch {__version__}"
    script = Path(sys.executable).parent / "plantwatch"
    if script.exists():  # installed by the README's commands; a bare checkout runs through -m
        result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
        assert result.stdout.strip() == f"plantwatch {__version__}"
