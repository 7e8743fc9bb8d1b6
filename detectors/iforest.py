"""Isolation forest on window features, per group of tags: relations the PCA plane cannot draw.

PCA sees linear relations between tags at one tick. An attack can keep every
tag in range and every linear relation intact yet still put the group where it
never was in the way it moves: a flow that stopped fluctuating while the
current still does, a level whose slope no longer goes with the pump's noise.
An isolation forest (scikit-learn's ``IsolationForest``) fitted on *window
features* of the group's tags sees such points as easy to isolate.

Features, per tag over the last ``window`` ticks (at most ``MAX_WINDOW``):
the last value, the window mean, the window sd and the window slope (the change
across the window by least squares), all of the tag's value less a per-tag
centre (its first valid sample) so that float32 keeps their precision. They
are computed for a whole block of ticks at once, one whole-array pass per
offset of the window, so a tick scored alone gives the very bits it gets in a
block. A group's row is *complete* when every tag of it is valid at the tick
and has at least half a window of valid samples; only complete rows are scored
and learned (a gap is the stale detector's business).

Fit: the first half of the ``warmup`` complete rows the group learns feeds a
reservoir of ``RESERVOIR`` rows (one every ``warmup // 2 // RESERVOIR``), and
the forest is fitted on it with a fixed ``random_state``, as the features are
rotated onto the reservoir's principal axes (a tree cuts along axes; a broken
relation between tags is a point off the baseline's diagonal, isolated at once
along the axis across it). A forest is far larger than the 1 KiB per tag a
detector's state may take, so the state keeps the reservoir (per tag: its own
``RESERVOIR x 4`` features, float32) and the forest is refitted from it, bit
for bit the same, when a snapshot is loaded.

Limit, from the baseline's own scores, out of sample: each tree is grown on
half of the reservoir, so every reservoir row is out of bag for about half of
the trees, and mean + z sd of those out-of-bag scores (z at ``confidence``)
is a first limit. A plant's operating point wanders, though, so rows of the
next minutes sit further out than the reservoir's own; the second half of the
warm-up is therefore scored, before it is learned and without raising
anything, and the limit is mean + z sd of those scores if that is higher (as
the PCA detector calibrates its limits). The statistic is
``(s - median) / (limit - median) / limit_scale`` with ``s`` the forest's
anomaly score and ``median`` the out-of-bag median: 1 at the limit, 0.5 on
the shared scale. An isolation forest's score saturates (a point far outside
the baseline is isolated at the first cuts, however far), so the statistic
seldom goes past about 2.5 times the limit: gross excursions are the other
detectors' to grade.

Scores per tag, as PCA's: the forest works on the features rotated onto the
reservoir's principal axes; the group statistic goes to the tag whose
features weigh most in the axis the row sits furthest out on, and every other
tag of the group gets it times its share of that weight, so an alert names the
tags that moved. A tag whose own features are more than ``EXTREME_Z``
reservoir sd out takes the whole statistic too.

Learning: the forest is fitted once, when ``warmup`` rows are learned, and
then kept. An isolation forest has no incremental update, and refitting from a
sliding sample is exactly what a slow ramp exploits (each refit accepts a
little more of it); keeping the refit sample honest would need a second
reservoir the 1 KiB per tag cannot hold. A new baseline comes from
``plantwatch baseline fit`` on a recording an engineer reviewed. ``protecting``
(the default) learns during the warm-up only rows whose whole window went by
without a sample of the group withheld (flagged, by another detector under
``any`` protection): a window overlapping a spoofed stretch carries it in its
mean, sd and slope. ``learning`` (commissioning) takes every complete row.
After the warm-up ``count`` still counts the rows judged normal, and moves
nothing else; ``frozen`` learns its warm-up as ``protecting`` does and then
not even that count moves (the mode the other group models have, for a
baseline nothing may touch).

Path lengths: each tree's leaf value ``depth + c(n)`` is rounded to a multiple
of 2^-10 (far below what matters), so the sum over trees is exact in float64
whatever the order numpy adds them in: a block and its ticks agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from detectors.base import DetectorParams, TagLimits, to_score
from detectors.groups import GroupedModel

MODES: tuple[str, ...] = ("learning", "protecting", "frozen")
LEARNING, PROTECTING, FROZEN = range(3)

MAX_WINDOW = 16  # ticks of history a tag keeps: (MAX_WINDOW - 1) values of state
RESERVOIR = 48  # baseline feature rows kept per tag (float32), the forest's whole training set
FEATURES = ("last", "mean", "sd", "slope")
N_FEATURES = len(FEATURES)
SEED = 20_240_611  # random_state of every forest: the same reservoir always grows the same trees
PATH_QUANTUM = 1.0 / 1024.0  # leaf path lengths rounded to this, so sums over trees are exact
BIG = 1e15  # a valid but absurd value is clipped here, so features stay finite
EXTREME_Z = 6.0  # a tag with a feature this many reservoir sd out takes its group's whole statistic
ROW_BLOCK = 16  # rows per BLAS call when rotating (see Forest.rotate): live pads one row to this
MIN_SPREAD = 1e-3  # smallest (limit - median) of the anomaly score, for a degenerate baseline
SUM_QUANTUM = 2.0**-24  # calibration scores rounded to this, so their sums are exact in any order
EULER_GAMMA = 0.5772156649015329


class IforestParams(DetectorParams):
    """Off by default: a forest per group costs a fit (about 0.1 s per 100 trees) halfway through the warm-up.

    Group-wide settings (everything but ``enabled`` and ``group``) are taken
    from the first tag of each group.
    """

    enabled: bool = False
    group: Annotated[
        int, Field(description="Tags with the same number share one forest; -1: one forest per source.")
    ] = -1
    mode: Literal["learning", "protecting", "frozen"] = "protecting"
    window: Annotated[int, Field(ge=2, le=MAX_WINDOW, description="Ticks of each feature window.")] = MAX_WINDOW
    warmup: Annotated[
        int, Field(ge=2 * RESERVOIR, description="Learned complete rows: the first half fits, the second calibrates.")
    ] = 300
    trees: Annotated[int, Field(ge=1, le=500, description="Trees of the forest.")] = 100
    confidence: Annotated[
        float, Field(gt=0.5, lt=1, description="Quantile of the out-of-bag baseline scores that is the limit.")
    ] = 0.999
    limit_scale: Annotated[float, Field(gt=0, description="Divides the statistic: above 1, a laxer limit.")] = 1.0
    max_group_size: Annotated[int, Field(ge=1, le=64, description="Larger groups are split in order.")] = 32


def average_path(n: np.ndarray) -> np.ndarray:
    """c(n): the mean depth of an unsuccessful search in a binary tree of n points (Liu et al. 2008)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    m = n[big]
    out[big] = 2.0 * (np.log(m - 1.0) + EULER_GAMMA) - 2.0 * (m - 1.0) / m
    return out


