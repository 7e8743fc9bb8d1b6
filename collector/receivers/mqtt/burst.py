"""Whole-burst decoding: the plain messages of a hand-off read by one regex pass and a few numpy calls.

The asyncio side of the MQTT source takes messages from paho's thread in
bursts of hundreds or thousands, and it holds the GIL that paho's thread needs
while it decodes them: every microsecond per message here is a microsecond of
paho's rate. Almost every message of a plant has the same shape
(``{"value":1.5,"ts":1.7e9,"quality":"good"}``, the simulator's and most
gateways'), so a burst of those is read at once:

* :class:`Template` joins the burst's payloads with newlines and runs one
  compiled regex over the lot (``findall``), then converts the number columns
  with numpy. It accepts exactly one byte layout per route (keys in the order
  value, ts, quality, no whitespace, JSON number grammar, a known quality or
  ``null``), and it answers ``None`` for the whole burst when a single payload
  differs, so that the receiver reads that burst message by message and every
  odd message keeps its own error reason. Whatever it accepts, it reads to the
  same floats as :func:`~collector.receivers.mqtt.decode.decode` (a property
  test holds it to that).
* :class:`DedupWindow` keeps the last ``window`` source timestamps per tag in
  a ring (``tags x window``) and drops re-deliveries: a sample whose tag and
  source time equal one of the tag's last accepted ones. A burst without any
  such collision (the normal case) is checked and recorded in numpy; one with
  a collision is walked in order, so the answer is always the sequential one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from collector.receivers.mqtt.decode import MAX_EPOCH_S
from collector.receivers.mqtt.options import TopicOptions
from collector.samples import Quality

# A JSON number (RFC 8259), which is what json.loads hands to float(): the same text gives the same float.
# Possessive quantifiers (no backtracking into digits) match the same strings a third faster.
_NUMBER = rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
_QUALITY = {b"": Quality.GOOD, b"good": Quality.GOOD, b"uncertain": Quality.UNCERTAIN, b"bad": Quality.BAD}


class Readings(NamedTuple):
    """A burst's values, source times and qualities, one entry per payload in order."""

    value: np.ndarray  # float64, finite
    ts: np.ndarray  # float64 epoch seconds, in [0, MAX_EPOCH_S)
    quality: np.ndarray  # uint8 Quality


class Template:
    """The byte layout of a route's plain message, compiled once; ``parse`` reads a burst of them or nothing."""

    def __init__(self, value_key: str, ts_key: str, quality_key: str | None, ts_div: float) -> None:
        self.key = (value_key, ts_key, quality_key, ts_div)
        self._ts_div = ts_div
        self._with_quality = quality_key is not None
        self._columns = [itemgetter(k) for k in range(3 if self._with_quality else 2)]
        parts = [rb"\{", _key(value_key), b"(", _NUMBER, b"),", _key(ts_key), b"(", _NUMBER, b")"]
        if quality_key is not None:
            parts += [b",", _key(quality_key), rb'(?:"(good|uncertain|bad)"|null)']
        parts.append(rb"\}")
        self._pattern = re.compile(b"^" + b"".join(parts) + b"$", re.MULTILINE)

    @classmethod
    def for_route(cls, route: TopicOptions) -> Template | None:
        """The template of ``route``'s plain message; None when its messages have no such fixed shape."""
        if route.tag_from != "topic_segment" or route.value_path is None or route.timestamp_path is None:
            return None
        if route.timestamp_format == "iso":
            return None
        paths = (route.value_path, route.timestamp_path, route.quality_path)
        if any(p is not None and "." in p for p in paths):
            return None
        if len({p for p in paths if p is not None}) != sum(p is not None for p in paths):
            return None  # one key for two fields: not a layout this template describes
        ts_div = 1000.0 if route.timestamp_format == "epoch_ms" else 1.0
        return cls(route.value_path, route.timestamp_path, route.quality_path, ts_div)

    def parse(self, payloads: Sequence[bytes]) -> Readings | None:
        """The readings of every payload, or None when any payload is not exactly of this layout and plausible."""
        n = len(payloads)
        if not n:
            return None
        joined = b"\n".join(payloads)
        if joined.count(b"\n") != n - 1:  # a payload with a newline of its own: lines would not be payloads
            return None
        found = self._pattern.findall(joined)
        if len(found) != n:  # each of the n lines matched whole, or the burst is not plain
            return None
        # Columns by itemgetter, not zip(*found): that would build one iterator object per message, and the
        # allocations wake the cyclic GC, which then walks every tuple of the burst.
        columns = [list(map(getter, found)) for getter in self._columns]
        if b"-0" in columns[0]:  # the JSON integer -0 is 0.0 to json.loads, but -0.0 to float()
            return None
        value = np.fromiter(map(float, columns[0]), dtype=np.float64, count=n)
        ts = np.fromiter(map(float, columns[1]), dtype=np.float64, count=n)
        if self._ts_div != 1.0:
            ts /= self._ts_div
        if not (np.isfinite(value).all() and ((ts >= 0.0) & (ts < MAX_EPOCH_S)).all()):
            return None  # 1e400, or a time before 1970 or after 2286: the message-by-message path says why
        if self._with_quality:
            quality = np.fromiter(map(_QUALITY.__getitem__, columns[2]), dtype=np.uint8, count=n)
        else:
            quality = np.full(n, Quality.GOOD, dtype=np.uint8)
        return Readings(value, ts, quality)


