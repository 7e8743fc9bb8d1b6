"""Quality: a tag whose samples keep arriving with a status that is not good.

``stale`` fires when a tag has had no good value for ``after_s``. A link that
fails every other poll, a transmitter flapping between good and bad, or a
server passing on Uncertain values keeps ``stale`` quiet while half of what the
operators see is unusable, and every other detector only skips those samples.
This detector makes the status codes a signal of their own: per tag, the share
of arrived samples that were not good, weighted exponentially over ``window``
samples. The score is 0.5 when that share reaches ``max_bad_share``. A tag that
turns wholly bad reaches the default 0.3 after about 21 samples. Nothing is
learned: the limit is the engineer's.

A sample *arrived but not good* is one with a value (not NaN) that is not valid.
A NaN is no sample at all, which is ``stale``'s business. The bank hands this
detector its view of the frame (``DetectorBank.run``'s ``status``): a sample whose
status arrived without a usable value, such as a Modbus exception response, is
given a placeholder value, so it counts as arrived and bad.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Detector, DetectorParams, TagLimits, to_score


class QualityParams(DetectorParams):
    window: Annotated[
        float, Field(ge=1, le=100_000, description="Samples over which the share of bad ones is weighted.")
    ] = 60.0
    max_bad_share: Annotated[
        float, Field(gt=0, le=1, description="Share of samples arriving not good that scores 0.5.")
    ] = 0.3


class QualityDetector(Detector):
    name: ClassVar[str] = "quality"
    Params: ClassVar[type[DetectorParams]] = QualityParams
    state_fields: ClassVar[tuple[str, ...]] = ("bad_share",)
    tracking_fields: ClassVar[tuple[str, ...]] = ("bad_share",)
    fault: ClassVar[str] = "bad_status"
    applies_to_discrete: ClassVar[bool] = True
    reads_status: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        self._alpha = 1.0 / np.asarray(self.params["window"], dtype=np.float64)
        self._inv_limit = np.where(self.enabled, 1.0 / np.asarray(self.params["max_bad_share"], dtype=np.float64), 0.0)
        self.bad_share = np.zeros(self.n_tags)

    def _shares(self, X: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The share after each row of the block, carrying on from ``bad_share``.

        Every tag must have a sample in every row of the block or in none (a single tick always
        qualifies; ``_run_block`` splits other blocks into ticks). ``lfilter`` runs
        ``share = a bad + (1 - a) share`` row after row, so a block gives the same bits as its ticks
        one by one; a tag with no sample keeps its share.
        """
        from scipy.signal import lfilter  # here, not at import: scipy.signal costs a second at every CLI start

        arrived = ~np.isnan(X[0])
        out = np.broadcast_to(self.bad_share, X.shape).copy()
        for a in np.unique(self._alpha):
            cols = np.flatnonzero((self._alpha == a) & arrived)
            if cols.size:
                bad = (~valid[:, cols]).astype(np.float64)
                zi = ((1.0 - a) * self.bad_share[cols])[None]
                out[:, cols] = lfilter([a], [1.0, a - 1.0], bad, axis=0, zi=zi)[0]
        return out

    def _scores(self, shares: np.ndarray) -> np.ndarray:
        stat = shares * self._inv_limit
        return to_score(stat, out=stat)

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        """A whole block at once: the share is the only state, and it follows every sample, flagged or not."""
        if X.shape[0] == 0:
            return np.zeros(X.shape)
        arrived = ~np.isnan(X)
        if (arrived == arrived[0]).all():  # each tag sampled in every row or in none: one filter pass
            shares = self._shares(X, valid)
        else:  # samples coming and going (report by exception): tick by tick, each across all tags
            shares = np.empty(X.shape)
            for i in range(X.shape[0]):
                shares[i] = self.bad_share = self._shares(X[i : i + 1], valid[i : i + 1])[0]
        self.bad_share = shares[-1].copy()
        return self._scores(shares)

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        return self._scores(self._shares(x[None, :], valid[None, :])[0])

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        self.bad_share = self._shares(x[None, :], valid[None, :])[0]

    def explain(self, row: int, tags: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[str | None]:
        """The share of samples arriving not good, against its limit."""
        limit = 1.0 / np.where(self._inv_limit > 0, self._inv_limit, np.inf)
        share = np.log2(1.0 / np.maximum(1.0 - scores[tags], 2.0**-52)) * limit[tags]
        return [
            f"{100 * s:.0f} % of recent samples arrived not good (limit {100 * lim:.0f} %)"
            for s, lim in zip(share, limit[tags], strict=True)
        ]