class _Level:
    """One depth of every tree in a forest, tree after tree: ``2^depth`` nodes per tree."""

    def __init__(self, n_trees: int, depth: int) -> None:
        size = n_trees << depth
        self.feature = np.zeros(size, dtype=np.intp)
        self.threshold = np.full(size, np.inf)  # +inf: every value goes left, past a leaf above
        self.value = np.zeros(size)


def _lay_out(tree: object, index: int, levels: list[_Level]) -> None:
    """Copy one scikit-learn tree into complete levels: node ``p`` of depth ``d`` sits at
    ``index * 2^d + p`` and its children at ``2 p`` and ``2 p + 1`` of depth ``d + 1``. A leaf above
    the last depth sends every row down its left side, and its path length waits at the bottom."""
    t = tree  # sklearn.tree._tree.Tree
    n = t.node_count  # type: ignore[attr-defined]
    left, right = t.children_left[:n], t.children_right[:n]  # type: ignore[attr-defined]
    depth = np.zeros(n, dtype=np.intp)
    place = np.zeros(n, dtype=np.intp)  # position within its depth, in this tree
    for parent in range(n):  # nodes are numbered parents first
        if left[parent] >= 0:
            depth[left[parent]] = depth[right[parent]] = depth[parent] + 1
            place[left[parent]] = 2 * place[parent]
            place[right[parent]] = 2 * place[parent] + 1
    leaf = left < 0
    path = depth + average_path(t.n_node_samples[:n])  # type: ignore[attr-defined]
    value = np.round(path / PATH_QUANTUM) * PATH_QUANTUM
    bottom = len(levels) - 1
    for node in np.flatnonzero(~leaf):
        level = levels[depth[node]]
        at = (index << depth[node]) + place[node]
        level.feature[at] = t.feature[node]  # type: ignore[attr-defined]
        level.threshold[at] = t.threshold[node]  # type: ignore[attr-defined]
    for node in np.flatnonzero(leaf):
        drop = bottom - depth[node]
        levels[bottom].value[(index << bottom) + (place[node] << drop)] = value[node]


