"""Standard fault streams for the detector check suite, benches and experiments.

Like river's ``checks``: small, deterministic inputs every detector is played
against. ``fault_stream(kind)`` returns a block of ticks in which half of the
tags carry one standard fault for a window, the other half stay clean, and
``truth`` says where the fault is. A detector names the kind it must catch in
its ``fault`` class attribute, and the tests in ``tests/detectors`` run every
registered detector against its own fault.

The clean signal is Gaussian noise (sd 1) around a per-tag mean of
``10 * (tag + 1)``, clipped at 5 sd so that it never leaves the configured
range ``mean ± 6 sd``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.base import Detector, TagLimits

FAULT_KINDS: tuple[str, ...] = (
    "spike",
    "step",
    "drift",
    "freeze",
    "dropout",
    "out_of_range",
    "replay",
    "bad_status",
)
"""Every kind ``fault_stream`` knows."""

T0: float = 1_700_000_000.0
"""Timestamp of the first tick, seconds."""

FAULT_START: int = 500
FAULT_STOP: int = 700
"""The fault covers ticks ``FAULT_START`` (inclusive) to ``FAULT_STOP`` (exclusive)."""

SPIKE_EVERY: int = 15
SPIKE_SD: float = 25.0
STEP_SD: float = 8.0
DRIFT_SD: float = 6.0
RANGE_SD: float = 6.0
NOISE_CLIP_SD: float = 5.0
REPLAY_LAG: int = 150
"""A ``replay`` fault plays back what the tag sent this many ticks earlier."""
SUITE_GROUP_SIZE: int = 4
"""A multivariate detector in the suite models each run of four consecutive tags of a stream together."""


@dataclass(frozen=True)
class FaultStream:
    """A block of ticks with one kind of fault on some tags, and where it is."""

    kind: str
    X: np.ndarray  # (ticks, tags) float64; NaN where not valid
    ts: np.ndarray  # (ticks,) float64, seconds
    valid: np.ndarray  # (ticks, tags) bool
    truth: np.ndarray  # (ticks, tags) bool: the samples the fault touches
    limits: TagLimits
    faulted: np.ndarray  # (tags,) bool: tags that carry the fault
    window: slice  # ticks of the fault window

    @property
    def n_ticks(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_tags(self) -> int:
        return int(self.X.shape[1])


def tag_means(n_tags: int) -> np.ndarray:
    """The clean level of each tag: 10, 20, 30, ..."""
    return 10.0 * (np.arange(n_tags, dtype=np.float64) + 1.0)


def stream_limits(n_tags: int) -> TagLimits:
    """Configured range ``mean ± 6 sd`` on every tag, no alarm range, nothing discrete."""
    mean = tag_means(n_tags)
    limits = TagLimits.unknown(n_tags)
    return TagLimits(
        lo=mean - RANGE_SD,
        hi=mean + RANGE_SD,
        lolo=limits.lolo,
        hihi=limits.hihi,
        discrete=limits.discrete,
    )


def fault_stream(kind: str, n_ticks: int = 900, n_tags: int = 8, seed: int = 0) -> FaultStream:
    """A deterministic stream with fault ``kind`` on the first half of the tags.

    The fault covers ticks 500 to 700 on tags ``0 .. n_tags // 2 - 1``; the other
    tags stay clean throughout. Ticks are 1 s apart from ``T0``.

    Kinds: ``spike`` (single-tick +25 sd spikes every 15 ticks), ``step``
    (+8 sd), ``drift`` (ramp from 0 to 6 sd across the window), ``freeze``
    (value held at its first value in the window), ``dropout`` (NaN, not
    valid), ``out_of_range`` (values above the range's ``hi``), ``replay``
    (the tag's own samples of ``REPLAY_LAG`` ticks earlier, played back) and
    ``bad_status`` (every other sample arrives with a status that is not good:
    its value is there, but not valid).
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    if n_ticks < FAULT_STOP:
        raise ValueError(f"n_ticks must be at least {FAULT_STOP} to hold the fault window")
    if n_tags < 2:
        raise ValueError("n_tags must be at least 2: half faulted, half clean")

    rng = np.random.default_rng(seed)
    mean = tag_means(n_tags)
    noise = np.clip(rng.standard_normal((n_ticks, n_tags)), -NOISE_CLIP_SD, NOISE_CLIP_SD)
    X = mean + noise
    ts = T0 + np.arange(n_ticks, dtype=np.float64)
    valid = np.ones((n_ticks, n_tags), dtype=bool)
    limits = stream_limits(n_tags)

    faulted = np.zeros(n_tags, dtype=bool)
    faulted[: n_tags // 2] = True
    window = slice(FAULT_START, FAULT_STOP)
    in_window = np.zeros(n_ticks, dtype=bool)
    in_window[window] = True
    truth = np.zeros((n_ticks, n_tags), dtype=bool)
    truth[np.ix_(in_window, faulted)] = True
    w = np.ix_(in_window, faulted)

    if kind == "spike":
        spike_ticks = np.arange(FAULT_START, FAULT_STOP, SPIKE_EVERY)
        truth[:] = False
        truth[np.ix_(spike_ticks, np.flatnonzero(faulted))] = True
        X[truth] += SPIKE_SD
    elif kind == "step":
        X[w] += STEP_SD
    elif kind == "drift":
        ramp = np.linspace(0.0, DRIFT_SD, FAULT_STOP - FAULT_START)
        X[w] += ramp[:, None]
    elif kind == "freeze":
        X[w] = X[FAULT_START, faulted][None, :]
    elif kind == "dropout":
        X[w] = np.nan
        valid[w] = False
    elif kind == "out_of_range":
        # Above hi by 1 to 6 sd, so every sample in the window is out of range.
        X[w] = limits.hi[faulted] + 1.0 + np.abs(noise[w])
    elif kind == "replay":
        recorded = slice(FAULT_START - REPLAY_LAG, FAULT_STOP - REPLAY_LAG)
        X[w] = X[recorded][:, faulted]
    elif kind == "bad_status":
        every_other = np.zeros(n_ticks, dtype=bool)
        every_other[FAULT_START:FAULT_STOP:2] = True
        valid[np.ix_(every_other, faulted)] = False

    return FaultStream(kind, X, ts, valid, truth, limits, faulted, window)


def suite_groups(cols: np.ndarray, new: np.ndarray | None = None) -> np.ndarray:
    """The ``group`` of each tag for a multivariate detector in the suite.

    ``cols`` says which tag of the original stream each tag is: runs of
    ``SUITE_GROUP_SIZE`` of those share a model, whatever order the tags come
    in; a tag marked ``new`` is alone in its group.
    """
    group = (np.asarray(cols) // SUITE_GROUP_SIZE).astype(np.float64)
    if new is not None:
        group[new] = 1000.0 + np.flatnonzero(new)
    return group


def build(
    cls: type[Detector],
    limits: TagLimits,
    cols: np.ndarray | None = None,
    new: np.ndarray | None = None,
    **overrides: object,
) -> Detector:
    """``cls`` with default settings on every tag, switched on even where it is off by default.

    A multivariate detector gets the suite's groups (``suite_groups``): ``cols``
    and ``new`` describe tags taken from a stream in another order.
    """
    overrides.setdefault("enabled", True)
    for key, value in cls.suite_settings.items():
        overrides.setdefault(key, value)
    if cls.multivariate and "group" not in overrides:
        overrides["group"] = suite_groups(np.arange(limits.n_tags) if cols is None else np.asarray(cols), new)
    return cls.from_defaults(limits, **overrides)


__all__ = [
    "FAULT_KINDS",
    "T0",
    "FaultStream",
    "build",
    "fault_stream",
    "stream_limits",
    "suite_groups",
    "tag_means",
]
