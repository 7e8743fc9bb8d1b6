"""Physics invariants: relations between tags declared as expressions, checked by a CUSUM on the residual.

A tank's level change must match inflow minus outflow; a valve command must be
followed by the flow it opens. An attacker who spoofs one side of such a
relation breaks it, however plausible each tag looks alone. An invariant is an
expression over tag names that is ~0 (or a constant) in normal operation, for
example the mass balance of a 50 m2 tank over the last 15 minutes::

    (TK101.LEVEL - lag(TK101.LEVEL, 900)) * AREA * 3600 / 900 - avg(FT101.FLOW_IN - FT102.FLOW_OUT, 900)

The expression language (``detectors.expressions``) is parsed by a small recursive-descent parser,
never by ``eval``: numbers, named constants, tag names (letters, digits, ``_``
and ``.``, or any text in double quotes), ``+ - * /``, unary minus,
parentheses, and the functions ``der(TAG)`` (change per second since the
previous tick), ``lag(TAG, N)`` (the value N ticks ago), ``avg(EXPR, N)`` (the
mean over the last N ticks, this one included; N a whole number up to
``MAX_LAG``) and ``abs(EXPR)``. Evaluation is vectorized over a block of ticks.
A derivative of a noisy reading is mostly noise: a balance over a window
(``lag`` and ``avg``) is what makes a slow drift stand out.

``InvariantDetector`` standardizes each residual by a learned mean and spread
(learned over the warm-up, then fixed unless ``alpha`` says otherwise: a
relation's offset is a property of the plant, and an attacker who drifts
slowly would otherwise drag a learning baseline along), ignores deviations within the
invariant's ``tolerance``, and runs a two-sided CUSUM on the rest; the score is
``1 - 2**-(cusum / h)`` like every detector's. Each tag an invariant names gets
the worst score of its invariants, so an alert lands on the tags of the broken
relation, one series per tag whatever the number of invariants.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from detectors.base import Detector, TagLimits, to_score
from detectors.expressions import (
    MAX_LAG,
    ExpressionError,
    Memo,
    Node,
    Program,
    evaluate,
    max_lag,
    parse,
    remap,
    shared,
    tags_of,
)

__all__ = [
    "MAX_LAG",
    "ExpressionError",
    "Invariant",
    "InvariantDetector",
    "Node",
    "evaluate",
    "max_lag",
    "parse",
]


@dataclass(frozen=True)
class Invariant:
    """One declared relation and how it is checked (the config's ``invariants`` entry, resolved)."""

    name: str
    expression: str
    constants: Mapping[str, float] = field(default_factory=dict)
    tolerance: float = 0.0  # deviations from the learned mean within this band never count
    k: float = 0.5  # CUSUM slack, in learned residual spreads
    h: float = 12.0  # CUSUM limit: the score is 0.5 here
    warmup: int = 600  # ticks learned before it is checked
    alpha: float = 0.0  # weight of each tick in the residual's mean and spread once warm (0: fixed then)
    max_score: float = 1.0  # caps the severity the invariant can raise

    @property
    def ident(self) -> float:
        """A number that names the relation in a snapshot, so its learned state follows it."""
        digest = hashlib.blake2b(f"{self.name}\n{self.expression}".encode(), digest_size=6).digest()
        return float(int.from_bytes(digest, "big"))


TICK_DETAIL = 64
"""Ticks whose detail (residual, CUSUM) the tick-by-tick path keeps for ``explain``."""
SHOWN = 2
"""Broken invariants named in one alert's reason; more are counted."""


class InvariantDetector(Detector):
    """CUSUM on the standardized residual of each invariant; each tag scores its invariants' worst.

    Not in the ``DETECTORS`` registry: it is configured by the ``invariants`` section, not per tag,
    and the bank gets it only when some invariant is declared. It keeps the detector contract (score
    before learning, block equals its ticks, snapshots) and the shared checks run on it in
    ``tests/detectors/test_invariants.py``. Its state is per invariant (learned residual, CUSUM) plus
    the last ticks of the tags the expressions read (``lag``, ``der``, ``avg``).

    A block of ticks is worked out whole: every expression over the block, then the CUSUM of every
    invariant as a cumulative sum. While some invariant still learns its residual's mean and spread
    (its warm-up, or ``alpha`` > 0), what it learns depends on the scores, and those on what it
    learned: the block is then played on a guess (every invariant learns what it may but those
    flagged at the last tick), checked, and taken up to the first tick the guess got wrong, as
    ``SpeculativeBlocks`` does; the learning recursion itself runs only over the ticks that learn.
    A live tick runs the expressions as one compiled ``Program``.
    """

    name: ClassVar[str] = "invariant"
    fault: ClassVar[str] = "drift"
    multivariate: ClassVar[bool] = True
    state_fields: ClassVar[tuple[str, ...]] = (
        "ident",
        "history",
        "history_ts",
        "count",
        "mean",
        "var",
        "walk",
        "floor",
    )
    tracking_fields: ClassVar[tuple[str, ...]] = ("history", "history_ts", "walk", "floor")

    def __init__(self, invariants: Sequence[Invariant], tags: Sequence[str], limits: TagLimits) -> None:
        super().__init__({}, limits)
        self.enabled = np.ones(self.n_tags, dtype=bool)
        self.invariants = tuple(invariants)
        self.nodes = [parse(inv.expression, tags, inv.constants) for inv in self.invariants]
        m = len(self.nodes)
        self.depth = max([1, *(max_lag(n) for n in self.nodes)])
        self.members = np.zeros((m, self.n_tags), dtype=bool)
        for i, node in enumerate(self.nodes):
            self.members[i, sorted(tags_of(node))] = True
        # Only the tags the expressions read are kept in the history, in columns of their own.
        self._read = np.flatnonzero(self.members.any(axis=0))
        column = np.full(self.n_tags, -1, dtype=np.intp)
        column[self._read] = np.arange(self._read.size)
        self._compact = shared([remap(node, column) for node in self.nodes])
        self._program = Program(self._compact)

        def per_invariant(attr: str) -> np.ndarray:
            return np.array([float(getattr(inv, attr)) for inv in self.invariants], dtype=np.float64)

        self._tol, self._k, self._h = per_invariant("tolerance"), per_invariant("k"), per_invariant("h")
        self._warmup, self._alpha = per_invariant("warmup"), per_invariant("alpha")
        self._cap = per_invariant("max_score")
        self.ident = per_invariant("ident")
        # The history is written twice (rows w and w + depth) so that the last ``depth`` ticks are always
        # the one view ``_hist[w : w + depth]``: a live tick writes a row instead of shifting them all.
        self._hist = np.full((2 * self.depth, self._read.size), np.nan)
        self._hist_ts = np.full(2 * self.depth, np.nan)
        self._w = 0
        self._ticks = 0  # ticks taken, for the places of the compiled program's windows
        self._program_fresh = False
        self.count = np.zeros(m)
        self.mean = np.zeros(m)
        self.var = np.zeros(m)
        # The two-sided CUSUM as a walk and its running minimum (rows: upward, downward): the statistic
        # is ``walk - floor``, which is ``max(0, s + step)`` tick after tick, and a block of ticks is a
        # cumulative sum and a running minimum, the very same additions in the same order.
        self.walk = np.zeros((2, m))
        self.floor = np.zeros((2, m))
        # Which invariants each read tag belongs to, padded with ``m`` (a column of zeros): a tag's score is
        # the worst of its invariants' in one gather and one max, for a tick or a block.
        lists = [np.flatnonzero(self.members[:, t]) for t in self._read]
        width = max([1, *(len(x) for x in lists)])
        self._tag_invariants = np.full((self._read.size, width), m, dtype=np.intp)
        for j, x in enumerate(lists):
            self._tag_invariants[j, : len(x)] = x
        # The read columns of each invariant's tags, padded with the column past the last: whether all its
        # tags are good, or any is flagged, is one gather and one reduction (pairs, not invariants squared).
        columns = [np.flatnonzero(row) for row in self.members[:, self._read]]
        most = max([1, *(len(c) for c in columns)])
        self._invariant_tags = np.full((m, most), self._read.size, dtype=np.intp)
        for i, c in enumerate(columns):
            self._invariant_tags[i, : len(c)] = c
        # What score() worked out for its tick, handed to update() of the very same tick (the bank
        # passes the same arrays to both): the residuals are the costly part of a live tick.
        self._pending: tuple[np.ndarray, float, np.ndarray, tuple[np.ndarray, ...]] | None = None
        # For explain: the last block's residual (in learned sd), CUSUM over its limit and score, per
        # tick and invariant; or, fed tick by tick, the last TICK_DETAIL ticks of them.
        self._detail = np.zeros((3, 0, m))
        self._tick_detail: deque[np.ndarray] = deque(maxlen=TICK_DETAIL)
        self._detail_by_ticks = False

    @property
    def history(self) -> np.ndarray:
        """The last ``depth`` ticks of the tags the expressions read, oldest first (NaN: no good value)."""
        return self._hist[self._w : self._w + self.depth]

    @property
    def history_ts(self) -> np.ndarray:
        return self._hist_ts[self._w : self._w + self.depth]

    def _set_history(self, H: np.ndarray, T: np.ndarray) -> None:
        d = self.depth
        self._hist[:d] = self._hist[d:] = H
        self._hist_ts[:d] = self._hist_ts[d:] = T
        self._w = 0
        self._program_fresh = False

    def warm(self) -> np.ndarray:
        warm = self.count >= self._warmup
        return self.members[warm].any(axis=0) if warm.any() else np.zeros(self.n_tags, dtype=bool)

    def _forget_caches(self) -> None:
        self._pending = None
        self._program_fresh = False
        super()._forget_caches()

    # -- the residuals -------------------------------------------------------------------------
    def residuals(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residual of every invariant for each row (NaN where an input is missing), and the history
        after these rows; changes nothing."""
        Xv = np.where(valid[:, self._read], X[:, self._read], np.nan)
        H = np.vstack([self.history, Xv])
        T = np.r_[self.history_ts, ts]
        R = np.empty((X.shape[0], len(self.nodes)))
        memo: Memo = {}
        for i, node in enumerate(self._compact):
            R[:, i] = evaluate(node, H, T, self.depth, memo)
        return R, H[-self.depth :], T[-self.depth :]

    def _steps(
        self, R: np.ndarray, warm: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The CUSUM steps (..., 2, invariants) of residuals ``R`` (..., invariants): standardized
        excess over the tolerance, less the slack; 0 where not ``warm`` (the walk stands still). Also
        the residual in learned spreads (NaN where not warm), for ``explain``."""
        sd = np.sqrt(np.maximum(var, 1e-18))
        with np.errstate(invalid="ignore"):
            d = np.where(warm, R - mean, 0.0)
            excess = np.maximum(np.abs(d) - self._tol, 0.0)
            z = np.copysign(excess, d) / sd
            plain = np.where(warm, d / sd, np.nan)
        up = np.where(warm, z - self._k, 0.0)
        down = np.where(warm, -z - self._k, 0.0)
        return np.stack([up, down], axis=-2), plain

    def _scores(self, walk: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, CUSUM over its limit) of each invariant."""
        ratio = (walk - floor).max(axis=-2) / self._h
        return np.minimum(to_score(ratio), self._cap), ratio

    def _tag_scores(self, score: np.ndarray) -> np.ndarray:
        """Each tag's worst invariant score (0 for a tag no invariant names); ``score`` (..., invariants)."""
        padded = np.concatenate([score, np.zeros((*score.shape[:-1], 1))], axis=-1)
        out = np.zeros((*score.shape[:-1], self.n_tags))
        out[..., self._read] = padded[..., self._tag_invariants].max(axis=-1)
        return out

    # -- the detector verbs --------------------------------------------------------------------
    def _tick(self, x: np.ndarray, ts: float, valid: np.ndarray) -> tuple[np.ndarray, ...]:
        pending = self._pending
        if pending is not None and pending[0] is x and pending[1] == ts and pending[2] is valid:
            return pending[3]
        H, T = self.history, self.history_ts
        if not self._program_fresh:
            self._program.rebuild(H, T, self._ticks)
            self._program_fresh = True
        xv = np.where(valid[self._read], x[self._read], np.nan)
        r = self._program.run(xv, ts, H, float(T[-1]), self._ticks)[self._program.roots]
        ok = np.isfinite(r)
        steps, plain = self._steps(r, ok & (self.count >= self._warmup), self.mean, self.var)
        walk = self.walk + steps
        floor = np.minimum(self.floor, walk)
        score, ratio = self._scores(walk, floor)
        worked = (r, xv, score, walk, floor, ok, plain, ratio)
        self._pending = (x, ts, valid, worked)
        return worked

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        return self._tag_scores(self._tick(x, ts, valid)[2])

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        r, xv, score, walk, floor, ok, plain, ratio = self._tick(x, ts, valid)
        self._pending = None
        self.walk, self.floor = walk, floor
        free = ~(self.members & ~learn[None, :]).any(axis=1)
        self._learn(r, ok & free & (score < 0.5))
        d, w = self.depth, self._w
        self._hist[w] = self._hist[w + d] = xv
        self._hist_ts[w] = self._hist_ts[w + d] = ts
        self._w = (w + 1) % d
        self._ticks += 1
        self._tick_detail.append(np.stack([plain, ratio, score]))
        self._detail_by_ticks = True

    def _learn(self, r: np.ndarray, take: np.ndarray) -> None:
        """Move each residual's mean and spread where ``take`` (the invariant held, its tags may be learned)."""
        a = np.where(self.count < self._warmup, 1.0 / (self.count + 1.0), self._alpha)
        take = take & (a > 0)
        d = np.where(take, r - self.mean, 0.0)
        self.mean = self.mean + np.where(take, a * d, 0.0)
        self.var = np.where(take, (1.0 - a) * (self.var + a * d * d), self.var)
        self.count = self.count + take

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """The residuals of the whole block at once, then the CUSUM over stretches of it (see the class)."""
        n, m = X.shape[0], len(self.nodes)
        R, H, T = self.residuals(X, ts, valid)
        self._pending = None
        if bool(np.any((self.count < self._warmup) | (self._alpha > 0))):
            # Invariants with every tag good at each tick: the others' tags are not learned from that tick.
            all_good = self._per_invariant(valid[:, self._read], True).all(axis=-1)
            may_learn = np.isfinite(R) & all_good
        else:  # every baseline is fixed: nothing is learned, whatever the scores
            may_learn = np.zeros(R.shape, dtype=bool)
        detail = np.empty((3, n, m))  # residual in sd, CUSUM over its limit, score: for explain, and the scores
        held = np.zeros(m, dtype=bool)
        i, stretch = 0, n
        while i < n:
            end = min(n, i + stretch)
            done, held = self._stretch(R[i:end], may_learn[i:end], held, protect_threshold, detail[:, i:end])
            stretch = 2 * stretch if i + done == end else max(16, 2 * done)
            i += done
        self._set_history(H, T)
        self._ticks += n
        self._detail = detail
        self._tick_detail.clear()
        self._detail_by_ticks = False
        return self._tag_scores(detail[2])

    def _stretch(
        self, R: np.ndarray, may_learn: np.ndarray, held: np.ndarray, threshold: float, detail: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """Ticks ``R`` on the guess that every invariant learns where it ``may_learn`` but those ``held``.

        Fills ``detail`` (residual in sd, CUSUM over limit, score) and stores the state after the ticks
        the guess got right, and after the first it got wrong (its scores were right, and its learning
        is redone as it should be). Returns how many ticks are done and the next guess.
        """
        s, m = R.shape
        mean_at = np.broadcast_to(self.mean, (s, m))
        var_at = np.broadcast_to(self.var, (s, m))
        count_at = np.broadcast_to(self.count, (s, m))
        learning = np.flatnonzero((self.count < self._warmup) | (self._alpha > 0))
        after = (self.mean.copy(), self.var.copy(), self.count.copy())
        if learning.size:
            mean_at, var_at, count_at = mean_at.copy(), var_at.copy(), count_at.copy()
            guess = may_learn & ~held
            for j in learning:
                self._learning_path(j, R[:, j], guess[:, j], mean_at[:, j], var_at[:, j], count_at[:, j], after)
        steps, plain = self._steps(R, np.isfinite(R) & (count_at >= self._warmup), mean_at, var_at)
        walk = np.cumsum(np.concatenate([self.walk[None], steps]), axis=0)[1:]
        floor = np.minimum.accumulate(np.concatenate([self.floor[None], walk]), axis=0)[1:]
        score, ratio = self._scores(walk, floor)
        if not learning.size:
            detail[0], detail[1], detail[2] = plain, ratio, score
            self.walk, self.floor = walk[-1].copy(), floor[-1].copy()
            return s, held
        # Learning at a tick is withheld by the invariant's own flag and by a flag on any invariant sharing a
        # tag (that tag is not learned from): a flag per tag, then per invariant, any of its tags flagged.
        flagged = np.concatenate([score >= threshold, np.zeros((s, 1), dtype=bool)], axis=1)
        tag_flagged = flagged[:, self._tag_invariants].any(axis=-1)
        blocked = self._per_invariant(tag_flagged, False).any(axis=-1) | (score >= 0.5)
        can = (count_at < self._warmup) | (self._alpha > 0)  # a > 0: the tick would move the baseline
        first = np.flatnonzero((may_learn & can & (held ^ blocked)).any(axis=1))
        done, guessed_wrong = (int(first[0]) + 1, True) if first.size else (s, False)
        last = done - 1
        detail[0, :done], detail[1, :done], detail[2, :done] = plain[:done], ratio[:done], score[:done]
        self.walk, self.floor = walk[last].copy(), floor[last].copy()
        if guessed_wrong:
            # The guess was wrong at the last tick taken: the state before it, then its learning as it should be.
            self.mean, self.var, self.count = mean_at[last].copy(), var_at[last].copy(), count_at[last].copy()
            self._learn(R[last], may_learn[last] & ~blocked[last])
        else:
            self.mean, self.var, self.count = after
        return done, blocked[last]

    def _per_invariant(self, per_tag: np.ndarray, pad: bool) -> np.ndarray:
        """(ticks, invariants, tags of each) from (ticks, read tags), ``pad`` where an invariant has fewer."""
        padded = np.concatenate([per_tag, np.full((per_tag.shape[0], 1), pad)], axis=1)
        return padded[:, self._invariant_tags]

    def _learning_path(
        self,
        j: int,
        r: np.ndarray,
        guess: np.ndarray,
        mean_at: np.ndarray,
        var_at: np.ndarray,
        count_at: np.ndarray,
        after: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        """Invariant ``j``'s mean, spread and count before each tick (into ``mean_at``, ``var_at``,
        ``count_at``) and after the last (into ``after``), learning at the ``guess`` ticks.

        The recursion is rounded at every step, so it runs tick by tick, in Python floats (IEEE doubles:
        the very operations ``_learn`` does, in the same order), and only over the ticks that learn.
        """
        mean, var, count = float(self.mean[j]), float(self.var[j]), float(self.count[j])
        warmup, alpha = float(self._warmup[j]), float(self._alpha[j])
        means, spreads, counts = [mean], [var], [count]
        took = np.zeros(r.shape[0], dtype=np.intp)
        for t in np.flatnonzero(guess).tolist():
            a = 1.0 / (count + 1.0) if count < warmup else alpha
            if not a > 0:
                break  # warm, with a fixed baseline: nothing more is learned
            d = float(r[t]) - mean
            mean = mean + a * d
            var = (1.0 - a) * (var + a * d * d)
            count = count + 1.0
            means.append(mean)
            spreads.append(var)
            counts.append(count)
            took[t] = 1
        before = np.cumsum(took) - took  # learned ticks before each tick
        mean_at[:] = np.array(means)[before]
        var_at[:] = np.array(spreads)[before]
        count_at[:] = np.array(counts)[before]
        after[0][j], after[1][j], after[2][j] = mean, var, count

    # -- explain -------------------------------------------------------------------------------
    def explain(self, row: int, tags: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[str | None]:
        """Which invariants naming each tag are broken at ``row``: residual in learned sd, CUSUM over its limit."""
        if self._detail_by_ticks:  # each tick was a block of its own: row 0 of the last is row -1 here
            if row > 0:
                raise IndexError(f"row {row} of a one-tick block")
            plain, ratio, score = self._tick_detail[min(row, -1) if row < 0 else -1]
        else:
            plain, ratio, score = self._detail[:, row]
        out: list[str | None] = []
        for tag in tags:
            mine = np.flatnonzero(self.members[:, int(tag)])
            if not mine.size:
                out.append(None)
                continue
            order = mine[np.argsort(-score[mine], kind="stable")]
            broken = [int(i) for i in order if score[i] >= 0.5] or [int(order[0])]
            parts = []
            for i in broken[:SHOWN]:
                residual = "residual n/a" if not np.isfinite(plain[i]) else f"residual {plain[i]:+.1f} sd"
                parts.append(f"invariant {self.invariants[i].name}: {residual} (CUSUM {ratio[i]:.1f}x limit)")
            if len(broken) > SHOWN:
                parts.append(f"{len(broken) - SHOWN} more broken")
            out.append("; ".join(parts))
        return out

    def invariant_scores(self) -> dict[str, float]:
        """Each invariant's score from the CUSUM as it stands: which relation an alert on a tag means."""
        score, _ = self._scores(self.walk, self.floor)
        return {inv.name: float(s) for inv, s in zip(self.invariants, score, strict=True)}

    # -- state ---------------------------------------------------------------------------------
    def load_state(self, state: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        """Per-invariant state follows each invariant by name and expression.

        An invariant the snapshot did not hold (or whose expression changed) starts cold. The tick
        history is kept only when the tags and expressions are unchanged; otherwise it refills, which
        leaves the invariants unchecked for as many ticks as they look back.
        """
        ident = np.asarray(state["ident"])
        where = {float(v): j for j, v in enumerate(ident)}
        at = np.array([where.get(float(v), -1) for v in self.ident], dtype=np.intp)
        known = at >= 0
        for f in ("count", "mean", "var", "walk", "floor"):
            fresh = np.zeros_like(getattr(self, f))
            fresh[..., known] = np.asarray(state[f])[..., at[known]]
            setattr(self, f, fresh)
        saved, saved_ts = np.asarray(state["history"]), np.asarray(state["history_ts"])
        H = np.full((self.depth, self._read.size), np.nan)
        T = np.full(self.depth, np.nan)
        same_tags = rows is None or np.array_equal(rows, np.arange(self.n_tags))
        if same_tags and saved.shape == H.shape:
            H[...] = saved
            T[...] = saved_ts
        self._set_history(H, T)
        self._forget_caches()
