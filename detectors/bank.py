"""The bank: every detector over every tag, one tick at a time, with protected learning.

Per tick, all detectors score first, then all update. A sample flagged
(score >= ``protect_threshold``) is withheld from the baseline of the detector
that flagged it (``protection="own"``), or from every detector's baseline
(``protection="any"``). Either way an attacker cannot teach a detector the
attack it is flagging. "any" is stricter, but one false alarm then freezes
every baseline of the tag until it clears, so "own" is the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from detectors.base import Detector


class DetectorBank:
    def __init__(self, detectors: Sequence[Detector], protect_threshold: float = 0.5, protection: str = "own") -> None:
        if protection not in ("own", "any"):
            raise ValueError("protection must be 'own' or 'any'")
        if not detectors:
            raise ValueError("a detector bank needs at least one detector")
        sizes = {d.n_tags for d in detectors}
        if len(sizes) != 1:
            raise ValueError(f"detectors disagree on the number of tags: {sorted(sizes)}")
        self.detectors = tuple(detectors)
        self.names = tuple(d.name for d in detectors)
        self.n_tags = sizes.pop()
        self.protect_threshold = float(protect_threshold)
        self.protection = protection
        self._rows, self._by_ticks = 0, False  # the last block run took: its ticks, and which path

    def run(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, status: np.ndarray | None = None) -> np.ndarray:
        """Scores of a block of ticks, shape (ticks, detectors, tags), float32.

        ``valid`` marks the samples that carry a good value; everything else is
        treated as missing (the stale detector scores those). ``status``, the
        samples' ``Quality`` codes (0: none arrived), lets a detector that reads
        status codes (``reads_status``) count a bad sample that came without a
        value, such as a Modbus exception response, as arrived.
        """
        inputs = [X] * len(self.detectors)  # what each detector reads as values
        if status is not None and any(d.reads_status for d in self.detectors):
            heard = np.where(np.isnan(X) & (status != 0), 0.0, X)
            inputs = [heard if d.reads_status else X for d in self.detectors]
        n = X.shape[0]
        scores = np.empty((n, len(self.detectors), self.n_tags), dtype=np.float32)
        self._rows, self._by_ticks = n, not (self.protection == "own" and n > 1)
        if not self._by_ticks:
            # Each detector learns from its own scores only, so it can take the block whole:
            # the same numbers as tick by tick, and a multivariate model scores the block at once.
            for j, det in enumerate(self.detectors):
                scores[:, j] = det.run(inputs[j], ts, valid, self.protect_threshold)
            return scores
        worst = np.empty(self.n_tags, dtype=np.float32)
        for i in range(n):
            t, v = float(ts[i]), valid[i]
            row = scores[i]
            if self.protection == "any":
                for j, det in enumerate(self.detectors):
                    row[j] = det.score(inputs[j][i], t, v)
                np.max(row, axis=0, out=worst)
                learn = v & (worst < self.protect_threshold)
                for j, det in enumerate(self.detectors):
                    det.update(inputs[j][i], t, v, learn)
            else:
                # The float64 score decides, as in the detector's own block path: a score a hair under the
                # threshold must be learned live exactly as it is in a replay, not rounded to float32 first.
                for j, det in enumerate(self.detectors):
                    x = inputs[j][i]
                    s = det.score(x, t, v)
                    row[j] = s
                    det.update(x, t, v, v & (s < self.protect_threshold))
        return scores

    def explain(
        self, detector_index: int, row: int, tags: np.ndarray, scores_row: np.ndarray, names: Sequence[str]
    ) -> list[str | None]:
        """Why detector ``detector_index`` scored ``tags`` as it did at ``row`` of the last block ``run`` took.

        For alerts that fire or escalate, off the hot path. When a block of several ticks went tick by tick
        (protection "any"), each detector saw its ticks one at a time, so the row is handed on counted from
        the end (-1: the last tick); a detector that kept only its last tick explains that one, and an
        earlier row it cannot index gets no reason rather than a wrong one.
        """
        det = self.detectors[detector_index]
        if self._by_ticks and self._rows > 1:
            row = row - self._rows
        try:
            return det.explain(row, tags, scores_row, names)
        except IndexError:
            return [None] * len(tags)

    def state(self) -> dict[str, np.ndarray]:
        return {f"{d.name}.{k}": a for d in self.detectors for k, a in d.state().items()}

    def load_state(self, state: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        for d in self.detectors:
            prefix = f"{d.name}."
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if set(part) >= set(d.state_fields):
                d.load_state(part, rows)

    def warm_tags(self) -> dict[str, int]:
        """How many tags each detector is scoring (past warm-up, enabled)."""
        return {d.name: int(np.count_nonzero(d.warm())) for d in self.detectors}

    def enabled_tags(self) -> dict[str, int]:
        """How many tags each detector is switched on for (0: off everywhere, as PCA is by default)."""
        return {d.name: int(np.count_nonzero(d.enabled)) for d in self.detectors}

    def state_nbytes(self) -> int:
        return sum(d.state_nbytes() for d in self.detectors)
