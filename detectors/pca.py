"""PCA process model: Hotelling T² and Q (SPE) per group of tags, with per-tag contributions.

An attack built to look normal tag by tag (a flow spoofed within its range, a
level held while the pump runs) still breaks the relations between tags. The
model learns, per group, the mean, scale and correlation of its tags; a tick
is projected on the principal components that carry ``variance`` of the
baseline. T² measures how far it sits inside the model plane (an unusual
operating point), Q how far it sits off it (a broken relation).

A tag that did not move at all in the baseline (a setpoint the operators left
alone) is left out of the model: it carries no relation to learn, and its first
change, an operator's act, would otherwise be an infinitely anomalous
tick. The ``command`` and ``limits`` detectors watch such tags.

Control limits start analytic, from the baseline itself: T² uses the F
distribution ``k(N²-1)/(N(N-k)) F(k, N-k)`` with N the effective number of
baseline samples, Q uses Box's approximation ``g χ²(h)`` with ``g = θ2/θ1``,
``h = θ1²/θ2`` over the residual eigenvalues. Both at ``confidence``, times
``limit_scale``. Those assume independent samples from a fixed distribution; a
plant's are neither. Its operating point wanders (a supply flow over a quarter of
an hour, a cooling-water temperature over hours), so tomorrow's ticks sit further
from the model than the baseline's own did, and the analytic limits are crossed
on a healthy plant (measured on the simulator, learning all along: the statistic
reached up to 2.4 times them within three hours, where their 0.999 quantile
promises it almost never exceeds 1). So the limits are calibrated during the warm-up, out of sample: the
model is fitted at half the ``warmup``, keeps learning, and scores the second
half without raising anything; the group's limits are then ``calibration``
times the analytic ones, or that many times the worst (smoothed) statistic the
second half showed if it was higher. The warm-up statistic is scored before it is
learned, as the plant will be afterwards, so it measures what the model misses
rather than what it has seen; the multiplier covers what a short warm-up could
not show (on the simulator's 3-hour healthy runs, the worst statistic after a
10-minute window ran up to 2.3 times the window's worst). After the warm-up the
limits stay as they were set: a limit that kept adapting would let an attacker
raise it.

Scores: the bank scores per tag, so the tick's group statistic
``S = max(T²/T²_lim, Q/Q_lim)`` goes to the tag that contributes most to it,
and every other tag of the group gets ``S`` times its share of that
contribution (its T² part ``z_i (PΛ⁻¹t)_i`` or its Q part ``e_i²``, each over
its limit, whichever is larger). Each tag's part is then smoothed over ticks (an
EWMA, ``smoothing``), and the group's statistic is its top tag's: the limits are
calibrated on that smoothed statistic, so they are limits for it. An attack that
holds for a minute loses a few ticks of detection; a one-tick excursion of the
noise is not an alert; and once an attack ends, the tag it moved decays from where
it was instead of the smoothed statistic landing on whichever tag the noise puts
on top. An alert names the tags that moved the model (``explain`` words it);
``group_statistics`` gives T² and Q themselves.

Missing tags at a tick are imputed by their conditional mean given the
observed tags of the group under the baseline correlation (``R_mo R_oo⁻¹ z_o``);
they score 0 themselves (the stale detector reports them).

Learning, per group, in batches of ``refit_every`` learned ticks: sums of the
centred samples accumulate, and at the end of a batch they are blended into the
baseline with weight ``max(beta, batch/count)`` and the model is refitted. A
tick is learned by a group only if every tag of it is valid and allowed to
learn (the bank withholds flagged samples), and in ``protecting`` mode, once warm, not
if the group's smoothed statistic is between ``learn_below`` (half) of its limit
and the limit:
the calibrated limits are wide, and a bias of a few sd that sits between half and
all of the limit would otherwise be learned tick by tick until the model had
taken it in (on the unit tests' stream, a 2 sd bias was gone within three refits). On the simulator's
healthy runs the statistic stays under half its calibrated limit, so the model still
follows the plant. With tight limits (``calibration`` 0) that band holds ordinary
ticks, and withholding them would stop the model following a plant that moves on:
set ``learn_below`` 1 there (config/batadal.yaml does). That alone does not stop a ramp
slow enough to stay under the limits while the baseline follows it, so in
``protecting`` mode a refit is also refused if it would move a tag's mean more
than ``max_drift`` sd from its anchor (the baseline at the end of the warm-up)
out of the tag's configured normal ``range``, or widen its spread more than
``SPREAD_GROWTH`` times beyond a quarter of that range: an attacker can drag the
model that far and no further. Within its declared range a tag's mean may
follow the plant: a 20-minute anchor has seen a fraction of a supply flow's or a
temperature's legitimate wander, and a guard measured in its sd alone froze the
model at the first hour's operating point, after which every tick was flagged,
so none was learned, for good (the false alerts this detector raised on the
simulator before). A tag without a range keeps the strict anchor guard.
``learning`` mode learns every valid tick, flagged or not (commissioning only);
``frozen`` learns the ``warmup`` ticks, fits, and never moves again.

Scoring is batched across ticks: ``run`` scores every tick up to the next
refit in one pass of array operations, so a replay costs a few microseconds
per tick. The products go through BLAS in blocks of a fixed number of rows
(``_rows_matmul``), so that a block gives the very same bits as its ticks one
by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from detectors.base import DetectorParams, TagLimits, scale_floor, to_score
from detectors.groups import GroupedModel

MODES: tuple[str, ...] = ("learning", "protecting", "frozen")
LEARNING, PROTECTING, FROZEN = range(3)

EIG_FLOOR = 1e-3  # smallest eigenvalue (correlation units) a component may have in T² or Q
RIDGE = 1e-3  # regularisation of the observed-tag correlation when imputing
SPREAD_GROWTH = 1.5  # protecting: how much wider than at its anchor a tag's learned spread may grow...
RANGE_SPREAD = 0.25  # ...unless it stays within this share of the tag's configured normal range
STAT_CAP = 1e6  # a group statistic this many times its limit is as anomalous as it gets
CHUNK_ELEMENTS = 1 << 20  # cap on rows x group cells learned in one block
ROW_BLOCK = 64  # rows per BLAS call when scoring (see _rows_matmul)
GROUP_COUNTERS = ("count", "ticks", "acc_n", "fitted", "calib", "cal_max")  # one value per group


class PcaParams(DetectorParams):
    """On by default: a config that only lists tags gets one model per source (per unit).

    The defaults are sized on the simulator's healthy plants, whose operating point wanders
    slowly (supply flows over ~15 min, temperatures over hours): a 20-minute warm-up at 1 s
    ticks, the statistic smoothed over ~20 ticks, limits calibrated on the warm-up (see the
    module docstring). With them the nine healthy 3-hour runs (3 plants x 3 seeds) raise no
    PCA alert. Group-wide settings (everything but ``enabled``, ``group`` and ``min_std``)
    are taken from the first tag of each group.
    """

    enabled: bool = True
    group: Annotated[
        int, Field(description="Tags with the same number share one model; -1: one model per source.")
    ] = -1
    mode: Literal["learning", "protecting", "frozen"] = "protecting"
    warmup: Annotated[
        int, Field(ge=2, description="Learned ticks before scoring; the model is fitted at half of them.")
    ] = 1200
    refit_every: Annotated[int, Field(ge=1, description="Ticks between refits (and checks for the first fit).")] = 100
    beta: Annotated[float, Field(gt=0, le=1, description="Weight of each refit batch in the baseline.")] = 0.05
    variance: Annotated[float, Field(gt=0, lt=1, description="Share of the variance the components keep.")] = 0.9
    confidence: Annotated[float, Field(gt=0.5, lt=1, description="Quantile of the control limits.")] = 0.999
    limit_scale: Annotated[float, Field(gt=0, description="Multiplier of both control limits.")] = 1.0
    smoothing: Annotated[
        float, Field(gt=0, le=1, description="Weight of each tick in each tag's smoothed statistic; 1: none.")
    ] = 0.1
    max_drift: Annotated[
        float, Field(gt=0, description="Protecting: how far (in anchor sd) a refit may move the mean from its anchor.")
    ] = 3.0
    calibration: Annotated[
        float,
        Field(
            ge=0,
            description="Limits: this many times the analytic ones, or the warm-up's worst out-of-sample "
            "statistic if higher; 0: analytic only.",
        ),
    ] = 2.5
    learn_below: Annotated[
        float,
        Field(
            gt=0,
            le=1,
            description="Protecting: ticks whose smoothed statistic is between this share of the limit and "
            "the limit are not learned; 1: all under the limit are.",
        ),
    ] = 0.5
    max_group_size: Annotated[int, Field(ge=1, le=256, description="Larger groups are split in order.")] = 64
    min_std: Annotated[float, Field(ge=0, description="Floor of a tag's learned standard deviation.")] = 0.0


def _rows_matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A[:, g] @ B[g]`` for every group: (L, G, m) by (G, m, k) to (L, G, k).

    Rows go through BLAS in blocks of exactly ``ROW_BLOCK`` (the last one padded
    with zeros), so every row is computed by the same kernel whatever the number
    of rows: a tick scored alone gives the same bits as in a block (the check
    suite holds the detector to that).
    """
    L, G, m = A.shape
    if G == 0 or L == 0:
        return np.zeros((L, G, B.shape[2] if B.ndim == 3 else 0))
    blocks = -(-L // ROW_BLOCK)
    stack = np.zeros((G, blocks * ROW_BLOCK, m))
    stack[:, :L] = A.transpose(1, 0, 2)
    out = np.matmul(stack.reshape(G, blocks, ROW_BLOCK, m), B[:, None])  # (G, blocks, ROW_BLOCK, k)
    return out.reshape(G, blocks * ROW_BLOCK, -1)[:, :L].transpose(1, 0, 2)


@dataclass(frozen=True)
class BlockDetail:
    """T² and Q over their limits, (ticks, groups, 2), of the last block scored: what ``explain`` reads.

    Sized by the caller's block, not by the stream, and replaced at every block.
    """

    ratios: np.ndarray


def _group_labels(values: np.ndarray) -> list[str]:
    """How an alert names each group: its configured number, or its source; parts of a split group numbered."""
    names = [f"group {v:g}" if v >= 0 else f"model of source {int(-v) - 1}" for v in values]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(f"{name} part {seen[name]}" if names.count(name) > 1 else name)
    return out


class PcaDetector(GroupedModel):
    name: ClassVar[str] = "pca"
    Params: ClassVar[type[DetectorParams]] = PcaParams
    state_fields: ClassVar[tuple[str, ...]] = (
        "count",
        "ticks",
        "acc_n",
        "acc_s1",
        "acc_s2",
        "fit_mean",
        "fit_cov",
        "fitted",
        "anchor_mean",
        "anchor_scale",
        "smoothed",
        "calib",
        "cal_max",
    )
    fault: ClassVar[str] = "step"
    modes: ClassVar[tuple[str, ...]] = MODES
    suite_settings: ClassVar[dict[str, float]] = {"warmup": 300}
    """The suite's streams fault at tick 500; a plant's 20-minute warm-up would not be over."""

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        p = self.params
        n = self.n_tags
        groups = self.groups
        G = len(groups)
        cap = max((len(m) for m in groups), default=1)
        self.cap = cap
        members = np.zeros((G, cap), dtype=np.intp)
        present = np.zeros((G, cap), dtype=bool)
        for g, m in enumerate(groups):
            members[g, : len(m)] = m
            present[g, : len(m)] = True
        self._members, self._present = members, present
        self._flat_members = members[present]  # tags in group order, for scattering scores back
        # Where each tag sits in its group (-1: in no group); its group is ``_tag_group``.
        self._tag_pos = np.full(n, -1, dtype=np.intp)
        for m in groups:
            self._tag_pos[m] = np.arange(len(m))
        per_group = self.per_group
        self._mode = per_group("mode").astype(np.intp)
        self._warmup = per_group("warmup")
        self._refit_every = per_group("refit_every")
        self._beta = per_group("beta")
        self._variance = per_group("variance")
        self._confidence = per_group("confidence")
        self._limit_scale = per_group("limit_scale")
        self._max_drift = per_group("max_drift")
        self._smoothing = per_group("smoothing")
        self._calibration = per_group("calibration")
        self._learn_below = per_group("learn_below")
        floor = scale_floor(limits, np.asarray(p["min_std"], dtype=np.float64))
        self._scale_floor = np.where(present, floor[members], 1.0)
        # The tag's normal range from the config (NaN: not given), which a learned mean may wander within.
        self._range_lo = np.where(present, limits.lo[members], np.nan)
        self._range_hi = np.where(present, limits.hi[members], np.nan)

        # State, in group layout (``state()`` hands it out per tag).
        self.count = np.zeros(G)
        self.ticks = np.zeros(G)  # ticks seen (learned or not): refits fall every refit_every of them
        self.acc_n = np.zeros(G)
        self.acc_s1 = np.zeros((G, cap))
        self.acc_s2 = np.zeros((G, cap, cap))
        self.fit_mean = np.zeros((G, cap))
        self.fit_cov = np.zeros((G, cap, cap))
        self.fitted = np.zeros(G)  # the count at the last fit; 0: no model yet
        # Where the baseline was when it was last learned without protection: a protecting
        # refit may not move the mean further than ``max_drift`` sd from it.
        self.anchor_mean = np.zeros((G, cap))
        self.anchor_scale = np.ones((G, cap))
        self.smoothed = np.zeros((G, cap))  # each tag's statistic, exponentially weighted over ticks
        self.calib = np.zeros(G)  # multiplier of the analytic limits; 0: still warming up (not scored)
        self.cal_max = np.zeros(G)  # worst smoothed statistic of the warm-up's out-of-sample half
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pending_key: np.ndarray | None = None
        # The model derived from the fit (caches, recomputed from state on load).
        self._inv_scale = np.zeros((G, cap))
        self._load = np.zeros((G, cap, cap))
        self._inv_eig = np.zeros((G, cap))
        self._t2_lim = np.ones(G)
        self._q_lim = np.ones(G)
        self._corr = np.zeros((G, cap, cap))
        self._n_comp = np.zeros(G, dtype=np.intp)
        self._tag_warm: np.ndarray | None = None
        # Per row of the last block scored and per group: T² and Q over their limits (for ``explain``).
        self._detail: BlockDetail | None = None
        self._labels = _group_labels(self.per_group("group") if G else np.empty(0))

    # -- the model --------------------------------------------------------------------------------
    def _effective_n(self, g: int) -> float:
        """Samples the baseline stands for: those seen at the fit, at most the blend's memory."""
        seen = float(self.fitted[g])  # the count at the last fit
        if self._mode[g] == FROZEN:
            return seen
        beta = self._beta[g]
        return float(min(seen, self._refit_every[g] * (2.0 - beta) / beta))

    def _derive(self, g: int) -> None:
        """The projection, eigenvalues and control limits of group ``g`` from its fitted baseline."""
        from scipy import stats

        size = len(self.groups[g])
        if not self.fitted[g]:
            self._inv_scale[g] = 0.0
            self._load[g] = 0.0
            self._inv_eig[g] = 0.0
            self._corr[g] = 0.0
            self._t2_lim[g] = self._q_lim[g] = 1.0
            self._n_comp[g] = 0
            return
        cov = self.fit_cov[g, :size, :size]
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        floor = self._scale_floor[g, :size]
        live = sd > floor  # a tag that never moved in the baseline (a setpoint) has no relation to learn
        if not live.any():
            live[:] = True
        scale = np.maximum(sd, floor)
        corr = cov / np.outer(scale, scale)
        corr[~live, :] = 0.0
        corr[:, ~live] = 0.0
        full_size = size
        sub = np.flatnonzero(live)
        size = len(sub)
        eig, vec = np.linalg.eigh(corr[np.ix_(sub, sub)])
        order = np.argsort(eig)[::-1]
        eig, vec = np.maximum(eig[order], 0.0), vec[:, order]
        # A deterministic sign per component, so that refits do not flip the loadings.
        vec *= np.where(vec[np.abs(vec).argmax(axis=0), np.arange(size)] < 0, -1.0, 1.0)
        total = float(eig.sum())
        if total > 0:
            k = int(np.searchsorted(np.cumsum(eig) / total, self._variance[g]) + 1)
        else:
            k = 1
        k = max(1, min(k, size - 1 if size > 1 else 1))
        kept = np.maximum(eig[:k], EIG_FLOOR)
        n_eff = max(self._effective_n(g), k + 2.0)
        conf = float(self._confidence[g])
        t2 = k * (n_eff * n_eff - 1.0) / (n_eff * (n_eff - k)) * float(stats.f.ppf(conf, k, n_eff - k))
        residual = np.maximum(eig[k:], EIG_FLOOR) if size > 1 else np.array([EIG_FLOOR])
        theta1, theta2 = float(residual.sum()), float((residual * residual).sum())
        q = theta2 / theta1 * float(stats.chi2.ppf(conf, theta1 * theta1 / theta2))
        self._inv_scale[g] = 0.0
        self._inv_scale[g, sub] = 1.0 / scale[sub]
        self._load[g] = 0.0
        self._load[g, sub, :k] = vec[:, :k]
        self._inv_eig[g] = 0.0
        self._inv_eig[g, :k] = 1.0 / kept
        self._corr[g] = 0.0
        self._corr[g, :full_size, :full_size] = corr
        self._t2_lim[g] = t2 * self._limit_scale[g]
        self._q_lim[g] = q * self._limit_scale[g]
        self._n_comp[g] = k

    def _refit(self, g: int) -> None:
        """Blend the batch accumulated since the last fit into the baseline and refit."""
        n = self.acc_n[g]
        mean_b = self.acc_s1[g] / n
        cov_b = self.acc_s2[g] / n - np.outer(mean_b, mean_b)
        beta = 1.0 if not self.fitted[g] else max(float(self._beta[g]), float(n / self.count[g]))
        d = mean_b  # the batch mean relative to the current centre (the fitted mean)
        new_mean = self.fit_mean[g] + beta * d
        new_mean[~self._present[g]] = 0.0
        self.acc_n[g] = 0.0
        self.acc_s1[g] = 0.0
        self.acc_s2[g] = 0.0
        new_cov = (1.0 - beta) * self.fit_cov[g] + beta * cov_b + beta * (1.0 - beta) * np.outer(d, d)
        protecting = self.calib[g] > 0 and self._mode[g] == PROTECTING
        if protecting:
            drift = np.abs(new_mean - self.anchor_mean[g]) / self.anchor_scale[g]
            spread = np.sqrt(np.maximum(np.diagonal(new_cov), 0.0)) / self.anchor_scale[g]
            lo, hi = self._range_lo[g], self._range_hi[g]
            with np.errstate(invalid="ignore"):
                inside = (new_mean >= lo) & (new_mean <= hi)
                narrow = np.sqrt(np.maximum(np.diagonal(new_cov), 0.0)) <= (hi - lo) * RANGE_SPREAD
            moved, widened = drift > self._max_drift[g], spread > SPREAD_GROWTH
            if not inside[moved].all() or not narrow[widened].all():
                return  # a slow ramp trying to drag the baseline along (or widen it): not learned
        self.fit_cov[g] = new_cov
        self.fit_mean[g] = new_mean
        if not protecting:
            self._set_anchor(g)
        self.fitted[g] = self.count[g]
        if not self.calib[g] and self.count[g] >= self._warmup[g]:
            self.calib[g] = self._calibrated(g)
            self.smoothed[g] /= self.calib[g]  # it was measured against the analytic limits
        self._derive(g)
        self._tag_warm = None

    def _calibrated(self, g: int) -> float:
        """The limits' multiplier at the end of the warm-up (see the module docstring)."""
        margin = float(self._calibration[g])
        return margin * max(1.0, float(self.cal_max[g])) if margin > 0 else 1.0

    def _set_anchor(self, g: int) -> None:
        self.anchor_mean[g] = self.fit_mean[g]
        sd = np.sqrt(np.maximum(np.diagonal(self.fit_cov[g]), 0.0))
        self.anchor_scale[g] = np.where(self._present[g], np.maximum(sd, self._scale_floor[g]), 1.0)

    def fit(self, X: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Fit every group's baseline from a recording at once (rows where the whole group is valid).

        As in a live warm-up, the limits are calibrated out of sample: a model of the first half
        of the rows scores the second half, then the model is fitted on all of them. The detector
        then carries on in its mode from that baseline; ``frozen`` keeps it for good.
        """
        X = np.asarray(X, dtype=np.float64)
        valid = np.isfinite(X) if valid is None else valid & np.isfinite(X)
        rows = [valid[:, m].all(axis=1) for m in self.groups]
        halves = [np.flatnonzero(r)[len(np.flatnonzero(r)) // 2] if r.sum() >= 4 else len(X) for r in rows]
        self.calib[...] = 0.0
        self.cal_max[...] = 0.0
        self.smoothed[...] = 0.0
        for g, m in enumerate(self.groups):
            self._fit_rows(g, X[: halves[g]][rows[g][: halves[g]]][:, m])
        if len(self.groups):
            _, _, S, _ = self._statistics(X, valid)
            self._pending = None
            self.smoothed[...] = 0.0
            for g in range(len(self.groups)):
                later = rows[g] & (np.arange(len(X)) >= halves[g])
                self.cal_max[g] = float(S[later, g].max()) if later.any() else 0.0
        for g, m in enumerate(self.groups):
            if self._fit_rows(g, X[rows[g]][:, m]):
                self.calib[g] = self._calibrated(g)
                self._derive(g)
        self._tag_warm = None

    def _fit_rows(self, g: int, Y: np.ndarray) -> bool:
        """Group ``g``'s baseline from the rows ``Y`` (its tags' columns); False if fewer than two rows."""
        if len(Y) < 2:
            return False
        size = Y.shape[1]
        self.fit_mean[g] = 0.0
        self.fit_mean[g, :size] = Y.mean(axis=0)
        self.fit_cov[g] = 0.0
        self.fit_cov[g, :size, :size] = np.cov(Y, rowvar=False, bias=True).reshape(size, size)
        self.count[g] = float(len(Y))
        self.fitted[g] = self.count[g]
        self._set_anchor(g)
        self.acc_n[g] = 0.0
        self.acc_s1[g] = 0.0
        self.acc_s2[g] = 0.0
        self._derive(g)
        return True

    # -- scoring ----------------------------------------------------------------------------------
    def _gather(self, X: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ticks in group layout: values (L, G, cap) and which of them are usable."""
        Xg = X[:, self._members]
        ok = valid[:, self._members] & self._present
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(Xg)
        return Xg, ok

    def _statistics(self, X: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row and group: T², Q, the smoothed group statistic, and per-cell statistics (smoothed)."""
        Xg, ok = self._gather(X, valid)
        with np.errstate(invalid="ignore", over="ignore"):
            Z = (Xg - self.fit_mean) * self._inv_scale
        Z[~ok] = 0.0
        fitted = self.fitted > 0
        missing = fitted & (self._present & ~ok).any(axis=2) & ok.any(axis=2)
        for r, g in np.argwhere(missing):
            self._impute(Z[r, g], ok[r, g], g)
        kmax = max(1, int(self._n_comp.max(initial=1)))  # components past every group's k are zero
        load = np.ascontiguousarray(self._load[:, :, :kmax])
        with np.errstate(over="ignore", invalid="ignore"):
            t = _rows_matmul(Z, load)
            tw = t * self._inv_eig[:, :kmax]
            T2 = (t * tw).sum(axis=2)
            load_t = np.ascontiguousarray(load.transpose(0, 2, 1))
            zhat = _rows_matmul(t, load_t)
            u = _rows_matmul(tw, load_t)
            e = Z - zhat
            e2 = e * e
            Q = e2.sum(axis=2)
            S = np.maximum(T2 / self._t2_lim, Q / self._q_lim) / np.where(self.calib > 0, self.calib, 1.0)
            contrib = np.maximum(np.maximum(Z * u, 0.0) / self._t2_lim[:, None], e2 / self._q_lim[:, None])
            contrib[~ok] = 0.0
            top = contrib.max(axis=2)
            share = contrib / np.where(top > 0, top, 1.0)[:, :, None]
        share[~np.isfinite(share)] = 1.0  # an absurd sample overflowed: it is as anomalous as it gets
        S = np.minimum(np.nan_to_num(S, nan=STAT_CAP, posinf=STAT_CAP), STAT_CAP)
        raw = share * S[:, :, None]
        raw[~ok] = 0.0
        raw[:, ~fitted] = 0.0
        cell = self._smooth(raw)
        stat = cell.max(axis=2)  # the group statistic, smoothed: its top tag carries it whole
        calibrating = fitted & (self.calib == 0)
        cal_max = self.cal_max.copy()
        if calibrating.any():
            cal_max[calibrating] = np.maximum(cal_max[calibrating], stat[:, calibrating].max(axis=0))
        self._pending = (X, valid, cell[-1].copy(), cal_max, stat)
        cell[~ok] = 0.0  # a missing tag scores nothing itself (its smoothed state decays meanwhile)
        cell[:, ~(self.calib > 0)] = 0.0
        return T2, Q, stat, cell

    def _smooth(self, cells: np.ndarray) -> np.ndarray:
        """Each tag's statistic exponentially weighted over the rows, carrying on from ``smoothed``.

        Per tag, not per group: once an attack ends, the tag it moved decays from where it was,
        where a smoothed group statistic handed to the tag on top at each tick would land on
        whichever tag the noise put there. ``lfilter`` runs the very recursion
        ``y = a s + (1 - a) y`` row after row, so a block gives the same bits as its ticks one by one.
        """
        from scipy.signal import lfilter  # here, not at import: scipy.signal costs a second at every CLI start

        out = cells.copy()
        for a in np.unique(self._smoothing[self._smoothing < 1.0]):
            g = np.flatnonzero(self._smoothing == a)
            zi = ((1.0 - a) * self.smoothed[g])[None]
            out[:, g] = lfilter([a], [1.0, a - 1.0], cells[:, g], axis=0, zi=zi)[0]
        return out

    def _take_smoothed(self, x: np.ndarray | None, valid: np.ndarray | None) -> np.ndarray | None:
        """Keep the smoothed statistic of what was just scored: the block (``x`` None) or the tick
        ``x`` (that very array, else it is computed again). Returns it per row and group."""
        if not self.groups:
            return None
        if x is not None and valid is not None and (self._pending is None or self._pending_key is not x):
            self._statistics(x[None, :], valid[None, :])
        rows = None
        if self._pending is not None:
            self.smoothed = self._pending[2]
            self.cal_max = self._pending[3]
            rows = self._pending[4]
        self._pending = None
        self._pending_key = None
        return rows

    def _impute(self, z: np.ndarray, ok: np.ndarray, g: int) -> None:
        """Missing tags of one row of group ``g`` set to their conditional mean given the observed ones."""
        size = len(self.groups[g])
        obs = ok[:size]
        mis = ~obs
        R = self._corr[g, :size, :size]
        R_oo = R[np.ix_(obs, obs)] + RIDGE * np.eye(int(obs.sum()))
        z[:size][mis] = R[np.ix_(mis, obs)] @ np.linalg.solve(R_oo, z[:size][obs])

    def _score_rows(self, X: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of the rows, and per row and group T² and Q over their limits (for ``explain``)."""
        out = np.zeros((X.shape[0], self.n_tags))
        if not self.groups:  # switched off on every tag
            return out, np.zeros((X.shape[0], 0, 2))
        T2, Q, _, cell = self._statistics(X, valid)
        calib = np.where(self.calib > 0, self.calib, 1.0)
        detail = np.stack([T2 / (self._t2_lim * calib), Q / (self._q_lim * calib)], axis=2)
        out[:, self._flat_members] = cell[:, self._present]
        np.minimum(out, 1e300, out=out)  # to_score of inf is fine, but keep the statistic finite
        return to_score(out, out=out), detail

    def explain(self, row: int, tags: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[str | None]:
        """Why the group scored so at ``row``: its smoothed statistic over the limit, T² and Q over
        theirs at that very tick, and the three tags that moved it most, with their shares.

        The scores carry the rest (``-log2(1 - score)`` is a tag's smoothed statistic over the limit,
        the group's is its top tag's), so only T² and Q are kept per row and group. The statistic
        and the tick's T² and Q differ while it rises or decays: smoothing lags the tick.
        """
        detail = self._detail.ratios if self._detail is not None else None
        out: list[str | None] = []
        for tag in np.asarray(tags, dtype=np.intp):
            g = int(self._tag_group[tag])
            if g < 0 or detail is None or not 0 <= row < len(detail):
                out.append(None)
                continue
            members = self.groups[g]
            stat = -np.log2(np.maximum(1.0 - np.asarray(scores, dtype=np.float64)[members], 1e-300))
            total = float(stat.sum())
            if not total > 0:
                out.append(None)
                continue
            top = np.argsort(-stat, kind="stable")[:3]
            parts = ", ".join(f"{names[members[i]]} {100.0 * stat[i] / total:.0f} %" for i in top if stat[i] > 0)
            t2, q = detail[row, g]
            head = f"pca {self._labels[g]} {stat.max():.1f}x limit (T2 {t2:.1f}x, Q {q:.1f}x at this tick)"
            out.append(f"{head}; {parts}")
        return out

    def group_statistics(self, X: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """T², Q and their limits per row and group, from the model as it stands (no learning)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        valid = np.isfinite(X) if valid is None else np.atleast_2d(valid)
        pending, key = self._pending, self._pending_key
        T2, Q, S, _ = self._statistics(X, valid)
        self._pending, self._pending_key = pending, key
        calib = np.where(self.calib > 0, self.calib, 1.0)
        return {"t2": T2, "q": Q, "stat": S, "t2_limit": self._t2_lim * calib, "q_limit": self._q_lim * calib}

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        scores, detail = self._score_rows(x[None, :], valid[None, :])
        out = scores[0]
        self._detail = BlockDetail(detail) if self.groups else None
        self._pending_key = x
        return out

    def warm(self) -> np.ndarray:
        if self._tag_warm is None:
            warm = np.zeros(self.n_tags, dtype=bool)
            for g, m in enumerate(self.groups):
                warm[m] = self.calib[g] > 0
            self._tag_warm = warm
        return self._tag_warm

    # -- learning ---------------------------------------------------------------------------------
    def _learning_rows(self, X: np.ndarray, valid: np.ndarray, learn: np.ndarray) -> np.ndarray:
        """Which rows each group learns, (L, G): every tag valid, and allowed to learn unless in learning mode."""
        _, ok = self._gather(X, valid)
        allowed = ok & learn[:, self._members]
        whole_ok = (ok | ~self._present).all(axis=2)
        whole_allowed = (allowed | ~self._present).all(axis=2)
        rows = np.where(self._mode == LEARNING, whole_ok, whole_allowed)
        frozen = (self._mode == FROZEN) & (self.calib > 0)
        rows[:, frozen] = False
        return rows

    def _accumulate(self, X: np.ndarray, rows: np.ndarray) -> None:
        """Add the learned rows to the batch sums, in row order (so a block equals its ticks)."""
        fresh = (self.count == 0) & rows.any(axis=0)
        if fresh.any():  # a group's first learned row becomes its centre, for numerical safety
            first = rows.argmax(axis=0)
            for g in np.flatnonzero(fresh):
                self.fit_mean[g] = np.where(self._present[g], X[first[g], self._members[g]], 0.0)
        Y = X[:, self._members] - self.fit_mean
        Y[~np.broadcast_to(rows[:, :, None], Y.shape)] = 0.0
        Y[:, ~self._present] = 0.0
        outer = Y[:, :, :, None] * Y[:, :, None, :]
        for r in np.flatnonzero(rows.any(axis=1)):  # one add per row, as a tick alone does: the same bits
            self.acc_s1 += Y[r]
            self.acc_s2 += outer[r]
        learned = rows.sum(axis=0)
        self.acc_n += learned
        self.count += learned

    def _active(self) -> np.ndarray:
        return ~((self._mode == FROZEN) & (self.calib > 0))

    def _due(self) -> np.ndarray:
        """Groups that refit now: at a ``refit_every`` tick, with enough learned since the last fit
        (half the ``warmup`` for the first fit, a quarter of ``refit_every`` after)."""
        at_boundary = self.ticks % self._refit_every == 0
        first = np.maximum(2.0, self._warmup // 2)
        need = np.where(self.fitted > 0, np.maximum(2.0, self._refit_every // 4), first)
        return at_boundary & (self.acc_n >= need) & self._active()

    def _rows_to_refit(self) -> int:
        """Ticks to the next refit boundary of any group: a block that long scores with one model.

        Refits fall on ticks (every ``refit_every``), not on learned samples, so
        that groups which learn at different paces still refit together and
        blocks stay long.
        """
        active = self._active()
        if not active.any():
            return 1 << 62
        left = self._refit_every - self.ticks % self._refit_every
        return max(1, int(left[active].min()))

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        stat = self._take_smoothed(x, valid)
        self._learn_rows(x[None, :], valid[None, :], learn[None, :], stat)

    def _learn_rows(self, X: np.ndarray, valid: np.ndarray, learn: np.ndarray, stat: np.ndarray | None) -> None:
        if not len(self.groups):
            return
        rows = self._learning_rows(X, valid, learn)
        if stat is not None:  # protecting, once warm: not the ticks just under the limit (see learn_below)
            wary = (self._mode == PROTECTING) & (self.calib > 0)
            near = (stat[:, wary] >= self._learn_below[wary]) & (stat[:, wary] < 1.0)
            rows[:, wary] &= ~near
        if rows.any():
            self._accumulate(X, rows)
        self.ticks += X.shape[0]
        for g in np.flatnonzero(self._due()):
            self._refit(int(g))

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """Score then learn a block of ticks, batched: every tick before the next possible refit at once."""
        L = X.shape[0]
        out = np.empty(X.shape, dtype=np.float64)
        max_rows = max(1, CHUNK_ELEMENTS // max(1, len(self.groups) * self.cap * self.cap))
        detail = np.zeros((L, len(self.groups), 2))
        self._detail = BlockDetail(detail) if len(self.groups) else None
        i = 0
        while i < L:
            j = min(L, i + self._rows_to_refit(), i + max_rows)
            scores, detail[i:j] = self._score_rows(X[i:j], valid[i:j])
            stat = self._take_smoothed(None, None)
            out[i:j] = scores
            if len(self.groups):
                self._learn_rows(X[i:j], valid[i:j], valid[i:j] & (scores < protect_threshold), stat)
            i = j
        return out

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Per tag: its group's counters, its own sums and mean, and its row of the group matrices."""
        n, cap = self.n_tags, self.cap
        g, pos = self._tag_group, self._tag_pos
        inside = g >= 0
        out: dict[str, np.ndarray] = {}
        for name in GROUP_COUNTERS:
            a = np.zeros(n)
            a[inside] = getattr(self, name)[g[inside]]
            out[name] = a
        for name in ("acc_s1", "fit_mean", "anchor_mean", "anchor_scale", "smoothed"):
            a = np.zeros(n)
            a[inside] = getattr(self, name)[g[inside], pos[inside]]
            out[name] = a
        for name in ("acc_s2", "fit_cov"):
            a = np.zeros((n, cap))
            a[inside] = getattr(self, name)[g[inside], pos[inside]]
            out[name] = a
        return out

    def state_nbytes(self) -> int:
        return self.n_tags * 8 * (11 + 2 * self.cap)

    def load_state(self, state: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        """Restore per-tag arrays; with ``rows``, a group resumes only if it holds the very same tags.

        A group that lost or gained a tag starts cold: its correlations no longer
        describe the tags it has.
        """
        saved = {k: np.asarray(v) for k, v in state.items()}
        if rows is None:
            if saved["acc_s2"].shape != (self.n_tags, self.cap):
                raise ValueError(f"pca: snapshot shape {saved['acc_s2'].shape} != {(self.n_tags, self.cap)}")
            rows = np.arange(self.n_tags)
        rows = np.asarray(rows)
        for name in (*GROUP_COUNTERS, "smoothed", "acc_s1", "fit_mean", "acc_s2", "fit_cov"):
            getattr(self, name)[...] = 0.0
        self.anchor_mean[...] = 0.0
        self.anchor_scale[...] = 1.0
        for g, m in enumerate(self.groups):
            old = rows[m]
            size = len(m)
            if (old < 0).any() or not self._same_group(saved, old):
                continue
            # Old columns are in old tag order: the rank of each old tag among the group's old tags.
            col = np.argsort(np.argsort(old))
            self.count[g] = saved["count"][old[0]]
            self.acc_n[g] = saved["acc_n"][old[0]]
            self.ticks[g] = saved["ticks"][old[0]]
            self.fitted[g] = saved["fitted"][old[0]]
            self.smoothed[g, :size] = saved["smoothed"][old]
            self.calib[g] = saved["calib"][old[0]]
            self.cal_max[g] = saved["cal_max"][old[0]]
            self.acc_s1[g, :size] = saved["acc_s1"][old]
            self.fit_mean[g, :size] = saved["fit_mean"][old]
            self.anchor_mean[g, :size] = saved["anchor_mean"][old]
            self.anchor_scale[g, :size] = saved["anchor_scale"][old]
            self.acc_s2[g, :size, :size] = saved["acc_s2"][old][:, col]
            self.fit_cov[g, :size, :size] = saved["fit_cov"][old][:, col]
        self._forget_caches()

    @staticmethod
    def _same_group(saved: Mapping[str, np.ndarray], old: np.ndarray) -> bool:
        """Whether the old tags were one whole group: same counters, and exactly as many as its width."""
        width = saved["acc_s2"].shape[1]
        counters = np.stack([saved[k][old] for k in GROUP_COUNTERS])
        if not (counters == counters[:, :1]).all() or len(old) > width:
            return False
        # Columns past the group's size are zero in every saved row; a smaller group has more of them.
        used = (saved["fit_cov"][old] != 0).any(axis=0) | (saved["acc_s2"][old] != 0).any(axis=0)
        return not used[len(old) :].any()

    def _forget_caches(self) -> None:
        for g in range(len(self.groups)):
            self._derive(g)
        self._tag_warm = None
        self._pending = self._pending_key = None
        super()._forget_caches()
