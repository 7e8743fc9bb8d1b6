"""The exercise report: self-contained HTML with real charts, Markdown and JSON carrying the same figures."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import numpy as np
import pytest

from collector.config import load_config
from collector.replay import replay
from collector.report.content import METRICS
from collector.report.svg import Series, chart, envelope
from tests.conftest import DEMO_CONFIG, DEMO_RECORDING, demo_config


def test_envelope_keeps_a_one_sample_spike_in_a_million() -> None:
    t = np.arange(1_000_000, dtype=np.float64)
    y = np.zeros_like(t)
    y[123_457] = 9.0
    y[::1000] = np.nan  # gaps do not break it
    x, lo, hi = envelope(t, y, 0.0, 1_000_000.0, 800)
    assert len(x) == 800 and lo.min() == 0.0 and hi.max() == 9.0
    assert int(x[np.argmax(hi)]) == 123_457 * 800 // 1_000_000


def test_chart_is_valid_svg_with_one_point_pair_per_pixel_bucket() -> None:
    t = np.arange(100_000, dtype=np.float64)
    out = chart([Series("TK101.LEVEL <m>", t, np.sin(t / 1000))], t0=0.0, t1=100_000.0, title="level & flow")
    root = ET.fromstring(out)  # well-formed, names escaped
    polyline = root.find("{http://www.w3.org/2000/svg}polyline")
    assert polyline is not None
    points = polyline.get("points", "").split()
    assert len(points) == 2 * (960 - 64 - 12)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    replay(load_config(DEMO_CONFIG), DEMO_RECORDING, out / "run", progress=False, report=out / "report")
    return out / "report"


def test_html_is_self_contained_and_shows_every_figure(demo_report: Path) -> None:
    page = (demo_report / "report.html").read_text()
    assert not re.search(r"<script|<link|@import|url\(|src=", page, re.I), "no scripts, external CSS, fonts or images"
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page), "no external address but the SVG namespace"
    for _, name, definition in METRICS:
        assert escape(name) in page and escape(definition) in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    for element in svgs:
        ET.fromstring(element)
    titles = [ET.fromstring(s).get("aria-label") for s in svgs]
    # worst score, alerts firing, the attacked signals with their scores, the timeline
    assert titles[0].startswith("worst anomaly score") and titles[-1] == "exercise timeline"
    assert any(t.startswith("PT101.PRESSURE: value") for t in titles)
    assert any(t.startswith("TT101.TEMP: worst score") for t in titles)
    shaded = next(s for s in svgs if "PT101.PRESSURE: value" in s)
    assert shaded.count("fill-opacity") == 3, "the three labelled events are shaded"
    assert "firing: ewma" in shaded


def test_json_and_markdown_carry_the_same_figures(demo_report: Path) -> None:
    doc = json.loads((demo_report / "report.json").read_text())
    md = (demo_report / "report.md").read_text()
    assert [m["key"] for m in doc["metrics"]] == [k for k, _, _ in METRICS]
    assert [s["id"] for s in doc["steps"]] == ["event 1", "event 2", "event 3"]
    assert all(s["detected"] for s in doc["steps"])
    # the spoofed pressure: the z-score and the PCA model (it stopped following the pump)
    assert doc["steps"][0]["detectors"] == ["ewma", "pca"] and doc["steps"][0]["time_to_detect_s"] == 5.0
    for m in doc["metrics"]:
        assert f"| {m['name']} | {m['shown']} |" in md
    events = [r["event"] for r in doc["timeline"]]
    assert events[0] == "step starts" and events.count("alert firing") == 4  # ewma and pca on the first event
    assert [r["elapsed_s"] for r in doc["timeline"]] == sorted(r["elapsed_s"] for r in doc["timeline"])
    assert doc["signals"][:3] == ["PT101.PRESSURE", "TT101.TEMP", "FT101.FLOW_IN"]


def test_report_without_ground_truth_still_charts_the_alerts(tmp_path: Path) -> None:
    lines = DEMO_RECORDING.read_text().splitlines()
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    config, _ = demo_config(tmp_path, path=str(bare), label_column=None)
    result = replay(load_config(config), bare, tmp_path / "run", progress=False, report=tmp_path / "report")
    assert result.truth is None and result.scorecard is None
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "metrics" not in doc and doc["signals"] and doc["labels"] is None
    assert "none: no label column" in (tmp_path / "report" / "report.html").read_text()


def test_overlapping_attack_windows_are_shaded_once() -> None:
    from collector.report.svg import Shade, merge_shades

    merged = merge_shades([Shade(10, 20, "a"), Shade(30, 40, "c"), Shade(15, 25, "b")])
    assert [(s.start, s.end, s.label) for s in merged] == [(10, 25, "a; b"), (30, 40, "c")]


def test_thousands_of_alerts_stay_one_mark_per_pixel_and_colour() -> None:
    from collector.report.svg import Mark, thin_marks

    marks = [Mark(float(t), "firing", "red") for t in range(10_000)] + [Mark(5.0, "resolved", "green")]
    thinned = thin_marks(marks, 0.0, 10_000.0, 100)
    assert len(thinned) == 101 and sum(m.color == "green" for m in thinned) == 1
    page = chart([Series("x", np.arange(10.0), np.arange(10.0))], t0=0.0, t1=10_000.0, title="t", marks=marks)
    assert page.count("<line") <= 2 * (960 - 64 - 12)
