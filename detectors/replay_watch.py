"""Replay watch: a live, noisy signal that sends again a stretch it already sent.

An attacker who replays a recording (Stuxnet's trick) shows the operator
readings that are perfectly normal one by one and together. What betrays him
is that the noise repeats: a real process never produces the same sequence of
small fluctuations twice, forwards or backwards (a recording played in
reverse is caught too).

Per tag, each change between consecutive ticks is quantized to a symbol
(``resolution`` times the learned standard deviation of the changes, fixed
after ``warmup`` changes, so a recording maps to the same symbols whenever it
is played). The last ``window`` symbols are hashed (a rolling polynomial hash,
modulo 2^64); every ``stride``-th window's fingerprint is kept in a ring of
``history`` per tag, which bounds both the memory (8 bytes per fingerprint)
and how far back a replay is recognised (``stride * history`` ticks). A
window whose fingerprint is in the ring is a replay: the score reaches 0.5 at
the first match and grows while matches continue, and stays up for ``hold``
ticks after the last one.

Only windows that carry information are fingerprinted or matched, so that a
constant or coarsely quantized signal never looks replayed:

- the tag's own collision rate (how often a symbol equals the one ``window``
  ticks earlier, learned) must make a chance match of a whole window less
  likely than ``2**-min_bits``;
- the window must hold at least ``window / 2`` distinct symbols: a frozen or
  constantly ramping signal is the flatline detector's business, not replay.

A deterministic, noise-free periodic signal is indistinguishable from a
replay: leave this detector off for such tags. A gap (invalid sample) starts
the window afresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Detector, DetectorParams, TagLimits, scale_floor, to_score

HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so every power is invertible mod 2**64
HASH_BASE_INV = np.uint64(pow(0x9E3779B97F4A7C15, -1, 1 << 64))
SYMBOL_OFFSET = 1 << 20  # symbols are clipped to +-SYMBOL_OFFSET/2 and shifted positive before hashing
SETTLE_ALPHA = 0.01  # weight of each sample in the learned change spread and collision rate, once settled


class ReplayWatchParams(DetectorParams):
    """Off by default this release: not yet measured against the simulator's scenarios.

    ``window``, ``stride`` and ``history`` size the state and are taken from the
    first tag for all tags.
    """

    enabled: bool = False
    window: Annotated[int, Field(ge=4, le=64, description="Changes per fingerprint.")] = 10
    stride: Annotated[int, Field(ge=1, description="A fingerprint is kept every this many ticks.")] = 8
    history: Annotated[int, Field(ge=1, le=4096, description="Fingerprints kept per tag.")] = 96
    resolution: Annotated[float, Field(gt=0, description="Symbol width, in learned change std.")] = 0.125
    warmup: Annotated[int, Field(ge=2, description="Changes learned before the symbol width is fixed.")] = 120
    min_bits: Annotated[float, Field(gt=0, description="Information a window must carry to count.")] = 40.0
    hold: Annotated[int, Field(ge=0, description="Ticks the score stays up after the last match.")] = 20
    min_std: Annotated[float, Field(ge=0, description="Floor of the learned change std.")] = 0.0


class ReplayWatchDetector(Detector):
    name: ClassVar[str] = "replay"
    Params: ClassVar[type[DetectorParams]] = ReplayWatchParams
    state_fields: ClassVar[tuple[str, ...]] = (
        "prev_x",
        "n_changes",
        "change_var",
        "quantum",
        "collision",
        "n_windows",
        "filled",
        "ring",
        "rolling",
        "mirror",
        "seen",
        "seen_next",
        "since_match",
        "matches",
    )
    fault: ClassVar[str] = "replay"
    # The suite's gappy stream (a sample lost every 17 ticks) leaves few gap-free windows, and its
    # replay is only 150 ticks back: fingerprints every 2 ticks there, every 8 (13 minutes of
    # history at 1 Hz in 768 bytes per tag) by default.
    suite_settings: ClassVar[dict[str, float]] = {"stride": 2}

    def __init__(self, params: Mapping[str, np.ndarray], limits: TagLimits) -> None:
        super().__init__(params, limits)
        n = self.n_tags
        p = self.params
        first = 0
        self.window = int(np.asarray(p["window"])[first]) if n else 10
        self.stride = int(np.asarray(p["stride"])[first]) if n else 2
        self.history = int(np.asarray(p["history"])[first]) if n else 96
        self._resolution = np.asarray(p["resolution"], dtype=np.float64)
        self._warmup = np.asarray(p["warmup"], dtype=np.float64)
        self._min_bits = np.asarray(p["min_bits"], dtype=np.float64)
        self._hold = np.asarray(p["hold"], dtype=np.float64)
        self._floor = scale_floor(limits, np.asarray(p["min_std"], dtype=np.float64))
        self._base_pow_w = np.uint64(pow(int(HASH_BASE), self.window, 1 << 64))
        self._base_pow_top = np.uint64(pow(int(HASH_BASE), self.window - 1, 1 << 64))
        self.prev_x = np.full(n, np.nan)
        self.n_changes = np.zeros(n)
        self.change_var = np.zeros(n)
        self.quantum = np.zeros(n)  # 0 until warm
        self.collision = np.ones(n)
        self.n_windows = np.zeros(n)
        self.filled = np.zeros(n)  # symbols since the last gap
        self.ring = np.zeros((n, self.window), dtype=np.int64)
        self.rolling = np.zeros(n, dtype=np.uint64)
        self.mirror = np.zeros(n, dtype=np.uint64)  # the window reversed in time (changes negated)
        self.seen = np.zeros((n, self.history), dtype=np.uint64)
        self.seen_next = np.zeros(n)
        self.since_match = np.full(n, np.inf)
        self.matches = np.zeros(n)
        self._tick: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None = None
        self._any = bool(self.enabled.any())  # off everywhere (the default): nothing to do at all

    def warm(self) -> np.ndarray:
        return self.enabled & (self.quantum > 0)

    def run(
        self,
        X: np.ndarray,
        ts: np.ndarray,
        valid: np.ndarray | None = None,
        protect_threshold: float = 0.5,
    ) -> np.ndarray:
        if not self._any:
            return np.zeros(np.shape(X))
        return super().run(X, ts, valid, protect_threshold)

    def _forget_caches(self) -> None:
        self._tick = None
        super()._forget_caches()

    def _look(self, x: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """Everything this tick implies, from state as it stands (shared by ``score`` and ``update``)."""
        cached = self._tick
        if cached is not None and cached[0] is x and cached[1] is valid:
            return cached[2]
        live = valid & self.enabled
        with np.errstate(invalid="ignore", over="ignore"):
            change = np.where(live, x - self.prev_x, np.nan)
            has_change = live & np.isfinite(change)
            warm = self.quantum > 0
            symbolic = has_change & warm
            q = np.where(warm, self.quantum, 1.0)
            sym = np.where(symbolic, np.rint(np.clip(change / q, -SYMBOL_OFFSET / 2, SYMBOL_OFFSET / 2)), 0.0)
        sym = sym.astype(np.int64)
        slot = (self.filled % self.window).astype(np.intp)
        rows = np.arange(self.n_tags)
        oldest = self.ring[rows, slot]
        full_before = self.filled >= self.window
        code = (sym + SYMBOL_OFFSET).astype(np.uint64)
        rolling = self.rolling * HASH_BASE + code
        rolling -= np.where(full_before, (oldest + SYMBOL_OFFSET).astype(np.uint64), np.uint64(0)) * self._base_pow_w
        rolling = np.where(symbolic, rolling, np.uint64(0))
        # The same window played backwards: newest change first, each negated. A recording played
        # in reverse (to join its ends smoothly) gives the forward fingerprint of what it replays.
        mirror_out = np.where(full_before, (SYMBOL_OFFSET - oldest).astype(np.uint64), np.uint64(0))
        mirror = (self.mirror - mirror_out) * HASH_BASE_INV + (SYMBOL_OFFSET - sym).astype(
            np.uint64
        ) * self._base_pow_top
        mirror = np.where(symbolic, mirror, np.uint64(0))
        filled = np.where(symbolic, self.filled + 1, 0.0)
        window = self.ring.copy()
        window[rows, slot] = sym
        ordered = np.sort(window, axis=1)
        distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(axis=1)
        with np.errstate(divide="ignore"):
            bits = -self.window * np.log2(np.maximum(self.collision, 1e-300))
        informative = symbolic & (filled >= self.window) & (distinct * 2 >= self.window) & (bits >= self._min_bits)
        print_ = rolling | np.uint64(1)
        backwards = mirror | np.uint64(1)
        match = informative & ((self.seen == print_[:, None]) | (self.seen == backwards[:, None])).any(axis=1)
        look = {
            "change": change,
            "has_change": has_change,
            "symbolic": symbolic,
            "sym": sym,
            "slot": slot,
            "oldest": oldest,
            "full_before": full_before,
            "rolling": rolling,
            "mirror": mirror,
            "filled": filled,
            "informative": informative,
            "print": print_,
            "match": match,
        }
        self._tick = (x, valid, look)
        return look

    def score(self, x: np.ndarray, ts: float, valid: np.ndarray) -> np.ndarray:
        if not self._any:
            return np.zeros(self.n_tags)
        look = self._look(x, valid)
        match = look["match"]
        held = valid & self.enabled & (self.since_match + 1 <= self._hold) & (self.matches > 0)
        stat = np.where(match, 1.0 + 0.1 * self.matches, np.where(held, 1.0, 0.0))
        return to_score(stat, out=stat)

    def update(self, x: np.ndarray, ts: float, valid: np.ndarray, learn: np.ndarray) -> None:
        """Learns from every valid sample but those it flags itself: its baseline is the noise, not the level."""
        if not self._any:
            return
        look = self._look(x, valid)
        self._tick = None
        live = valid & self.enabled
        match = look["match"]
        has_change = look["has_change"]
        # The spread of changes, until the symbol width is fixed.
        cold = has_change & (self.quantum == 0)
        if cold.any():
            with np.errstate(invalid="ignore"):
                a = 1.0 / (self.n_changes + 1.0)
                change = np.where(cold, look["change"], 0.0)
                self.change_var = np.where(cold, (1 - a) * self.change_var + a * change * change, self.change_var)
            self.n_changes += cold
            done = cold & (self.n_changes >= self._warmup)
            if done.any():
                q = np.maximum(self._resolution * np.sqrt(self.change_var), self._resolution * self._floor)
                self.quantum = np.where(done, q, self.quantum)
        # The collision rate of symbols one window apart: how much a window says.
        symbolic = look["symbolic"]
        learn_coll = symbolic & look["full_before"] & ~match
        if learn_coll.any():
            a = np.maximum(SETTLE_ALPHA, 1.0 / (self.n_windows + 1.0))
            same = (look["sym"] == look["oldest"]).astype(np.float64)
            self.collision = np.where(learn_coll, (1 - a) * self.collision + a * same, self.collision)
            self.n_windows += learn_coll
        # The window itself.
        rows = np.flatnonzero(symbolic)
        self.ring[rows, look["slot"][rows]] = look["sym"][rows]
        self.rolling = look["rolling"]
        self.mirror = look["mirror"]
        self.filled = look["filled"]
        self.prev_x = np.where(live, x, np.where(valid | ~self.enabled, self.prev_x, np.nan))
        # Keep every stride-th informative window's fingerprint (never one that matched).
        keep = look["informative"] & ~match & (self.filled % self.stride == 0)
        if keep.any():
            rows = np.flatnonzero(keep)
            slot = (self.seen_next[rows] % self.history).astype(np.intp)
            self.seen[rows, slot] = look["print"][rows]
            self.seen_next[rows] += 1
        self.since_match = np.where(match, 0.0, np.where(live, self.since_match + 1, self.since_match))
        self.matches = np.where(match, self.matches + 1, np.where(self.since_match > self._hold, 0.0, self.matches))