class Forest:
    """A fitted ``IsolationForest`` as flat arrays, walked for every tree and row at once."""

    def __init__(self, rows: np.ndarray, n_trees: int, confidence: float) -> None:
        from sklearn.ensemble import IsolationForest  # here: scikit-learn costs a second at import

        k = rows.shape[0]
        sub = max(2, k // 2)
        self._axes(rows)
        rows = self.rotate(rows)
        model = IsolationForest(n_estimators=n_trees, max_samples=sub, bootstrap=False, random_state=SEED, n_jobs=1)
        model.fit(rows)
        self.n_trees = len(model.estimators_)
        self.depth = max(int(e.tree_.max_depth) for e in model.estimators_)
        levels = [_Level(self.n_trees, d) for d in range(self.depth + 1)]
        for i, e in enumerate(model.estimators_):
            _lay_out(e.tree_, i, levels)
        self._levels = levels[:-1]
        self._value = levels[-1].value
        self.norm = float(average_path(np.array([sub]))[0])
        # Out of bag: every reservoir row scored by the trees that did not see it.
        paths = self.paths(rows)  # (T, k)
        in_bag = np.zeros((self.n_trees, k), dtype=bool)
        for i, s in enumerate(model.estimators_samples_):
            in_bag[i, s] = True
        out = ~in_bag
        seen = np.maximum(out.sum(axis=0), 1)
        oob = np.exp2(-(np.where(out, paths, 0.0).sum(axis=0) / seen) / self.norm)
        # The limit extrapolates from all of them (mean + z sd at ``confidence``) rather than
        # reading a quantile that a few dozen rows cannot resolve beyond their maximum.
        from scipy.stats import norm

        self.median = float(np.median(oob))
        self.limit = max(float(oob.mean() + norm.ppf(confidence) * oob.std()), self.median + MIN_SPREAD)

    def _axes(self, rows: np.ndarray) -> None:
        """The principal axes of the standardised reservoir: the coordinates the forest cuts along.

        An isolation forest cuts along axes; a broken relation between tags (a
        point off the baseline's diagonal) is easy to isolate only along the
        axis across that diagonal, so the features are rotated onto the
        principal axes of the reservoir first (their scale does not matter: a
        tree cuts uniformly between the extremes of whatever axis it picks).
        """
        self.mean = rows.mean(axis=0)
        sd = rows.std(axis=0)
        self.inv_sd = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
        Z = (rows - self.mean) * self.inv_sd
        _, vec = np.linalg.eigh(Z.T @ Z / rows.shape[0])
        vec *= np.where(vec[np.abs(vec).argmax(axis=0), np.arange(vec.shape[1])] < 0, -1.0, 1.0)  # a fixed sign
        self.rotation = np.ascontiguousarray(vec)
        spread = self.rotate(rows).std(axis=0)
        self.inv_spread = np.where(spread > 0, 1.0 / np.where(spread > 0, spread, 1.0), 0.0)

    def rotate(self, X: np.ndarray) -> np.ndarray:
        """Rows in the forest's coordinates.

        The product goes through BLAS in blocks of exactly ``ROW_BLOCK`` rows (the last one padded with
        zeros), as the PCA detector's, so a row gets the same bits alone as in a block of any length.
        """
        Z = (X - self.mean) * self.inv_sd
        L, d = Z.shape
        blocks = -(-L // ROW_BLOCK)
        padded = np.zeros((blocks * ROW_BLOCK, d))
        padded[:L] = Z
        out = np.matmul(padded.reshape(blocks, ROW_BLOCK, d), self.rotation)
        return out.reshape(blocks * ROW_BLOCK, -1)[:L]

    def paths(self, X: np.ndarray) -> np.ndarray:
        """Path length of every row in every tree, (trees, rows): all trees walked level by level.

        Each level is laid out tree after tree, so a node's children on the next level are ``2 i``
        and ``2 i + 1``: a step is a comparison and ``2 i + right``, no lookup of children.
        """
        X32 = np.ascontiguousarray(X, dtype=np.float32)  # scikit-learn's trees compare float32 values
        rows, width = X.shape
        root = self._levels[0] if self._levels else None
        if root is None:  # every tree is a single leaf
            return np.broadcast_to(self._value[:, None], (self.n_trees, rows)).copy()
        # The root level: one node per tree, its feature a column of X.
        at_root = X32[:, root.feature].T
        node = (at_root > root.threshold[:, None]).astype(np.intp)
        node += 2 * np.arange(self.n_trees)[:, None]
        flat = X32.ravel()
        at = (np.arange(rows) * width)[None, :]
        for level in self._levels[1:]:
            right = flat[at + level.feature[node]] > level.threshold[node]
            node *= 2
            node += right
        return self._value[node]

    def anomaly(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The anomaly score ``2^(-E[h]/c)`` of each row (exact sum over trees), each feature's z, and
        each feature's part in the row's most outlying principal axis (what moved the row off the baseline)."""
        R = self.rotate(X)
        s = np.exp2(-(self.paths(R).sum(axis=0) / self.n_trees) / self.norm)
        z = (X - self.mean) * self.inv_sd
        axis = np.abs(R * self.inv_spread).argmax(axis=1)
        part = np.abs(z * self.rotation[:, axis].T)
        return s, z, part


class IforestDetector(GroupedModel):
    name: ClassVar[str] = "iforest"
    Params: ClassVar[type[DetectorParams]] = IforestParams
    state_fields: ClassVar[tuple[str, ...]] = (
        "history",
        "centre",
        "count",
        "admitted",
        "since_withheld",
        "calib_n",
        "calib_s1",
        "calib_s2",
        "reservoir",
        "fit_pos",
        "group_size",
    )
    tracking_fields: ClassVar[tuple[str, ...]] = ("history", "since_withheld")
    """What follows the last moment rather than the baseline (a baseline restore keeps the snapshot's)."""
    fault: ClassVar[str] = "step"
    modes: ClassVar[tuple[str, ...]] = MODES

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        n = self.n_tags
        G = len(self.groups)
        self._flat = np.concatenate(self.groups) if G else np.zeros(0, dtype=np.intp)
        per_group = self.per_group
        self._mode = per_group("mode").astype(np.intp)
        self._window = per_group("window").astype(np.intp)
        self._warmup = per_group("warmup")
        self._trees = per_group("trees").astype(np.intp)
        self._confidence = per_group("confidence")
        self._limit_scale = per_group("limit_scale")

        self.history = np.full((n, MAX_WINDOW - 1), np.nan)  # the last ticks' raw values, NaN = not valid
        self.centre = np.full(n, np.nan)  # first valid sample of the tag
        self.count = np.zeros(n)  # complete rows the group learned (judged normal)
        self.admitted = np.zeros(n)  # rows the group put into its reservoir
        self.since_withheld = np.full(n, float(MAX_WINDOW))  # ticks since a sample of the group was withheld
        self.calib_n = np.zeros(n)  # calibration: rows, and sums of their anomaly scores and squares
        self.calib_s1 = np.zeros(n)
        self.calib_s2 = np.zeros(n)
        self.reservoir = np.zeros((n, RESERVOIR, N_FEATURES), dtype=np.float32)
        self.fit_pos = np.zeros(n)  # the tag's column in its group's forest
        self.group_size = np.zeros(n)
        for m in self.groups:
            self.fit_pos[m] = np.arange(len(m))
            self.group_size[m] = len(m)
        self._order: list[np.ndarray] = [m.copy() for m in self.groups]  # members in forest column order
        self._forests: list[Forest | None] = [None] * G
        self._limit = np.zeros(G)  # the anomaly score at the limit; 0: not calibrated yet
        self._tag_warm: np.ndarray | None = None
        self._explained: tuple[np.ndarray, np.ndarray] | None = None
        self._cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # x, scores, features of a tick

    # -- features ---------------------------------------------------------------------------------
    def _features(self, X: np.ndarray, valid: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window features of the group members, (L, members, 4), and which group rows are complete (L, G)."""
        cols = self._flat
        L = X.shape[0]
        Y = np.where(valid[:, cols], X[:, cols], np.nan)
        ext = np.concatenate([self.history[cols].T, Y], axis=0)  # (MAX_WINDOW - 1 + L, members)
        with np.errstate(invalid="ignore"):
            ext -= centre[cols]
        np.clip(ext, -BIG, BIG, out=ext)
        V = np.isfinite(ext)
        Y0 = np.where(V, ext, 0.0)
        width = self._window[self._tag_group[cols]]
        start = MAX_WINDOW - width  # the first offset inside each tag's window
        # Counts and sums of positions are integers: from prefix sums over the block, exactly. Sums of
        # values are not: one whole-array pass per offset of the window, the same operations for a
        # row whatever the block.
        if V.all():  # every window whole (the usual case): the same integers, without the prefix sums
            w = width.astype(np.float64)
            n = np.broadcast_to(w, (L, cols.size))
            sj = np.broadcast_to(w * (w - 1.0) / 2.0, (L, cols.size))
            sjj = np.broadcast_to((w - 1.0) * w * (2.0 * w - 1.0) / 6.0, (L, cols.size))
        else:
            ones = V.astype(np.float64)
            t = np.arange(ext.shape[0], dtype=np.float64)[:, None]
            prefix = np.zeros((ext.shape[0] + 1, 3, cols.size))
            np.cumsum(np.stack([ones, ones * t, ones * t * t], axis=1), axis=0, out=prefix[1:])
            first = np.arange(L)[:, None] + start[None, :]  # the first tick of each row's window, in ext
            span = prefix[MAX_WINDOW : MAX_WINDOW + L]
            span = span - prefix[first, :, np.arange(cols.size)[None, :]].transpose(0, 2, 1)
            n, st, stt = span[:, 0], span[:, 1], span[:, 2]
            sj = st - first * n  # positions counted from each window's first tick
            sjj = stt - 2.0 * first * st + first * first * n
        full = bool((start == 0).all())
        sy = np.zeros((L, cols.size))
        syy = np.zeros((L, cols.size))
        sjy = np.zeros((L, cols.size))
        y = np.empty((L, cols.size))
        yj = np.empty((L, cols.size))
        for k in range(int(start.min()), MAX_WINDOW):
            if full:
                np.copyto(y, Y0[k : k + L])
                np.multiply(y, float(k), out=yj)
            else:
                np.multiply(Y0[k : k + L], k >= start, out=y)
                np.multiply(y, float(k) - start, out=yj)
            sy += y
            sjy += yj
            y *= y
            syy += y
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sy / n
            sxx = np.maximum(syy - sy * mean, 0.0)
            jbar = sj / n
            sjy = sjy - sy * jbar
            sjj = sjj - sj * jbar
            feats = np.empty((L, cols.size, N_FEATURES))
            feats[:, :, 0] = Y0[MAX_WINDOW - 1 :]
            feats[:, :, 1] = mean
            feats[:, :, 2] = np.sqrt(sxx / n)
            feats[:, :, 3] = sjy / sjj * (width - 1)
        ok = V[MAX_WINDOW - 1 :] & (n >= np.maximum(2, width // 2)) & (sjj > 0)
        feats[~ok] = 0.0
        complete = np.ones((L, len(self.groups)), dtype=bool)
        at = 0
        for g, m in enumerate(self.groups):
            complete[:, g] = ok[:, at : at + len(m)].all(axis=1)
            at += len(m)
        return feats, complete

    def _new_centre(self, X: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The centres after a block: a tag without one takes its first valid sample of the block."""
        unset = np.isnan(self.centre)
        if not unset.any():
            return self.centre
        centre = self.centre.copy()
        seen = valid.any(axis=0) & unset
        if seen.any():
            first = valid.argmax(axis=0)
            centre[seen] = X[first[seen], np.flatnonzero(seen)]
        return centre

    # -- scoring ----------------------------------------------------------------------------------
    def _group_scores(self, feats: np.ndarray, complete: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tag scores (L, n_tags), the group statistic (L, G), per member feature (L, members, 4, 2) its z
        against the reservoir and its part in the row's most outlying principal axis, and the forest's
        anomaly score per row and group (L, G; 0 where not scored), which calibration takes in."""
        L = feats.shape[0]
        out = np.zeros((L, self.n_tags))
        stat = np.zeros((L, len(self.groups)))
        anomaly = np.zeros((L, len(self.groups)))
        detail = np.zeros((*feats.shape, 2), dtype=np.float32)
        at = 0
        for g, m in enumerate(self.groups):
            size = len(m)
            part = slice(at, at + size)
            at += size
            forest = self._forests[g]
            rows = np.flatnonzero(complete[:, g])
            if forest is None or rows.size == 0:
                continue
            order = self._fit_columns(g)
            F = feats[rows][:, part][:, order]  # (rows, size, 4) in forest column order
            s, z, contrib = forest.anomaly(F.reshape(rows.size, -1))
            anomaly[rows, g] = s
            if self._limit[g] <= 0:  # still calibrating: scored, not reported
                continue
            S = np.maximum(s - forest.median, 0.0) / (self._limit[g] - forest.median) / self._limit_scale[g]
            inverse = np.argsort(order)  # back to the group's tag order
            z = z.reshape(rows.size, size, N_FEATURES)[:, inverse]
            contrib = contrib.reshape(rows.size, size, N_FEATURES)[:, inverse]
            detail[rows, part, :, 0] = z
            detail[rows, part, :, 1] = contrib
            # Over the 4 features by hand: numpy reduces a short last axis slowly.
            tag_part = contrib[:, :, 0] + contrib[:, :, 1] + contrib[:, :, 2] + contrib[:, :, 3]
            top = tag_part.max(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                share = np.where(top > 0, tag_part / top, 1.0)
            far = np.abs(z) > EXTREME_Z
            share[~np.isfinite(share) | far[:, :, 0] | far[:, :, 1] | far[:, :, 2] | far[:, :, 3]] = 1.0
            stat[rows, g] = S
            out[np.ix_(rows, m)] = S[:, None] * share
        return to_score(out, out=out), stat, detail, anomaly

    def _fit_columns(self, g: int) -> np.ndarray:
        """Positions within the group (config order) of the forest's columns."""
        m = self.groups[g]
        return np.searchsorted(m, self._order[g]) if not np.array_equal(m, self._order[g]) else np.arange(len(m))

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        if not self.groups:
            return np.zeros(self.n_tags)
        X, V = x[None, :], valid[None, :]
        feats, complete = self._features(X, V, self._new_centre(X, V))
        scores, stat, Z, anomaly = self._group_scores(feats, complete)
        self._explained = (stat, Z)
        self._cached = (x, feats, complete, anomaly)
        return scores[0]

    def warm(self) -> np.ndarray:
        if self._tag_warm is None:
            warm = np.zeros(self.n_tags, dtype=bool)
            for g, m in enumerate(self.groups):
                warm[m] = self._limit[g] > 0
            self._tag_warm = warm
        return self._tag_warm

    # -- learning ---------------------------------------------------------------------------------
    def _learning_rows(
        self, complete: np.ndarray, valid: np.ndarray, learn: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(L, G): the complete rows each group learns, and the ticks since a sample of it was withheld.

        Protecting, during the warm-up a row is learned only if no tick of its window had a sample
        withheld (flagged, by another detector under ``any`` protection): a window that overlaps a
        spoofed stretch carries the spoof in its mean, sd and slope. Learning mode takes every
        complete row.
        """
        withheld = np.stack([(valid[:, m] & ~learn[:, m]).any(axis=1) for m in self.groups], axis=1)
        first = np.array([m[0] for m in self.groups])
        tick = np.arange(1, withheld.shape[0] + 1)[:, None]
        last = np.maximum.accumulate(np.where(withheld, tick, 0), axis=0)  # 0: none in this block
        since = np.where(last > 0, tick - last, self.since_withheld[first] + tick)
        since = np.minimum(since, MAX_WINDOW)
        warm = self._limit > 0  # the model learns nothing more: flags need no tracking (the count aside)
        since = np.where(warm, self.since_withheld[first], since)
        clean = ~withheld & (warm | (since >= self._window)) & ~(warm & (self._mode == FROZEN))
        return complete & ((self._mode == LEARNING) | clean), since

    def _half(self) -> np.ndarray:
        """Per group, the learned rows at which the forest is fitted: the first half of the warm-up."""
        return np.maximum(RESERVOIR, self._warmup // 2)

    def _learn(self, feats: np.ndarray, rows: np.ndarray, anomaly: np.ndarray) -> None:
        """Take learned rows in (a fit or the end of calibration falls at most at the last): the
        reservoir in the first half of the warm-up, the calibration sums in the second, counts always."""
        at = 0
        half = self._half()
        for g, m in enumerate(self.groups):
            size = len(m)
            part = slice(at, at + size)
            at += size
            learned = np.flatnonzero(rows[:, g])
            if learned.size == 0:
                continue
            c0 = float(self.count[m[0]])
            if self._forests[g] is None:
                stride = max(1.0, float(half[g] // RESERVOIR))
                counts = c0 + np.arange(learned.size)  # the count before each learned row
                a0 = int(self.admitted[m[0]])
                pick = learned[counts % stride == 0][: max(0, RESERVOIR - a0)]
                if pick.size:
                    slots = a0 + np.arange(pick.size)
                    self.reservoir[np.ix_(m, slots)] = feats[pick][:, part].transpose(1, 0, 2)
                    self.admitted[m] = a0 + pick.size
            elif self._limit[g] <= 0:
                # Calibration: the anomaly scores of rows the forest did not see, scored before learned.
                s = np.round(anomaly[learned, g] / SUM_QUANTUM) * SUM_QUANTUM  # exact sums, any order
                self.calib_n[m] += learned.size
                self.calib_s1[m] += s.sum()
                self.calib_s2[m] += (np.round(s * s / SUM_QUANTUM) * SUM_QUANTUM).sum()
            self.count[m] = c0 + learned.size
            if self._forests[g] is None and self.count[m[0]] >= half[g]:
                self._fit(g)
            elif self._limit[g] <= 0 and self.count[m[0]] >= self._warmup[g]:
                self._calibrate(g)

    def _fit(self, g: int) -> None:
        m = self._order[g]
        k = int(min(self.admitted[m[0]], RESERVOIR))
        if k < 2:
            return
        rows = self.reservoir[m, :k].transpose(1, 0, 2)  # (k, size, 4), forest column order
        self._forests[g] = Forest(
            rows.reshape(k, -1).astype(np.float64), int(self._trees[g]), float(self._confidence[g])
        )
        self._tag_warm = None

    def _calibrate(self, g: int) -> None:
        """The group's limit: the out-of-bag one, or the one the second half of the warm-up calls for if higher."""
        from scipy.stats import norm

        forest = self._forests[g]
        if forest is None:
            return
        first = self.groups[g][0]
        n = float(self.calib_n[first])
        limit = forest.limit
        if n >= 2:
            mean = float(self.calib_s1[first]) / n
            sd = np.sqrt(max(float(self.calib_s2[first]) / n - mean * mean, 0.0))
            limit = max(limit, mean + float(norm.ppf(self._confidence[g])) * sd)
        self._limit[g] = limit
        self._tag_warm = None

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        if not self.groups:
            return
        X, V = x[None, :], valid[None, :]
        centre = self._new_centre(X, V)
        cached = self._cached
        if cached is not None and cached[0] is x:
            feats, complete, anomaly = cached[1], cached[2], cached[3]
        else:
            feats, complete = self._features(X, V, centre)
            anomaly = self._group_scores(feats, complete)[3]
        self._cached = None
        rows, since = self._learning_rows(complete, V, learn[None, :])
        self._step(X, V, centre, feats, rows, anomaly, since)

    def _step(
        self,
        X: np.ndarray,
        valid: np.ndarray,
        centre: np.ndarray,
        feats: np.ndarray,
        rows: np.ndarray,
        anomaly: np.ndarray,
        since: np.ndarray,
    ) -> None:
        """Learn ``rows`` (group rows, at most the last of which brings a fit), then move the history on."""
        self._learn(feats, rows, anomaly)
        for g, m in enumerate(self.groups):
            self.since_withheld[m] = since[-1, g]
        self.centre = centre
        cols = self._flat
        Y = np.where(valid[:, cols], X[:, cols], np.nan)
        keep = MAX_WINDOW - 1
        self.history[cols] = np.concatenate([self.history[cols], Y.T], axis=1)[:, -keep:]

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """Score a block with the forests as they stand, learn up to the first row that brings a fit, repeat."""
        L = X.shape[0]
        out = np.zeros(X.shape)
        if not self.groups:
            return out
        i = 0
        stats, zs = [], []
        while i < L:
            Xs, Vs = X[i:], valid[i:]
            centre = self._new_centre(Xs, Vs)
            feats, complete = self._features(Xs, Vs, centre)
            scores, stat, Z, anomaly = self._group_scores(feats, complete)
            rows, since = self._learning_rows(complete, Vs, Vs & (scores < protect_threshold))
            end = self._rows_to_fit(rows)
            out[i : i + end] = scores[:end]
            stats.append(stat[:end])
            zs.append(Z[:end])
            centre_end = self._new_centre(Xs[:end], Vs[:end])
            self._step(Xs[:end], Vs[:end], centre_end, feats[:end], rows[:end], anomaly[:end], since[:end])
            i += end
        self._explained = (np.concatenate(stats), np.concatenate(zs))
        return out

    def _rows_to_fit(self, rows: np.ndarray) -> int:
        """Rows of a block up to and including the first one at which some group fits its forest or
        ends its calibration (the rows after it score differently)."""
        unfitted = np.array([f is None for f in self._forests])
        event = np.where(unfitted, self._half(), np.where(self._limit > 0, np.inf, self._warmup))
        count = self.count[[m[0] for m in self.groups]]
        hits = count + np.cumsum(rows, axis=0) >= event
        return int(np.flatnonzero(hits.any(axis=1))[0]) + 1 if hits.any() else rows.shape[0]

    # -- explaining -------------------------------------------------------------------------------
    def explain(self, row: int, tags: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[str | None]:
        """``iforest group 'A' (3 tags): 2.3x limit; most unusual: B last +1.4 sd, A slope -4.0 sd``: the
        group statistic, and the two features that weigh most in the axis the row sits furthest out on."""
        out: list[str | None] = [None] * len(tags)
        if self._explained is None:
            return out
        stat, detail = self._explained
        if row < 0:  # counted from the block's end, as Python indexes
            row += stat.shape[0]
        starts = np.cumsum([0] + [len(m) for m in self.groups])
        for i, tag in enumerate(np.asarray(tags, dtype=np.intp)):
            g = int(self._tag_group[tag]) if 0 <= tag < self.n_tags else -1
            if g < 0 or not 0 <= row < stat.shape[0] or stat[row, g] <= 0:
                continue
            m = self.groups[g]
            z = detail[row, starts[g] : starts[g + 1], :, 0]  # (size, 4)
            weight = detail[row, starts[g] : starts[g + 1], :, 1]
            parts = []
            for flat in np.argsort(-weight, axis=None, kind="stable")[:2]:
                t, f = divmod(int(flat), N_FEATURES)
                parts.append(f"{names[m[t]]} {FEATURES[f]} {z[t, f]:+.1f} sd")
            out[i] = (
                f"iforest group '{names[m[0]]}' ({len(m)} tags): {stat[row, g]:.1f}x limit; "
                f"most unusual: {', '.join(parts)}"
            )
        return out

    # -- state ------------------------------------------------------------------------------------
    def state_nbytes(self) -> int:
        return sum(np.asarray(getattr(self, f)).nbytes for f in self.state_fields)

    def load_state(self, state: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        """Restore per-tag arrays and refit the forests from the reservoirs; with ``rows``, a group
        resumes only if it holds the very same tags (it is cold otherwise, as a new group)."""
        saved = {k: np.asarray(v) for k, v in state.items()}
        if rows is None:
            if saved["reservoir"].shape != self.reservoir.shape:
                raise ValueError(f"iforest: snapshot shape {saved['reservoir'].shape} != {self.reservoir.shape}")
            rows = np.arange(self.n_tags)
        rows = np.asarray(rows)
        fresh = IforestDetector(self.params, self.limits)
        for f in self.state_fields:
            setattr(self, f, getattr(fresh, f))
        self._order = [m.copy() for m in self.groups]
        for g, m in enumerate(self.groups):
            old = rows[m]
            if (old < 0).any() or not self._same_group(saved, old):
                continue
            for f in self.state_fields:
                getattr(self, f)[m] = saved[f][old]
            self._order[g] = m[np.argsort(saved["fit_pos"][old], kind="stable")]
        self._forget_caches()

    @staticmethod
    def _same_group(saved: Mapping[str, np.ndarray], old: np.ndarray) -> bool:
        """Whether the old tags were one whole group: same counters, as many as it had, each place once."""
        counters = np.stack([saved[k][old] for k in ("count", "admitted", "group_size", "calib_n", "calib_s1")])
        if not (counters == counters[:, :1]).all() or saved["group_size"][old[0]] != len(old):
            return False
        return bool(np.array_equal(np.sort(saved["fit_pos"][old]), np.arange(len(old))))

    def state(self) -> dict[str, np.ndarray]:
        for g, m in enumerate(self.groups):
            self.fit_pos[self._order[g]] = np.arange(len(m))
        return super().state()

    def _forget_caches(self) -> None:
        self._forests = [None] * len(self.groups)
        self._limit = np.zeros(len(self.groups))
        half = self._half()
        for g, m in enumerate(self.groups):
            count = float(self.count[m[0]])
            if count >= half[g]:
                self._fit(g)
            if count >= self._warmup[g]:
                self._calibrate(g)
        self._tag_warm = None
        self._explained = None
        self._cached = None
        super()._forget_caches()