def _key(name: str) -> bytes:
    """``"name":`` as a JSON encoder writes it, escaped for the regex."""
    return re.escape(json.dumps(name).encode()) + b":"


class DedupWindow:
    """The last ``window`` accepted source timestamps of each of ``n_tags`` tags (local numbering)."""

    def __init__(self, n_tags: int, window: int) -> None:
        self.window = window
        self._recent = np.full((n_tags, window), np.nan)
        self._head = np.zeros(n_tags, dtype=np.int64)  # samples ever accepted, per tag (ring position)
        self._latest = np.full(n_tags, -np.inf)  # the newest time accepted per tag: no window entry is above it

    def admit(self, tag: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Which samples (in order) are new: a bool mask; the new ones are recorded."""
        n = len(tag)
        if not n:
            return np.ones(0, dtype=bool)
        order = np.argsort(tag, kind="stable")  # per tag, in arrival order
        st, sts = tag[order], ts[order]
        same = st[1:] == st[:-1]
        # The usual burst: each tag's times rise, from above the newest it had: nothing can collide.
        rising = bool((ts > self._latest[tag]).all() and (sts[1:][same] > sts[:-1][same]).all())
        if not rising:
            lex = np.lexsort((ts, tag))
            lt, lts = tag[lex], ts[lex]
            if (self._recent[tag] == ts[:, None]).any() or ((lt[1:] == lt[:-1]) & (lts[1:] == lts[:-1])).any():
                return self._admit_in_order(tag, ts)
        self._record(st, sts, same)
        return np.ones(n, dtype=bool)

    def _record(self, st: np.ndarray, sts: np.ndarray, same: np.ndarray) -> None:
        """Append every (tag, ts), sorted by tag in arrival order, to its tag's ring; each keeps its last ones."""
        n, w = len(st), self.window
        starts = np.flatnonzero(np.concatenate(([True], ~same)))
        counts = np.diff(np.append(starts, n))
        rank = np.arange(n) - np.repeat(starts, counts)
        keep = rank >= np.repeat(counts, counts) - w
        slot = (self._head[st] + rank) % w
        self._recent[st[keep], slot[keep]] = sts[keep]
        first = st[starts]
        self._head[first] += counts
        self._latest[first] = np.maximum(self._latest[first], np.maximum.reduceat(sts, starts))

    def _admit_in_order(self, tag: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The sequential answer, for the rare burst that holds a re-delivery."""
        keep = np.ones(len(tag), dtype=bool)
        recent, head, latest, w = self._recent, self._head, self._latest, self.window
        for i, (t, stamp) in enumerate(zip(tag.tolist(), ts.tolist(), strict=True)):
            if stamp in recent[t].tolist():
                keep[i] = False
                continue
            recent[t, head[t] % w] = stamp
            head[t] += 1
            if stamp > latest[t]:
                latest[t] = stamp
        return keep
