"""Write the report folder: ``report.json`` (data), ``report.md`` (tables) and ``report.html``
(tables and inline SVG charts; one file, no scripts, no external CSS, fonts or images)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from collector.receivers.replay.recording import Recording
from collector.report import svg
from collector.report.content import MAX_TIMELINE_ROWS, build, duration
from collector.scoring.metrics import _finite

if TYPE_CHECKING:
    from collector.replay import ReplayResult

MAX_LANES = 40  # attack steps drawn as lanes of the timeline chart
EVENT_COLORS = {"firing": "#d62728", "escalated": "#8b0000", "resolved": "#2ca02c"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;width:100%}td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;white-space:nowrap}
.miss{color:#b00;font-weight:600}.hit{color:#070;font-weight:600}.late{color:#a60}.note{color:#666}
svg{display:block;margin:6px 0}svg text{font:11px sans-serif;fill:#333}svg .t{font-weight:600}
svg .ya{text-anchor:end}.def{color:#555;font-size:12px}
"""


def write_report(folder: Path, result: ReplayResult) -> dict[str, Any]:
    """report.json, report.md and report.html in ``folder``; returns the JSON document."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = build(result)
    (folder / "report.json").write_text(json.dumps(_finite(doc), indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(markdown(doc), encoding="utf-8")
    (folder / "report.html").write_text(html(doc, charts(result, doc)), encoding="utf-8")
    return doc


def _title(doc: dict[str, Any]) -> str:
    name = doc["scenario"].get("name") if doc["scenario"] else None
    return f"plantwatch exercise report: {name or Path(doc['recording']).name}"


def _steps_header() -> list[str]:
    return ["step", "kind / target", "starts", "lasts", "verdict", "time to detect", "first alert", "detectors", "tags"]


def _step_cells(s: dict[str, Any]) -> list[str]:
    verdict = ("detected after it ended" if s["after_end"] else "detected") if s["detected"] else "MISSED"
    if s.get("already_alarmed"):
        verdict += " (already alarmed: " + ", ".join(s["already_alarmed"]) + ")"
    target = " / ".join(x for x in (s["kind"], s["target"]) if x)
    return [
        s["id"],
        target,
        f"+{duration(s['start_elapsed_s'])}",
        duration(s["duration_s"]),
        verdict,
        duration(s["time_to_detect_s"]),
        (s["first_alert"] or "") + (f": {s['first_alert_reason']}" if s.get("first_alert_reason") else ""),
        ", ".join(s["detectors"]),
        ", ".join(s["tags"][:8]) + (f" (+{len(s['tags']) - 8})" if len(s["tags"]) > 8 else ""),
    ]


def _header_lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [
        ("recording", doc["recording"]),
        (
            "span",
            f"{doc['first_tick']} to {doc['last_tick']} UTC ({duration(doc['span_s'])}, {doc['ticks']} ticks "
            f"of {doc['tick_s']:g} s, {doc['tags']} tags)",
        ),
        ("ground truth", doc["labels"] or "none: no label column, only alerts are shown"),
    ]
    sc = doc["scenario"]
    if sc:
        lines.append(("scenario", f"{sc.get('name', '')} ({sc.get('stealth', '')}, {sc.get('plant', '')} plant)"))
        if sc.get("description"):
            lines.append(("threat", sc["description"].strip()))
    if "grace_s" in doc:
        lines.append(("grace", f"{duration(doc['grace_s'])} after each step"))
    if doc.get("scored_from"):
        lines.append(("scored from", f"{doc['scored_from']} UTC (earlier ticks were training)"))
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """The report's tables in Markdown (the charts are in report.html)."""

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    out = [f"# {_title(doc)}", ""]
    out += [f"- **{k}**: {v}" for k, v in _header_lines(doc)]
    out.append("")
    if "metrics" in doc:
        out += ["## Figures", "", row(["figure", "value", "definition"]), row(["---"] * 3)]
        out += [row([m["name"], m["shown"], m["definition"]]) for m in doc["metrics"]]
        out += ["", "## Attack steps", "", row(_steps_header()), row(["---"] * len(_steps_header()))]
        out += [row(_step_cells(s)) for s in doc["steps"]]
        out.append("")
    out += ["## Timeline", "", row(["time (UTC)", "elapsed", "event", "what", "verdict"]), row(["---"] * 5)]
    for r in doc["timeline"][:MAX_TIMELINE_ROWS]:
        out.append(row([r["time"], duration(r["elapsed_s"]), r["event"], r["what"], r.get("verdict", "")]))
    if len(doc["timeline"]) > MAX_TIMELINE_ROWS:
        out.append(f"\n{len(doc['timeline']) - MAX_TIMELINE_ROWS} later rows left out; report.json has them all.")
    out += ["", "Charts: report.html. Definitions: docs/scoring.md.", ""]
    return "\n".join(out)


