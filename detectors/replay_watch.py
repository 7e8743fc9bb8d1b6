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
  ticks earlier, counted over the windows it did not flag, taken as 1 until
  ``MIN_WINDOWS`` are counted) must make a chance match of a whole window less likely
  than ``2**-min_bits``;
- the window must hold at least ``window / 2`` distinct symbols: a frozen or
  constantly ramping signal is the flatline detector's business, not replay.

A deterministic, noise-free periodic signal is indistinguishable from a
replay: leave this detector off for such tags. A gap (invalid sample) starts
the window afresh.

A block of ticks is scored at once (``run``): symbols, window hashes, the
collision counts and the fingerprints kept are all computed across the block
in numpy, on the assumption that nothing in it matches. That assumption is
checked (conservatively) against every fingerprint the block could see; a
block that may hold a match, or a tag still learning its symbol width, is
played tick by tick from that point instead. Both ways give the same numbers,
so live and replay agree; the batched way is the one a healthy plant takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Detector, DetectorParams, TagLimits, scale_floor, to_score

RETRY_TICKS = 512  # longest stretch scored tick by tick before the block path is tried again
HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so every power is invertible mod 2**64
HASH_BASE_INV = np.uint64(pow(0x9E3779B97F4A7C15, -1, 1 << 64))
SYMBOL_OFFSET = 1 << 20  # symbols are clipped to +-SYMBOL_OFFSET/2 and shifted positive before hashing
BITMAP_BITS = 20  # a 1 MiB bitmap of kept fingerprints screens a block's lookups
MIN_WINDOWS = 16  # windows counted before a tag's collision rate is trusted


def collision_rate(same: np.ndarray, total: np.ndarray) -> np.ndarray:
    """The share of counted windows whose newest symbol equalled their oldest; 1 (no information) until
    ``MIN_WINDOWS`` are counted. Counts are whole numbers, so any block split gives the same rate."""
    return np.where(total >= MIN_WINDOWS, same / np.maximum(total, 1.0), 1.0)


class ReplayWatchParams(DetectorParams):
    """On by default: on the simulator's healthy plants it raises no alert (see the bench report).

    ``window``, ``stride`` and ``history`` size the state and are taken from the
    first tag for all tags.
    """

    enabled: bool = True
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
        "coll_same",
        "coll_total",
        "filled",
        "ring",
        "rolling",
        "mirror",
        "seen",
        "seen_next",
        "since_match",
        "matches",
    )
    tracking_fields: ClassVar[tuple[str, ...]] = ("prev_x", "since_match")
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
        # A window carries min_bits when its collision rate is at most 2**(-min_bits / window).
        self._max_collision = np.exp2(-np.asarray(p["min_bits"], dtype=np.float64) / self.window)
        self._hold = np.asarray(p["hold"], dtype=np.float64)
        self._floor = scale_floor(limits, np.asarray(p["min_std"], dtype=np.float64))
        self._base_pow_w = np.uint64(pow(int(HASH_BASE), self.window, 1 << 64))
        self._base_pow_top = np.uint64(pow(int(HASH_BASE), self.window - 1, 1 << 64))
        self._pow = [np.uint64(pow(int(HASH_BASE), j, 1 << 64)) for j in range(self.window)]
        self.prev_x = np.full(n, np.nan)
        self.n_changes = np.zeros(n)
        self.change_var = np.zeros(n)
        self.quantum = np.zeros(n)  # 0 until warm
        self.coll_same = np.zeros(n)  # windows whose newest symbol equalled their oldest
        self.coll_total = np.zeros(n)  # windows counted
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

    @property
    def collision(self) -> np.ndarray:
        """How often a symbol equals the one a window earlier (1 until enough windows are counted)."""
        return collision_rate(self.coll_same, self.coll_total)

    def _run_block(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray, protect_threshold: float) -> np.ndarray:
        if not self._any:
            return np.zeros(np.shape(X))
        if X.shape[0] < 2:
            return self._run_ticks(X, ts, valid, protect_threshold)
        if X.shape[0] > RETRY_TICKS:
            # In chunks, so a stretch that must go tick by tick (a tag still learning its symbol width at a
            # cold start, a candidate match) costs only its own chunk: the next chunk tries the block path again.
            chunks = [slice(i, i + RETRY_TICKS) for i in range(0, X.shape[0], RETRY_TICKS)]
            return np.concatenate([self._run_block(X[c], ts[c], valid[c], protect_threshold) for c in chunks])
        block = _Block(self, X, valid)
        if block.clean == X.shape[0]:
            block.commit()
            return block.scores
        # A match may lie ahead (or a tag is still learning): batch what is surely clean, then tick by tick.
        out = np.empty(X.shape, dtype=np.float64)
        done = block.clean
        if done > 0:
            head = _Block(self, X[:done], valid[:done])
            head.commit()
            out[:done] = head.scores
        out[done:] = self._run_ticks(X[done:], ts[done:], valid[done:], protect_threshold)
        return out

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
        informative = (
            symbolic & (filled >= self.window) & (distinct * 2 >= self.window) & (self.collision <= self._max_collision)
        )
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
        self.coll_same += learn_coll & (look["sym"] == look["oldest"])
        self.coll_total += learn_coll
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


