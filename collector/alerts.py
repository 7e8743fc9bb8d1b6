"""Alert state machines, one per (detector, tag), stepped for all of them at once.

    ok --score >= first threshold--> pending --held for pending_s--> firing
    pending --score < clear level--> ok (never journaled: a blip is not an alert)
    firing --score above a higher threshold--> escalated (severity only rises)
    firing --score below clear level for clear_s--> resolved -> ok

The clear level is the first threshold minus ``hysteresis``, so a score that
hovers at the threshold does not flap. Times are tick times, never the wall
clock, so a replay gives the same alerts as the live run did.

Only cells that are above threshold or not ok are touched per tick, so a quiet
plant of 10^5 tags costs one comparison per cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

OK, PENDING, FIRING = 0, 1, 2
STATE_NAMES = ("ok", "pending", "firing")


@dataclass(frozen=True, slots=True)
class Transition:
    """One line of the alert journal."""

    event: str  # firing | escalated | resolved
    ts: float  # tick time at which it happened
    tag: str
    detector: str
    severity: str
    score: float  # score at this tick
    peak: float  # highest score since the alert went pending
    since: float  # when the score first crossed the threshold
    reason: str | None = None  # why, in one line, from the detector (firing and escalated only)

    def as_record(self) -> dict[str, object]:
        """The journal line; ``reason`` only when there is one, so older lines read and compare the same."""
        record: dict[str, object] = {
            "event": self.event,
            "ts": self.ts,
            "tag": self.tag,
            "detector": self.detector,
            "severity": self.severity,
            "score": round(self.score, 6),
            "peak": round(self.peak, 6),
            "since": self.since,
        }
        if self.reason is not None:
            record["reason"] = self.reason
        return record


class AlertBook:
    state_fields = ("state", "severity", "since", "below_since", "peak")

    def __init__(
        self,
        detectors: Sequence[str],
        tags: Sequence[str],
        severities: Sequence[tuple[str, float]],
        hysteresis: float,
        pending_s: float,
        clear_s: float,
    ) -> None:
        self.detectors = list(detectors)
        self.tags = list(tags)
        self.severity_names = [name for name, _ in severities]
        self.thresholds = np.array([t for _, t in severities], dtype=np.float32)
        self.clear_level = np.float32(max(0.0, float(self.thresholds[0]) - hysteresis))
        self.pending_s = pending_s
        self.clear_s = clear_s
        shape = (len(self.detectors), len(self.tags))
        self.state = np.zeros(shape, dtype=np.int8)
        self.severity = np.full(shape, -1, dtype=np.int8)
        self.since = np.full(shape, np.nan)
        self.below_since = np.full(shape, np.nan)
        self.peak = np.zeros(shape, dtype=np.float32)
        self.transitions = {"firing": 0, "escalated": 0, "resolved": 0}
        # Every (event, severity) series exists from the first scrape, at 0: Prometheus' increase() and
        # changes() cannot see the transitions a series already counts when it first appears.
        self.transitions_by_severity: dict[tuple[str, str], int] = {
            (event, sev): 0 for event in self.transitions for sev in self.severity_names
        }

    def update(self, ts: np.ndarray, scores: np.ndarray) -> tuple[list[Transition], np.ndarray]:
        """Step every state machine through a block of ticks; scores are (ticks, detectors, tags).

        Returns the transitions and, per tick, how many alerts were firing after it.
        """
        out: list[Transition] = []
        threshold = self.thresholds[0]
        state = self.state.reshape(-1)
        active = np.flatnonzero(state)
        firing = np.empty(scores.shape[0], dtype=np.int64)
        n_firing = int(np.count_nonzero(state == FIRING))
        # Rows where some cell reaches the threshold; while no alert is active, the rows between
        # them change nothing, and a replay block of quiet ticks is skipped in one step.
        hot_rows = np.flatnonzero((scores >= threshold).reshape(scores.shape[0], -1).any(axis=1))
        i, n = 0, scores.shape[0]
        while i < n:
            if not active.size:
                k = int(np.searchsorted(hot_rows, i))
                nxt = int(hot_rows[k]) if k < hot_rows.size else n
                firing[i:nxt] = n_firing
                if nxt == n:
                    break
                i = nxt
            flat = scores[i].reshape(-1)
            hot = np.flatnonzero(flat >= threshold)
            if hot.size or active.size:
                cells = np.union1d(hot, active) if active.size else hot
                n_firing += self._step(float(ts[i]), cells, flat[cells], out)
                active = np.flatnonzero(state)
            firing[i] = n_firing
            i += 1
        return out, firing

    def _step(self, t: float, cells: np.ndarray, s: np.ndarray, out: list[Transition]) -> int:
        """Advance the given cells by one tick; returns the change in the number firing."""
        state = self.state.reshape(-1)
        severity = self.severity.reshape(-1)
        since = self.since.reshape(-1)
        below = self.below_since.reshape(-1)
        peak = self.peak.reshape(-1)
        st = state[cells]
        level = (np.searchsorted(self.thresholds, s, side="right") - 1).astype(np.int8)
        clear = s < self.clear_level

        # ok -> pending
        start = (st == OK) & (level >= 0)
        since[cells[start]] = t
        peak[cells[start]] = 0.0
        st[start] = PENDING
        peak[cells] = np.where(st != OK, np.maximum(peak[cells], s), peak[cells])

        # pending -> ok (a blip), pending -> firing (held long enough)
        pending = st == PENDING
        st[pending & clear] = OK
        fire = pending & ~clear & ((t - since[cells]) >= self.pending_s)
        st[fire] = FIRING
        severity[cells[fire]] = np.maximum(level[fire], 0)
        below[cells[fire]] = np.nan

        # firing: escalate, start or stop the clear timer, resolve
        firing = (st == FIRING) & ~fire
        escalate = firing & (level > severity[cells])
        severity[cells[escalate]] = level[escalate]
        now_clear = firing & clear
        below[cells[firing & ~clear]] = np.nan
        starting = now_clear & np.isnan(below[cells])
        below[cells[starting]] = t
        resolve = now_clear & ((t - below[cells]) >= self.clear_s)
        st[resolve] = OK

        for event, mask in (("firing", fire), ("escalated", escalate), ("resolved", resolve)):
            for k in np.flatnonzero(mask):
                out.append(self._transition(event, t, int(cells[k]), float(s[k])))
        severity[cells[resolve]] = -1
        since[cells[resolve]] = np.nan
        below[cells[resolve]] = np.nan
        back_to_ok = st == OK
        since[cells[back_to_ok & pending]] = np.nan
        state[cells] = st
        return int(np.count_nonzero(fire)) - int(np.count_nonzero(resolve))

    def _transition(self, event: str, t: float, cell: int, score: float) -> Transition:
        d, j = divmod(cell, len(self.tags))
        sev = self.severity_names[int(self.severity.reshape(-1)[cell])]
        self.transitions[event] += 1
        key = (event, sev)
        self.transitions_by_severity[key] = self.transitions_by_severity.get(key, 0) + 1
        return Transition(
            event=event,
            ts=t,
            tag=self.tags[j],
            detector=self.detectors[d],
            severity=sev,
            score=score,
            peak=float(self.peak.reshape(-1)[cell]),
            since=float(self.since.reshape(-1)[cell]),
        )

    # -- views for the exporter -----------------------------------------------------------------
    def firing_by_severity(self) -> dict[str, int]:
        firing = self.state == FIRING
        counts = np.bincount(self.severity[firing].astype(np.int64), minlength=len(self.severity_names))
        return dict(zip(self.severity_names, counts.tolist(), strict=True))

    # -- persistence ---------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"alerts.{f}": np.array(getattr(self, f), copy=True) for f in self.state_fields}

    def load_state(self, arrays: Mapping[str, np.ndarray], det_rows: np.ndarray, tag_rows: np.ndarray) -> None:
        """Restore saved machines, matching detectors and tags by name (-1 = unknown, starts ok)."""
        d_ok = det_rows >= 0
        t_ok = tag_rows >= 0
        for f in self.state_fields:
            saved = np.asarray(arrays[f"alerts.{f}"])
            current = getattr(self, f)
            block = saved[np.ix_(det_rows[d_ok], tag_rows[t_ok])]
            current[np.ix_(np.flatnonzero(d_ok), np.flatnonzero(t_ok))] = block

    def apply_journal(self, records: Iterable[Mapping[str, object]]) -> int:
        """Bring the machines up to the journal's last word after a restore from an older snapshot.

        Without this, an alert that fired after the last snapshot would fire a
        second time after a crash. Returns how many records were applied.
        """
        det = {name: i for i, name in enumerate(self.detectors)}
        tag = {name: j for j, name in enumerate(self.tags)}
        sev = {name: k for k, name in enumerate(self.severity_names)}
        applied = 0
        for rec in records:
            d, j = det.get(str(rec.get("detector"))), tag.get(str(rec.get("tag")))
            if d is None or j is None:
                continue
            event = rec.get("event")
            if event in ("firing", "escalated"):
                self.state[d, j] = FIRING
                self.severity[d, j] = sev.get(str(rec.get("severity")), 0)
                self.since[d, j] = float(rec.get("since", math.nan))  # type: ignore[arg-type]
                self.peak[d, j] = float(rec.get("peak", 0.0))  # type: ignore[arg-type]
                self.below_since[d, j] = math.nan
            elif event == "resolved":
                self.state[d, j] = OK
                self.severity[d, j] = -1
                self.since[d, j] = math.nan
                self.below_since[d, j] = math.nan
            applied += 1
        return applied