def _signal_values(result: ReplayResult, tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The plotted tags' values, read again from the recording (the run keeps no values)."""
    source = result.trace.source
    keys = {t.name: t.source_key for t in source.tags}
    recording = Recording(source, [keys[t] for t in tags])
    ts, values = [], []
    for chunk in recording.chunks(1 << 14):
        ts.append(chunk.ts)
        values.append(chunk.values)
    if not ts:
        return np.empty(0), np.empty((0, len(tags)))
    return np.concatenate(ts), np.concatenate(values)


def charts(result: ReplayResult, doc: dict[str, Any]) -> dict[str, list[str]]:
    """The SVG charts, by section."""
    trace, card = result.trace, result.scorecard
    if not len(trace.ticks):
        return {"overview": [], "signals": [], "timeline": []}
    t0, t1 = float(trace.ticks[0]), float(trace.ticks[-1]) + trace.tick_s
    steps = result.truth.steps if result.truth is not None else []
    shades = [svg.Shade(s.start, s.end, f"{s.id}: {s.kind} {s.target}".strip()) for s in steps]
    firing_marks = [
        svg.Mark(t.ts, f"{t.event}: {t.detector} on {t.tag}", EVENT_COLORS["firing"])
        for t in trace.transitions
        if t.event == "firing"
    ]
    overview = [
        svg.chart(
            [svg.Series("worst score", trace.ticks, trace.worst.astype(np.float64), "#333")],
            t0=t0,
            t1=t1,
            title="worst anomaly score, any tag and detector (attack steps shaded, alerts starting in red)",
            shades=shades,
            marks=firing_marks,
            y_range=(0.0, 1.0),
            hlines=[(0.5, "alert threshold 0.5")],
        ),
        svg.chart(
            [svg.Series("alerts firing", trace.ticks, trace.firing.astype(np.float64), "#d62728")],
            t0=t0,
            t1=t1,
            title="alerts firing",
            height=120,
            shades=shades,
            y_range=(0.0, max(1.0, float(trace.firing.max()))),
        ),
    ]
    signals: list[str] = []
    tags = doc["signals"]
    if tags:
        ts, values = _signal_values(result, tags)
        index = {name: i for i, name in enumerate(trace.tag_names)}
        for k, tag in enumerate(tags):
            marks = [
                svg.Mark(t.ts, f"{t.event}: {t.detector} ({t.severity}, score {t.score:.2f})", EVENT_COLORS[t.event])
                for t in trace.transitions
                if t.tag == tag
            ]
            own = [sh for sh, s in zip(shades, steps, strict=True) if s.target in ("", tag)] or shades
            signals.append(
                svg.chart(
                    [svg.Series(tag, ts, values[:, k], svg.PALETTE[k % len(svg.PALETTE)])],
                    t0=t0,
                    t1=t1,
                    title=f"{tag}: value (steps shaded; alerts firing red, escalated dark red, resolved green)",
                    shades=own,
                    marks=marks,
                )
            )
            if trace.tag_worst is not None:
                signals.append(
                    svg.chart(
                        [svg.Series(f"{tag} score", trace.ticks, trace.tag_worst[:, index[tag]].astype(np.float64))],
                        t0=t0,
                        t1=t1,
                        title=f"{tag}: worst score over its detectors",
                        height=110,
                        shades=own,
                        y_range=(0.0, 1.0),
                        hlines=[(0.5, "alert threshold 0.5")],
                    )
                )
    grace = card.grace_s if card is not None else 0.0
    lanes = [
        (
            s.id,
            [
                svg.Shade(s.start, s.end, f"{s.id} active", "#d62728"),
                svg.Shade(s.end, s.end + grace, f"{s.id} grace", "#f4a6a6"),
            ],
        )
        for s in steps[:MAX_LANES]
    ]
    marks = [svg.Mark(t.ts, f"{t.event}: {t.detector} on {t.tag}", EVENT_COLORS[t.event]) for t in trace.transitions]
    timeline = [svg.timeline(lanes, marks, t0=t0, t1=t1)]
    return {"overview": overview, "signals": signals, "timeline": timeline}


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html(doc: dict[str, Any], figures: dict[str, list[str]]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(_title(doc))}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(_title(doc))}</h1>",
        _table(["", ""], [[k, v] for k, v in _header_lines(doc)]),
    ]
    if "metrics" in doc:
        parts.append("<h2>Figures</h2>")
        parts.append(
            _table(
                ["figure", "value", "definition"], [[m["name"], m["shown"], m["definition"]] for m in doc["metrics"]]
            )
        )
        parts.append("<h2>Attack steps</h2>")
        classes = ["late" if s["after_end"] else ("hit" if s["detected"] else "miss") for s in doc["steps"]]
        parts.append(_table(_steps_header(), [_step_cells(s) for s in doc["steps"]], classes))
    parts.append("<h2>Anomaly scores</h2>")
    parts += figures["overview"]
    parts.append("<h2>Attacked signals</h2>")
    if doc["signals"]:
        note = "The tags the attack steps targeted or that caught them, then tags of false alerts."
        if doc["signals_not_plotted"]:
            note += f" {doc['signals_not_plotted']} more such tags are not plotted."
        parts.append(f'<p class="note">{escape(note)} Each chart shows the min-max band per pixel.</p>')
        parts += figures["signals"]
    else:
        parts.append('<p class="note">No tag was attacked by name or alerted.</p>')
    parts.append("<h2>Exercise timeline</h2>")
    parts += figures["timeline"]
    rows = doc["timeline"][:MAX_TIMELINE_ROWS]
    parts.append(
        _table(
            ["time (UTC)", "elapsed", "event", "what", "verdict"],
            [[r["time"], duration(r["elapsed_s"]), r["event"], r["what"], r.get("verdict", "")] for r in rows],
        )
    )
    if len(doc["timeline"]) > MAX_TIMELINE_ROWS:
        parts.append(
            f'<p class="note">{len(doc["timeline"]) - MAX_TIMELINE_ROWS} later rows left out; '
            "report.json has them all.</p>"
        )
    parts.append(
        f'<p class="def">plantwatch {escape(doc["plantwatch"])}. Definitions of every figure: '
        "docs/scoring.md in the plantwatch source.</p>"
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)
