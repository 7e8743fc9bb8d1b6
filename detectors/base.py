"""The contract every streaming detector keeps, and what they share.

A detector sees one tick at a time for *all* tags at once (numpy arrays indexed
by tag) and has two verbs:

- ``score(x, ts, valid)``: how anomalous each tag's sample is, in [0, 1], from
  the state learned so far. It must not change that state, so a sample is
  always scored before it is learned from.
- ``update(x, ts, valid, learn)``: take the sample in. ``valid`` says which tags
  carried a good reading this tick; ``learn`` (a subset of ``valid``) says which
  of them may move the baseline. The bank leaves out every sample that any
  detector flagged, so an attacker cannot teach the baseline his attack.

Scores share one scale across detectors: ``score = 1 - 2**-(stat)`` where
``stat`` is the detector's statistic divided by its limit. A score of 0.5 means
"exactly at the limit", 0.75 "twice the limit", and so on towards 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class DetectorParams(BaseModel):
    """Settings of one detector; every field can be set per tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


@dataclass(frozen=True)
class TagLimits:
    """What the config says about each tag, as arrays indexed by tag (NaN = not given)."""

    lo: np.ndarray
    hi: np.ndarray
    lolo: np.ndarray
    hihi: np.ndarray
    discrete: np.ndarray  # bool

    @classmethod
    def unknown(cls, n_tags: int) -> TagLimits:
        nan = np.full(n_tags, np.nan)
        return cls(nan, nan.copy(), nan.copy(), nan.copy(), np.zeros(n_tags, dtype=bool))

    @property
    def n_tags(self) -> int:
        return int(self.lo.shape[0])

    @property
    def span(self) -> np.ndarray:
        """hi - lo where known, NaN elsewhere; used to floor learned scales."""
        return self.hi - self.lo


