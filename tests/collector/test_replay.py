"""The replay source and ``plantwatch replay``: formats, bad data, outputs, and one code path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
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


# -- ground truth and scoring (``--labels``, ``--report``) ---------------------------------------


@pytest.fixture
def cli_main(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[list[str]], int]]:
    """``plantwatch`` in-process, without touching the test session's logging."""
    import logging

    import collector.logs
    from collector.cli import main

    monkeypatch.setattr(collector.logs, "setup_logging", lambda *a, **k: None)
    runner_log = logging.getLogger("plantwatch.runner")
    level = runner_log.level
    yield main
    runner_log.setLevel(level)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", "replay", *args, "--no-progress"], capture_output=True, text=True, cwd=ROOT
    )


def test_labels_from_the_column_a_csv_file_and_a_scenario_agree(tmp_path: Path) -> None:
    from collector.replay import replay

    cfg = load_config(DEMO_CONFIG)
    default = replay(cfg, DEMO_RECORDING, tmp_path / "a", progress=False)
    rows = list(csv.DictReader(DEMO_RECORDING.open()))
    labels = tmp_path / "labels.csv"
    labels.write_text("timestamp,label\n" + "".join(f"{r['timestamp']},{r['label']}\n" for r in rows))
    from_file = replay(cfg, DEMO_RECORDING, tmp_path / "b", progress=False, labels=str(labels))
    scenario = tmp_path / "faults.yaml"
    steps = [("spoof", 900, 60), ("freeze", 1300, 200), ("silence", 1700, 60)]
    scenario.write_text(
        "plant: oil\ndescription: the demo's three faults\nstealth: overt\nsteps:\n"
        + "".join(
            f"  - {{id: {i}, kind: bias, target: TK101.LEVEL, start_s: {s}, duration_s: {d}, params: {{offset: 1}}}}\n"
            for i, s, d in steps
        )
    )
    from_yaml = replay(cfg, DEMO_RECORDING, tmp_path / "c", progress=False, labels=str(scenario))
    cards = [r.scorecard for r in (default, from_file, from_yaml)]
    assert all(c is not None for c in cards)
    windows = [[(s.step.start, s.step.end, s.detected, s.time_to_detect_s) for s in c.steps] for c in cards]
    assert windows[0] == windows[1] == windows[2]
    assert [s.step.id for s in cards[2].steps] == ["spoof", "freeze", "silence"]
    assert cards[0].pointwise == cards[1].pointwise == cards[2].pointwise == default.summary.pointwise
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["scoring"]["detected"] == 3 and summary["labels"].startswith("scenario ")


def test_skab_scores_with_a_training_span_and_leaderboard_rates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_main: Callable[[list[str]], int]
) -> None:
    path = DATASETS / "skab" / "data" / "valve1" / "0.csv"
    out = tmp_path / "out"
    args = [str(path), "-c", str(ROOT / "config" / "skab.yaml"), "-o", str(out), "--no-progress"]
    assert cli_main(["replay", *args, "--labels", "anomaly", "--train-rows", "400"]) == 0
    stdout = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    rows = sum(1 for _ in path.open()) - 1
    assert summary["labelled_ticks"] == rows - 400  # point-wise over rows, as the leaderboard counts
    skab = summary["scoring"]["skab"]
    p = summary["pointwise"]
    assert skab["far_pct"] == pytest.approx(100 * p["fp"] / (p["fp"] + p["tn"]))
    assert skab["mar_pct"] == pytest.approx(100 * p["fn"] / (p["fn"] + p["tp"]))
    assert summary["scoring"]["steps"], "SKAB's anomaly runs become events"
    assert "attack steps (column 'anomaly')" in stdout


def test_bad_labels_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_main: Callable[[list[str]], int]
) -> None:
    def run(labels: str) -> tuple[int, str]:
        args = [str(DEMO_RECORDING), "-c", str(DEMO_CONFIG), "-o", str(tmp_path / "out"), "--no-progress"]
        code = cli_main(["replay", *args, "--labels", labels])
        return code, capsys.readouterr().err

    code, err = run("ATT_FLAG")
    assert code == 2 and "labels: 'ATT_FLAG' is neither a column of the recording" in err
    bad = tmp_path / "labels.csv"
    bad.write_text("time,flag\n2026-01-15T08:00:00,0\n")
    code, err = run(str(bad))
    assert code == 2 and "no 'timestamp' column" in err
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("plant: oil\ndescription: x\nstealth: overt\nsteps:\n  - {id: a, kind: bias, start_s: 0}\n")
    code, err = run(str(scenario))
    assert code == 2 and "labels:" in err and "bad.yaml" in err
    code, _ = run("label")  # the column the config names anyway
    assert code == 0


def test_cli_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = _cli(str(DEMO_RECORDING), "-c", str(DEMO_CONFIG), "-o", str(tmp_path / "out"), "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "3/3 detected" in result.stdout and f"report in {report}" in result.stdout
    assert {p.name for p in report.iterdir()} == {"report.html", "report.md", "report.json"}


def test_replay_piped_into_a_reader_that_leaves_exits_quietly(tmp_path: Path) -> None:
    """`plantwatch replay ... | head -1`: no traceback when the pipe closes, outputs still written."""
    import os

    out = tmp_path / "out"
    args = [sys.executable, "-m", "collector", "replay", str(DEMO_RECORDING), "-c", str(DEMO_CONFIG), "-o", str(out)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is already gone: the first line printed meets a broken pipe
    try:
        result = subprocess.run([*args, "--no-progress"], cwd=ROOT, stdout=write_end, capture_output=False,
                                stderr=subprocess.PIPE, timeout=60)  # fmt: skip
    finally:
        os.close(write_end)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert json.loads((out / "summary.json").read_text())["ticks"] > 0