class _Block:
    """One block of ticks worked out at once, assuming no window in it matches a kept fingerprint.

    ``clean`` is how many leading ticks are surely free of matches (and of tags still learning
    their symbol width): the whole block on a healthy plant. Computing changes nothing;
    ``commit`` stores the state the detector would have after the block, tick by tick.
    """

    def __init__(self, det: ReplayWatchDetector, X: np.ndarray, valid: np.ndarray) -> None:
        self.det = det
        n_ticks, n = X.shape
        w = det.window
        live = valid & det.enabled
        prev = np.empty_like(X)
        prev[0] = det.prev_x
        prev[1:] = np.where(live[:-1], X[:-1], np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            change = np.where(live, X - prev, np.nan)
            has_change = live & np.isfinite(change)
            warm = det.quantum > 0
            q = np.where(warm, det.quantum, 1.0)
            sym = np.where(has_change, np.rint(np.clip(change / q, -SYMBOL_OFFSET / 2, SYMBOL_OFFSET / 2)), 0.0)
        learning = (has_change & ~warm).any(axis=1)  # a tick where some tag still learns its symbol width
        symbolic = has_change & warm
        sym = sym.astype(np.int64)
        sym[~symbolic] = 0
        tick = np.arange(n_ticks)[:, None]
        gap = np.maximum.accumulate(np.where(symbolic, -1, tick), axis=0)
        filled = np.where(symbolic, (tick - gap) + np.where(gap < 0, det.filled, 0.0), 0.0)
        # The symbols before the block (oldest first) then the block's: E[w + t] is tick t's symbol.
        back = np.arange(w - 1, -1, -1)[:, None]
        prior = det.ring[np.arange(n)[None, :], ((det.filled[None, :] - 1 - back) % w).astype(np.intp)]
        E = np.vstack([prior, sym])
        code = (E + SYMBOL_OFFSET).astype(np.uint64)
        neg = (SYMBOL_OFFSET - E).astype(np.uint64)
        rolling = np.zeros((n_ticks, n), dtype=np.uint64)
        mirror = np.zeros((n_ticks, n), dtype=np.uint64)
        term = np.empty((n_ticks, n), dtype=np.uint64)
        for j in range(w):  # the symbol j ticks back weighs B**j forwards, B**(w-1-j) backwards
            rolling += np.multiply(code[w - j : w - j + n_ticks], det._pow[j], out=term)
            mirror += np.multiply(neg[w - j : w - j + n_ticks], det._pow[w - 1 - j], out=term)
        # Windows shorter than ``w`` (just after a gap) hash only their own symbols: redo those few.
        rows, cols = np.nonzero(filled < w)
        length = filled[rows, cols]
        short_rolling = np.zeros(rows.size, dtype=np.uint64)
        short_mirror = np.zeros(rows.size, dtype=np.uint64)
        zero = np.uint64(0)
        for j in range(w - 1):
            inside = length > j
            at = rows + (w - j)
            short_rolling += np.where(inside, code[at, cols] * det._pow[j], zero)
            short_mirror += np.where(inside, neg[at, cols] * det._pow[w - 1 - j], zero)
        rolling[rows, cols] = short_rolling
        mirror[rows, cols] = short_mirror
        ordered = np.sort(np.lib.stride_tricks.sliding_window_view(E, w, axis=0)[1:], axis=-1)
        distinct = 1 + (ordered[..., 1:] != ordered[..., :-1]).sum(axis=-1)
        # Collision counts as they stand before each tick (no match assumed, so every full window counts).
        counted = symbolic & (filled > w)
        same = counted & (sym == E[:n_ticks])
        c_total = counted.astype(np.float64)
        c_same = same.astype(np.float64)
        total_before = det.coll_total + (np.cumsum(c_total, axis=0) - c_total)
        same_before = det.coll_same + (np.cumsum(c_same, axis=0) - c_same)
        collision = collision_rate(same_before, total_before)
        informative = symbolic & (filled >= w) & (distinct * 2 >= w) & (collision <= det._max_collision)
        keep = informative & (filled % det.stride == 0)
        kept_before = np.cumsum(keep, axis=0) - keep
        print_ = rolling | np.uint64(1)
        # Could any informative window match a fingerprint kept before it? Eviction is ignored and tags
        # share one table (fingerprints mixed with their tag), so a "maybe" is only ever too cautious.
        mix = np.arange(n, dtype=np.uint64) * HASH_BASE
        old = det.seen != 0
        entry_key = np.r_[(det.seen ^ mix[:, None])[old], (print_ ^ mix)[keep]]
        entry_rank = np.r_[np.full(int(old.sum()), -1), kept_before[keep]]
        order = np.lexsort((entry_rank, entry_key))
        entry_key, entry_rank = entry_key[order], entry_rank[order]
        maybe = np.zeros((n_ticks, n), dtype=bool)
        if entry_key.size:
            # A bitmap of the fingerprints' top bits lets only the few plausible windows be looked up.
            bitmap = np.zeros(1 << BITMAP_BITS, dtype=bool)
            bitmap[entry_key >> np.uint64(64 - BITMAP_BITS)] = True
            rows, cols = np.nonzero(informative)
            for query in (print_[rows, cols], mirror[rows, cols] | np.uint64(1)):
                key = query ^ mix[cols]
                near = np.flatnonzero(bitmap[key >> np.uint64(64 - BITMAP_BITS)])
                r, c, key = rows[near], cols[near], key[near]
                at = np.minimum(np.searchsorted(entry_key, key), entry_key.size - 1)
                hit = (entry_key[at] == key) & (entry_rank[at] < kept_before[r, c])
                maybe[r[hit], c[hit]] = True
        stop = np.flatnonzero(maybe.any(axis=1) | learning)
        self.clean = int(stop[0]) if stop.size else n_ticks
        # Scores: no match, so only the hold after a match that ended before the block can show.
        since_before = det.since_match + (np.cumsum(live, axis=0) - live)
        matches = np.where(since_before > det._hold, 0.0, det.matches)
        held = live & (since_before + 1 <= det._hold) & (matches > 0)
        self.scores = to_score(held.astype(np.float64))
        self._state = (X, live, sym, symbolic, filled, rolling, mirror, c_same, c_total, keep, kept_before, print_)

    def commit(self) -> None:
        """Store the state after the block (valid only when the whole block is clean)."""
        det = self.det
        X, live, sym, symbolic, filled, rolling, mirror, c_same, c_total, keep, kept_before, print_ = self._state
        n_ticks = X.shape[0]
        w = det.window
        det.prev_x = np.where(det.enabled, np.where(live[-1], X[-1], np.nan), det.prev_x)
        det.coll_same = det.coll_same + c_same.sum(axis=0)
        det.coll_total = det.coll_total + c_total.sum(axis=0)
        # Each ring slot holds the last symbol written to it, as tick by tick.
        slot = np.where(symbolic, (filled - 1) % w, -1.0)
        tick = np.arange(n_ticks)[:, None]
        for s in range(w):
            last = np.where(slot == s, tick, -1).max(axis=0)
            tags = np.flatnonzero(last >= 0)
            det.ring[tags, s] = sym[last[tags], tags]
        det.rolling = rolling[-1].copy()
        det.mirror = mirror[-1].copy()
        det.filled = filled[-1].copy()
        # Fingerprints kept, oldest first; only the last ``history`` of a tag can survive the block.
        n_kept = keep.sum(axis=0)
        survive = keep & (kept_before >= n_kept - det.history)
        rows, cols = np.nonzero(survive)
        det.seen[cols, ((det.seen_next[cols] + kept_before[rows, cols]) % det.history).astype(np.intp)] = print_[
            rows, cols
        ]
        det.seen_next = det.seen_next + n_kept
        det.since_match = det.since_match + live.sum(axis=0)
        det.matches = np.where(det.since_match > det._hold, 0.0, det.matches)
        det._tick = None
