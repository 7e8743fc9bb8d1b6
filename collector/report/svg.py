"""Inline SVG charts for the report: no JavaScript, no external files, readable for long recordings.

A series is cut into one bucket per horizontal pixel and drawn as the min-max band of each bucket,
so a million ticks cost as much as a thousand and a one-tick spike still shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 12, 22, 26


@dataclass(frozen=True)
class Series:
    name: str
    t: np.ndarray
    y: np.ndarray
    color: str = PALETTE[0]


@dataclass(frozen=True)
class Shade:
    start: float
    end: float
    label: str
    color: str = "#d62728"


@dataclass(frozen=True)
class Mark:
    t: float
    title: str
    color: str


def merge_shades(shades: Sequence[Shade]) -> list[Shade]:
    """Overlapping windows as one shade each (names joined), so that overlaps do not darken the chart."""
    merged: list[Shade] = []
    for shade in sorted(shades, key=lambda s: s.start):
        if merged and shade.start <= merged[-1].end and shade.color == merged[-1].color:
            last = merged[-1]
            merged[-1] = Shade(last.start, max(last.end, shade.end), f"{last.label}; {shade.label}", last.color)
        else:
            merged.append(shade)
    return merged


MAX_FULL_MARKS = 40  # beyond this many marks, a chart draws them as a rug along its bottom edge


def thin_marks(marks: Sequence[Mark], t0: float, t1: float, pixels: int) -> list[Mark]:
    """At most one mark per pixel column and colour (the first), so that thousands of alerts stay one line each."""
    span = max(t1 - t0, 1e-9)
    seen: set[tuple[int, str]] = set()
    out = []
    for mark in sorted(marks, key=lambda m: m.t):
        key = (int((mark.t - t0) / span * pixels), mark.color)
        if key not in seen and t0 <= mark.t <= t1:
            seen.add(key)
            out.append(mark)
    return out


def envelope(t: np.ndarray, y: np.ndarray, t0: float, t1: float, buckets: int) -> tuple[np.ndarray, ...]:
    """Per pixel bucket: x (bucket index), min and max of the finite values falling in it."""
    ok = np.isfinite(y) & np.isfinite(t)
    t, y = t[ok], y[ok]
    if not len(t):
        return np.empty(0), np.empty(0), np.empty(0)
    span = max(t1 - t0, 1e-9)
    idx = np.clip(((t - t0) / span * buckets).astype(np.int64), 0, buckets - 1)
    order = np.argsort(idx, kind="stable")
    idx, y = idx[order], y[order]
    starts = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]]))
    return idx[starts].astype(np.float64), np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)


def time_label(ts: float, span: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    if span > 2 * 86400:
        return moment.strftime("%Y-%m-%d")
    if span > 600:
        return moment.strftime("%H:%M")
    return moment.strftime("%H:%M:%S")


def _nice(v: float) -> str:
    return f"{v:.4g}"


def chart(
    series: Sequence[Series],
    *,
    t0: float,
    t1: float,
    title: str,
    width: int = 960,
    height: int = 170,
    shades: Sequence[Shade] = (),
    marks: Sequence[Mark] = (),
    y_range: tuple[float, float] | None = None,
    hlines: Sequence[tuple[float, str]] = (),
) -> str:
    """One time chart as an ``<svg>`` element: series as min-max bands, shaded windows, marked instants."""
    pw = width - MARGIN_LEFT - MARGIN_RIGHT
    ph = height - MARGIN_TOP - MARGIN_BOTTOM
    span = max(t1 - t0, 1e-9)
    bands = [(s, *envelope(s.t, s.y, t0, t1, pw)) for s in series]
    if y_range is None:
        lows = [lo.min() for _, _, lo, _ in bands if len(lo)]
        highs = [hi.max() for _, _, _, hi in bands if len(hi)]
        lo_v, hi_v = (min(lows), max(highs)) if lows else (0.0, 1.0)
    else:
        lo_v, hi_v = y_range
    if not math.isfinite(lo_v) or not math.isfinite(hi_v):
        lo_v, hi_v = 0.0, 1.0
    if hi_v - lo_v < 1e-12:
        lo_v, hi_v = lo_v - 0.5, hi_v + 0.5
    pad = 0.05 * (hi_v - lo_v) if y_range is None else 0.0
    lo_v, hi_v = lo_v - pad, hi_v + pad

    def sx(t: float | np.ndarray) -> float | np.ndarray:
        return MARGIN_LEFT + (np.asarray(t) - t0) / span * pw

    def sy(v: float | np.ndarray) -> float | np.ndarray:
        return MARGIN_TOP + ph - (np.asarray(v) - lo_v) / (hi_v - lo_v) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{MARGIN_LEFT}" y="14" class="t">{escape(title)}</text>',
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb"/>',
    ]
    for shade in merge_shades(shades):
        a, b = max(shade.start, t0), min(shade.end, t1)
        if b <= a:
            continue
        x0, x1 = float(sx(a)), float(sx(b))
        out.append(
            f'<rect x="{x0:.1f}" y="{MARGIN_TOP}" width="{max(1.0, x1 - x0):.1f}" height="{ph}" '
            f'fill="{shade.color}" fill-opacity="0.13"><title>{escape(shade.label)}</title></rect>'
        )
    for value, label in hlines:
        if lo_v <= value <= hi_v:
            y = float(sy(value))
            out.append(
                f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999" '
                f'stroke-dasharray="4 3"><title>{escape(label)}</title></line>'
            )
    for s, bx, lo, hi in bands:
        if not len(bx):
            continue
        x = MARGIN_LEFT + bx + 0.5
        pts = np.empty((2 * len(bx), 2))
        pts[0::2, 0] = pts[1::2, 0] = x
        pts[0::2, 1], pts[1::2, 1] = sy(lo), sy(hi)
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{s.color}" stroke-width="1.2">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
    top = MARGIN_TOP if len(marks) <= MAX_FULL_MARKS else MARGIN_TOP + ph - 8  # many marks: a rug at the bottom
    for mark in thin_marks(marks, t0, t1, pw):
        x = float(sx(mark.t))
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{MARGIN_TOP + ph}" stroke="{mark.color}" '
            f'stroke-width="1.5"><title>{escape(mark.title)}</title></line>'
        )
    for v in (lo_v, (lo_v + hi_v) / 2, hi_v):
        out.append(f'<text x="{MARGIN_LEFT - 4}" y="{float(sy(v)) + 4:.1f}" class="ya">{_nice(v)}</text>')
    for k in range(6):
        t = t0 + span * k / 5
        anchor = "start" if k == 0 else ("end" if k == 5 else "middle")
        out.append(
            f'<text x="{float(sx(t)):.1f}" y="{height - 8}" class="xa" text-anchor="{anchor}">'
            f"{time_label(t, span)}</text>"
        )
    if len(series) > 1:
        x = MARGIN_LEFT + pw
        for s in reversed(series):
            out.append(f'<text x="{x}" y="14" class="lg" fill="{s.color}" text-anchor="end">{escape(s.name)}</text>')
            x -= 8 + 7 * len(s.name)
    out.append("</svg>")
    return "\n".join(out)


def timeline(
    lanes: Sequence[tuple[str, Sequence[Shade]]],
    marks: Sequence[Mark],
    *,
    t0: float,
    t1: float,
    width: int = 960,
    lane_h: int = 18,
) -> str:
    """The exercise timeline: one lane per attack step (active span, grace lighter), alert marks below."""
    label_w = 150
    pw = width - label_w - MARGIN_RIGHT
    height = MARGIN_TOP + lane_h * (len(lanes) + 1) + MARGIN_BOTTOM
    span = max(t1 - t0, 1e-9)

    def sx(t: float) -> float:
        return label_w + (min(max(t, t0), t1) - t0) / span * pw

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="exercise timeline">',
        f'<rect x="{label_w}" y="{MARGIN_TOP}" width="{pw}" height="{lane_h * (len(lanes) + 1)}" '
        'fill="#fff" stroke="#bbb"/>',
    ]
    for i, (name, shades) in enumerate([*lanes, ("alerts", ())]):
        y = MARGIN_TOP + i * lane_h
        out.append(f'<text x="{label_w - 6}" y="{y + lane_h - 5}" class="ya">{escape(name[:24])}</text>')
        for shade in shades:
            x0, x1 = sx(shade.start), sx(shade.end)
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(1.5, x1 - x0):.1f}" height="{lane_h - 6}" '
                f'fill="{shade.color}"><title>{escape(shade.label)}</title></rect>'
            )
    y = MARGIN_TOP + len(lanes) * lane_h
    for mark in thin_marks(marks, t0, t1, pw):
        x = sx(mark.t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 2}" y2="{y + lane_h - 2}" stroke="{mark.color}" '
            f'stroke-width="1.5"><title>{escape(mark.title)}</title></line>'
        )
    for k in range(6):
        t = t0 + span * k / 5
        anchor = "start" if k == 0 else ("end" if k == 5 else "middle")
        out.append(
            f'<text x="{sx(t):.1f}" y="{height - 8}" class="xa" text-anchor="{anchor}">{time_label(t, span)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
