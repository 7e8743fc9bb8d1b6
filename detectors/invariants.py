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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from detectors.base import Detector, TagLimits, to_score
from detectors.expressions import MAX_LAG, ExpressionError, Node, evaluate, max_lag, parse, remap, tags_of

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


class InvariantDetector(Detector):
    """CUSUM on the standardized residual of each invariant; each tag scores its invariants' worst.

    Not in the ``DETECTORS`` registry: it is configured by the ``invariants`` section, not per tag,
    and the bank gets it only when some invariant is declared. It keeps the detector contract (score
    before learning, block equals its ticks, snapshots) and the shared checks run on it in
    ``tests/detectors/test_invariants.py``. Its state is per invariant (learned residual, CUSUM) plus
    the last ticks of the tags the expressions read (``lag``, ``der``, ``avg``).
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
        self._compact = [remap(node, column) for node in self.nodes]

        def column(attr: str) -> np.ndarray:
            return np.array([float(getattr(inv, attr)) for inv in self.invariants], dtype=np.float64)

        self._tol, self._k, self._h = column("tolerance"), column("k"), column("h")
        self._warmup, self._alpha, self._cap = column("warmup"), column("alpha"), column("max_score")
        self.ident = column("ident")
        self.history = np.full((self.depth, self._read.size), np.nan)
        self.history_ts = np.full(self.depth, np.nan)
        self.count = np.zeros(m)
        self.mean = np.zeros(m)
        self.var = np.zeros(m)
        # The two-sided CUSUM as a walk and its running minimum (rows: upward, downward): the statistic
        # is ``walk - floor``, which is ``max(0, s + step)`` tick after tick, and a block of ticks is a
        # cumulative sum and a running minimum, the very same additions in the same order.
        self.walk = np.zeros((2, m))
        self.floor = np.zeros((2, m))
        self._pair_inv, self._pair_tag = np.nonzero(self.members)
        self._columns = [np.flatnonzero(row) for row in self.members]
        # What score() worked out for its tick, handed to update() of the very same tick (the bank
        # passes the same arrays to both): the residuals are the costly part of a live tick.
        self._pending: tuple[np.ndarray, float, np.ndarray, tuple[np.ndarray, ...]] | None = None

    def warm(self) -> np.ndarray:
        warm = self.count >= self._warmup
        return self.members[warm].any(axis=0) if warm.any() else np.zeros(self.n_tags, dtype=bool)

    def _forget_caches(self) -> None:
        self._pending = None
        super()._forget_caches()

    # -- the residuals -------------------------------------------------------------------------
    def residuals(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residual of every invariant for each row (NaN where an input is missing), and the history
        after these rows; changes nothing."""
        Xv = np.where(valid[:, self._read], X[:, self._read], np.nan)
        H = np.vstack([self.history, Xv])
        T = np.r_[self.history_ts, ts]
        R = np.empty((X.shape[0], len(self.nodes)))
        for i, node in enumerate(self._compact):
            R[:, i] = evaluate(node, H, T, self.depth)
        return R, H[-self.depth :], T[-self.depth :]

    def _steps(self, R: np.ndarray, warm: np.ndarray) -> np.ndarray:
        """The CUSUM steps (..., 2, invariants) of residuals ``R`` (..., invariants): standardized
        excess over the tolerance, less the slack; 0 where not ``warm`` (the walk stands still)."""
        sd = np.sqrt(np.maximum(self.var, 1e-18))
        with np.errstate(invalid="ignore"):
            d = np.where(warm, R - self.mean, 0.0)
            excess = np.maximum(np.abs(d) - self._tol, 0.0)
            z = np.copysign(excess, d) / sd
        up = np.where(warm, z - self._k, 0.0)
        down = np.where(warm, -z - self._k, 0.0)
        return np.stack([up, down], axis=-2)

    def _scores(self, walk: np.ndarray, floor: np.ndarray) -> np.ndarray:
        return np.minimum(to_score((walk - floor).max(axis=-2) / self._h), self._cap)

    def _cusum(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(scores, walk, floor, checkable) of one tick's residuals, from the state as it stands."""
        ok = np.isfinite(r)
        walk = self.walk + self._steps(r, ok & (self.count >= self._warmup))
        floor = np.minimum(self.floor, walk)
        return self._scores(walk, floor), walk, floor, ok

    def _tag_scores(self, score: np.ndarray) -> np.ndarray:
        """Each tag's worst invariant score (0 for a tag no invariant names)."""
        out = np.zeros(self.n_tags)
        np.maximum.at(out, self._pair_tag, score[self._pair_inv])
        return out

    def _learn(self, r: np.ndarray, score: np.ndarray, ok: np.ndarray, learn: np.ndarray, thr: float) -> None:
        """Move each residual's mean and spread, where the invariant held and its tags may be learned."""
        free = ~(self.members & ~learn[None, :]).any(axis=1)
        take = ok & free & (score < thr)
        a = np.where(self.count < self._warmup, 1.0 / (self.count + 1.0), self._alpha)
        take &= a > 0
        d = np.where(take, r - self.mean, 0.0)
        self.mean = self.mean + np.where(take, a * d, 0.0)
        self.var = np.where(take, (1.0 - a) * (self.var + a * d * d), self.var)
        self.count = self.count + take

    # -- the detector verbs --------------------------------------------------------------------
    def _tick(self, x: np.ndarray, ts: float, valid: np.ndarray) -> tuple[np.ndarray, ...]:
        pending = self._pending
        if pending is not None and pending[0] is x and pending[1] == ts and pending[2] is valid:
            return pending[3]
        R, H, T = self.residuals(x[None, :], np.array([ts]), valid[None, :])
        worked = (R[0], H, T, *self._cusum(R[0]))
        self._pending = (x, ts, valid, worked)
        return worked

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        return self._tag_scores(self._tick(x, ts, valid)[3])

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        r, H, T, score, walk, floor, ok = self._tick(x, ts, valid)
        self._pending = None
        self.walk, self.floor = walk, floor
        self._learn(r, score, ok, learn, 0.5)
        self.history, self.history_ts = H, T

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """The residuals of the whole block at once; the CUSUM too once every invariant's baseline is
        fixed (warm, ``alpha`` 0), else tick by tick across invariants while some still learn."""
        R, H, T = self.residuals(X, ts, valid)
        self._pending = None
        if bool(np.all((self.count >= self._warmup) & (self._alpha == 0.0))):
            steps = self._steps(R, np.isfinite(R))  # (ticks, 2, invariants)
            walk = np.cumsum(np.concatenate([self.walk[None], steps]), axis=0)[1:]
            floor = np.minimum.accumulate(np.concatenate([self.floor[None], walk]), axis=0)[1:]
            score = self._scores(walk, floor)
            out = np.zeros(X.shape, dtype=np.float64)
            for i, cols in enumerate(self._columns):
                out[:, cols] = np.maximum(out[:, cols], score[:, i : i + 1])
            if len(X):
                self.walk, self.floor = walk[-1].copy(), floor[-1].copy()
        else:
            out = np.empty(X.shape, dtype=np.float64)
            for i in range(X.shape[0]):
                score, walk, floor, ok = self._cusum(R[i])
                out[i] = self._tag_scores(score)
                self.walk, self.floor = walk, floor
                self._learn(R[i], score, ok, valid[i] & (out[i] < protect_threshold), 0.5)
        self.history, self.history_ts = H.copy(), T.copy()
        return out

    def invariant_scores(self) -> dict[str, float]:
        """Each invariant's score from the CUSUM as it stands: which relation an alert on a tag means."""
        score = self._scores(self.walk, self.floor)
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
        self.history = np.full((self.depth, self._read.size), np.nan)
        self.history_ts = np.full(self.depth, np.nan)
        same_tags = rows is None or np.array_equal(rows, np.arange(self.n_tags))
        if same_tags and saved.shape == self.history.shape:
            self.history[...] = saved
            self.history_ts[...] = saved_ts
        self._forget_caches()