def to_score(stat: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map a statistic (1.0 = at the limit) onto [0, 1].

    The caller guarantees ``stat >= 0`` with no NaN (detectors zero the
    statistic of missing samples first), which keeps this to three passes.
    """
    out = np.negative(stat, out=out)
    np.exp2(out, out=out)
    np.subtract(1.0, out, out=out)
    return out


def to_score_negated(neg_stat: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``to_score(-neg_stat)``, bit for bit, for a detector that computed its statistic negated.

    Scaling by ``-c`` instead of ``c`` costs nothing and gives exactly the negated
    product, so such a detector saves ``to_score`` its first pass.
    """
    out = np.exp2(neg_stat, out=out)
    np.subtract(1.0, out, out=out)
    return out


def scale_floor(limits: TagLimits, min_std: np.ndarray) -> np.ndarray:
    """Smallest spread a baseline may learn, so a flat signal does not give infinite z.

    The larger of the configured ``min_std`` and 0.1 % of the tag's normal span.
    """
    span_floor = np.nan_to_num(limits.span * 1e-3, nan=0.0)
    return np.maximum(np.maximum(min_std, span_floor), 1e-9)


def uniform(a: np.ndarray) -> np.ndarray | float:
    """A per-tag parameter as one float where every tag has the very same value, else the array.

    Broadcasting a scalar saves numpy one stream through memory per operation
    and gives bit-for-bit the same numbers.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1 and a.size > 0:
        raw = a.view(np.int64)
        if bool(np.all(raw == raw[0])):
            return float(a[0])
    return a


class Detector(ABC):
    """Base class: per-tag parameter arrays in, scores out; state as named arrays.

    Subclasses declare ``name``, ``Params``, the names of their state arrays in
    ``state_fields`` and the standard fault the shared check suite plays against
    them in ``fault``.
    """

    block_path_max_tags: ClassVar[int | None] = None  # see BLOCK_PATH_MAX_TAGS
    name: ClassVar[str]
    Params: ClassVar[type[DetectorParams]] = DetectorParams
    state_fields: ClassVar[tuple[str, ...]] = ()
    tracking_fields: ClassVar[tuple[str, ...]] = ()
    """The ``state_fields`` that follow the last sample or instant (a last value, a "held since", a running
    CUSUM) rather than a learned statistic of the plant: a baseline fitted from a recording does not
    replace them, or live values would be compared with a moment long gone."""
    fault: ClassVar[str]
    applies_to_discrete: ClassVar[bool] = False
    multivariate: ClassVar[bool] = False
    """True for a detector whose tag scores depend on other tags (of its group): the check suite
    then groups tags through the ``group`` parameter and checks independence between groups."""
    reads_status: ClassVar[bool] = False
    """True for a detector of status codes: in a bank given the samples' status, a sample that arrived
    with a status but no value reaches it with a placeholder value (still not valid), so that it can
    tell "arrived, not good" (a value, not valid) from "nothing arrived" (NaN)."""
    suite_settings: ClassVar[dict[str, float]] = {}
    """Settings the check suite plays this detector with, where its defaults are sized for a real
    plant rather than the suite's short streams (say why in the detector)."""
    _warm: np.ndarray | None = None

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        self.params = dict(params)
        self.limits = limits
        self.n_tags = limits.n_tags
        enabled = np.asarray(self.params.get("enabled", np.ones(self.n_tags)), dtype=bool)
        if not self.applies_to_discrete:
            enabled = enabled & ~limits.discrete
        self.enabled = enabled

    @classmethod
    def encode(cls, key: str, value: Any) -> float:
        """A setting as the float of its per-tag array (a detector with a choice field maps it to a code)."""
        return np.nan if value is None else float(value)

    @classmethod
    def from_defaults(cls, limits: TagLimits, **overrides: Any) -> Detector:
        """A detector with the same settings on every tag (or per tag, given as an array); handy in tests."""
        per_tag = {k: np.asarray(v, dtype=np.float64) for k, v in overrides.items() if isinstance(v, np.ndarray)}
        params = cls.Params(**{k: v for k, v in overrides.items() if k not in per_tag})
        n = limits.n_tags
        arrays = {k: np.full(n, cls.encode(k, v)) for k, v in params.model_dump().items()}
        arrays.update(per_tag)
        return cls(arrays, limits)

    @abstractmethod
    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for one tick, from state as it stands; changes no state."""

    @abstractmethod
    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        """Take one tick in; only ``learn`` samples may move the baseline."""

    def warm(self) -> np.ndarray:
        """Which tags have finished learning enough to be scored (do not modify)."""
        return self.enabled

    def explain(self, row: int, tags: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[str | None]:
        """Why each of ``tags`` scored as it did at ``row`` of the block last passed to ``run`` (or
        ``score`` + ``update``): one short line per tag, or None when there is nothing to add to the score.

        ``scores`` is this detector's scores of that row, all tags; ``names`` the bank's tag names.
        ``row`` may be negative, counted from the block's end as Python indexes (-1: its last tick).
        Called only for alerts that fire or escalate, never on the hot path; a detector that needs
        per-tick detail keeps small per-block arrays for it (ticks x invariants, say), never per-tag
        per-tick Python objects. The text must be deterministic: the live daemon and a replay of what
        it received journal identical alerts, reasons included.
        """
        return [None] * len(tags)

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the learned and tracking arrays, enough to resume exactly."""
        return {f: np.array(getattr(self, f), copy=True) for f in self.state_fields}

    def load_state(self, state: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        """Restore arrays saved by ``state``.

        ``rows`` maps each of this detector's tags to a row of the saved arrays
        (-1 for a tag the snapshot did not know, which starts cold), so a
        snapshot survives tags being added or reordered in the config.
        """
        for f in self.state_fields:
            current = getattr(self, f)
            saved = np.asarray(state[f])
            if rows is None:
                if saved.shape != current.shape:
                    raise ValueError(f"{self.name}.{f}: snapshot shape {saved.shape} != {current.shape}")
                current[...] = saved
            else:
                known = rows >= 0
                current[known] = saved[rows[known]]
        self._forget_caches()

    def _forget_caches(self) -> None:
        """Drop everything derived from the state arrays (``load_state`` just replaced them)."""
        self._warm = None

    def state_nbytes(self) -> int:
        return sum(np.asarray(getattr(self, f)).nbytes for f in self.state_fields)

    # -- convenience ---------------------------------------------------------------------------
    def run(
        self,
        X: np.ndarray,
        ts: np.ndarray,
        valid: np.ndarray | None = None,
        protect_threshold: float = 0.5,
    ) -> np.ndarray:
        """Score then learn a block of ticks on its own (no bank), protecting flagged samples.

        The inputs are made arrays here, once; a detector with a block path overrides ``_run_block``,
        which wider than ``block_path_max_tags`` tags is bypassed for the tick-by-tick path.
        """
        X = np.asarray(X, dtype=np.float64)
        ts = np.asarray(ts, dtype=np.float64)
        if valid is None:
            valid = np.isfinite(X)
        limit = self.block_path_max_tags
        if limit is not None and self.n_tags > limit:
            return self._run_ticks(X, ts, valid, protect_threshold)
        return self._run_block(X, ts, valid, protect_threshold)

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """A block of ticks at once; by default, tick by tick."""
        return self._run_ticks(X, ts, valid, protect_threshold)

    def _run_ticks(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """Score then learn each tick in turn: the reference every block path must equal bit for bit."""
        out = np.empty(X.shape, dtype=np.float64)
        for i in range(X.shape[0]):
            x, t, v = X[i], float(ts[i]), valid[i]  # one view each, so caches keyed on identity hit
            s = self.score(x, t, v)
            out[i] = s
            self.update(x, t, v, v & (s < protect_threshold))
        return out


BLOCK_PATH_MAX_TAGS = 128
"""Widest detector that takes a block of ticks at once. A block path pays Python once per block
instead of once per tick, which is what a narrow detector spends its time on; a wide one spends it
in numpy, where the block's (ticks x tags) temporaries, tens of MB at 100k tags, leave the cache and
make it several times slower than tick by tick (measured crossover: 128 to 256 tags)."""


class SpeculativeBlocks(ABC):
    """A block path for detectors whose learning is sequential: guess which samples are learned.

    ``_speculate`` works a stretch of ticks out at once on the guess that every sample is learned
    but those of the tags in ``held_out`` (the tags flagged at the last tick), stores the state
    after the leading ticks where the guess proved right, and returns their scores. The first tick
    where it was wrong goes through ``score`` + ``update``; its flagged tags are the next guess, and
    the next stretch is as long as the last one got, doubling while it holds. So a quiet plant and
    a long alarm on a few tags both run as blocks. Where the flags change nearly every tick (many
    thousands of tags, a few flagged somewhere each tick) a guess would fail at once, so after a
    failed guess the next ``_backoff`` ticks go the plain way, doubling up to ``max_backoff`` while
    guesses keep failing (a heuristic that only picks the path: both give the same numbers). Every
    stored number comes from the same operations, in the same order, as the tick-by-tick path.
    """

    max_backoff: ClassVar[int] = 256

    block_path_max_tags: ClassVar[int | None] = BLOCK_PATH_MAX_TAGS

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """A block: learned along it as if nothing were flagged, checked, then every tick scored at once."""
        return self._run_speculating(X, ts, valid, protect_threshold)

    _backoff: int = 0

    @abstractmethod
    def _speculate(
        self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, threshold: float, held_out: np.ndarray
    ) -> np.ndarray:
        """Scores of the leading ticks whose learning the guess got right; their state is stored."""

    def _run_speculating(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
        n = X.shape[0]
        out = np.empty(X.shape, dtype=np.float64)
        held_out = np.zeros(X.shape[1], dtype=bool)
        i, stretch = 0, n
        while i < n:
            end = min(n, i + stretch)
            done = self._speculate(X[i:end], ts[i:end], valid[i:end], threshold, held_out)
            out[i : i + done.shape[0]] = done
            i += done.shape[0]
            if i == end:
                stretch *= 2
                self._backoff = 0
                continue
            # The guess failed at tick i: it, and the backoff's ticks after it, the plain way.
            self._backoff = min(self.max_backoff, max(1, 2 * self._backoff)) if done.shape[0] == 0 else 1
            for _ in range(min(self._backoff, n - i)):
                x, t, v = X[i], float(ts[i]), valid[i]
                s = self.score(x, t, v)  # type: ignore[attr-defined]
                out[i] = s
                learn = v & (s < threshold)
                self.update(x, t, v, learn)  # type: ignore[attr-defined]
                held_out = v & ~learn
                i += 1
            stretch = max(16, done.shape[0])
        return out


def guess_was_wrong(learnable: np.ndarray, held_out: np.ndarray, scores: np.ndarray, threshold: float) -> int:
    """The first tick whose learning differs from the guess (all ``learnable`` but ``held_out``), else the length."""
    wrong = (learnable & ~held_out) ^ (learnable & (scores < threshold))
    first = np.flatnonzero(wrong.any(axis=1))
    return int(first[0]) if first.size else scores.shape[0]


def last_valid(valid: np.ndarray) -> np.ndarray:
    """For each tick and tag, the index of the last valid tick up to and including it (-1: none)."""
    index = np.where(valid, np.arange(valid.shape[0])[:, None], -1)
    return np.maximum.accumulate(index, axis=0)


def carried(before: np.ndarray, values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` per tag, ``before`` where ``index`` is -1: a state carried along a block."""
    stacked = np.concatenate([before[None, :], values], axis=0)
    return np.take_along_axis(stacked, index + 1, axis=0)


class WarmupByCount:
    """Warm-up for detectors that learn a baseline: a tag is scored after ``warmup`` samples.

    The mask is cached and recomputed only while some tag is still cold, so a
    warm bank pays nothing for it per tick.
    """

    enabled: np.ndarray
    count: np.ndarray
    warmup: np.ndarray
    _warm: np.ndarray | None
    _all_warm: bool

    def warm(self) -> np.ndarray:
        if self._warm is None or not self._all_warm:
            self._warm = self.enabled & (self.count >= self.warmup)
            self._all_warm = bool(np.array_equal(self._warm, self.enabled))
        return self._warm


class SettlingWeight:
    """The learning weight ``max(alpha, 1/(count+1))`` of detectors that learn a baseline.

    While a tag has seen fewer than 1/alpha samples the weight is 1/(n+1), a
    plain running mean, so the baseline is sound after its first window
    instead of creeping up from its first value. Once every enabled tag is
    past that point the weight is exactly ``alpha`` for good (``count`` only
    grows, and ``load_state`` forgets this shortcut), so a settled detector
    stops computing it: three passes saved per tick, same numbers.
    """

    alpha: np.ndarray
    enabled: np.ndarray
    count: np.ndarray
    _settled: bool = False
    _settled_weight: tuple[np.ndarray | float, np.ndarray | float]

    def _forget_caches(self) -> None:
        self._settled = False
        super()._forget_caches()  # type: ignore[misc]

    def learning_weight(self) -> tuple[np.ndarray | float, np.ndarray | float]:
        """``(a, 1 - a)`` for this tick; only the enabled tags' entries are meaningful."""
        if self._settled:
            return self._settled_weight
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.maximum(self.alpha, 1.0 / (self.count + 1.0))
        if bool(np.all((a == self.alpha) | ~self.enabled)):
            self._settled = True
            alpha = uniform(self.alpha)
            self._settled_weight = (alpha, 1.0 - alpha)
        return a, 1.0 - a


class ResidualCache:
    """Keeps the residual ``x - mean`` that ``score`` computed for ``update`` of the same tick.

    It is handed over only when ``update`` gets the very array object ``score``
    saw (the bank passes the same one to both), and is forgotten after one use
    and by ``load_state``, so the numbers are those ``update`` would compute.
    """

    _residual: np.ndarray | None = None
    _residual_of: np.ndarray | None = None

    def _keep_residual(self, x: np.ndarray, residual: np.ndarray) -> None:
        self._residual, self._residual_of = residual, x

    def _take_residual(self, x: np.ndarray) -> np.ndarray | None:
        residual = self._residual if self._residual_of is x else None
        self._residual = self._residual_of = None
        return residual

    def _forget_caches(self) -> None:
        self._residual = self._residual_of = None
        super()._forget_caches()  # type: ignore[misc]


class LearnedBaseline(SettlingWeight, ResidualCache, WarmupByCount):
    """An exponentially weighted mean and variance per tag, warm after ``warmup`` samples:
    the baseline the z-score and CUSUM detectors share the learning of."""

    mean: np.ndarray
    var: np.ndarray
    alpha: np.ndarray

    def _learn_baseline(self, x: np.ndarray, learn: np.ndarray) -> None:
        ewma_learn(
            self.mean,
            self.var,
            self.count,
            x,
            learn & self.enabled,
            self.alpha,
            self.learning_weight(),
            self._take_residual(x),
        )


def ewma_learn(
    mean: np.ndarray,
    var: np.ndarray,
    count: np.ndarray,
    x: np.ndarray,
    learn: np.ndarray,
    alpha: np.ndarray,
    weight: tuple[np.ndarray | float, np.ndarray | float] | None = None,
    diff: np.ndarray | None = None,
) -> None:
    """Move an exponentially weighted mean and variance towards ``x`` where ``learn``.

    The weight is ``max(alpha, 1/(count+1))`` (see ``SettlingWeight``); a
    caller that already knows it and ``1 - weight`` passes them as ``weight``,
    and one that already has ``x - mean`` in a scratch array passes it as
    ``diff`` (which is then overwritten).
    """
    with np.errstate(invalid="ignore"):
        if weight is None:
            a = np.maximum(alpha, 1.0 / (count + 1.0))
            one_minus_a = 1.0 - a
        else:
            a, one_minus_a = weight
        if diff is None:
            diff = x - mean
        incr = a * diff
        if learn.all():  # the usual tick: every tag learns, so update in place (same numbers)
            diff *= incr
            var += diff
            var *= one_minus_a
            mean += incr
            count += 1.0
            return
        new_var = var + diff * incr
        new_var *= one_minus_a
        incr += mean
    np.copyto(mean, incr, where=learn)
    np.copyto(var, new_var, where=learn)
    count += learn


def ewma_path(
    mean: np.ndarray, var: np.ndarray, count: np.ndarray, alpha: np.ndarray, X: np.ndarray, learn: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``ewma_learn`` over a block of ticks: mean, variance and count before each tick and after the last.

    Returns ``(M, V, C, D)``, the first three with a row per tick plus one, and ``D[i] = X[i] - M[i]``
    (the residual ``score`` computes). The recursion is rounded at every step, so it runs tick by
    tick, but as six whole-row operations on preallocated rows, the very operations (and order)
    of ``ewma_learn``: the same bits. Counts are small integers, so their cumulative sum is exact.
    """
    n, n_tags = X.shape
    C = np.empty((n + 1, n_tags))
    C[0] = count
    np.cumsum(learn, axis=0, out=C[1:])
    C[1:] += count
    if not learn.any():  # nothing learns (a detector switched off everywhere): the baseline stands
        M = np.broadcast_to(mean, (n + 1, n_tags))
        V = np.broadcast_to(var, (n + 1, n_tags))
        with np.errstate(invalid="ignore"):
            return M, V, C, X - mean
    M = np.empty((n + 1, n_tags))
    V = np.empty((n + 1, n_tags))
    D = np.empty((n, n_tags))
    M[0], V[0] = mean, var
    with np.errstate(divide="ignore", invalid="ignore"):
        A = np.maximum(alpha, 1.0 / (C[:-1] + 1.0))
        one_minus_A = 1.0 - A
        every = learn.all(axis=1)
        skip = ~learn
        incr = np.empty(n_tags)
        spread = np.empty(n_tags)
        for i in range(n):
            d = np.subtract(X[i], M[i], out=D[i])
            np.multiply(A[i], d, out=incr)
            np.multiply(d, incr, out=spread)
            np.add(V[i], spread, out=V[i + 1])
            V[i + 1] *= one_minus_A[i]
            np.add(M[i], incr, out=M[i + 1])
            if not every[i]:
                np.copyto(M[i + 1], M[i], where=skip[i])
                np.copyto(V[i + 1], V[i], where=skip[i])
    return M, V, C, D
