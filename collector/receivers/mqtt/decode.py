"""Payload decoding: one MQTT message -> (tag key, value, source timestamp, quality), or a PayloadError.

Pure and synchronous, so that it can be tested on its own (hypothesis feeds it
random bytes and random JSON): whatever the payload, the only exception that
leaves :func:`decode` is :class:`PayloadError`, whose ``reason`` names the
kind of problem (the key of ``status.errors``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from collector.receivers.mqtt.options import TopicOptions
from collector.samples import Quality

# Plausible source timestamps: after 1970 and before 2286 (epoch seconds < 1e10).
MAX_EPOCH_S = 1e10

REASONS = (
    "too_large",
    "not_text",
    "not_json",
    "not_object",
    "missing_tag",
    "bad_tag",
    "no_segment",
    "unknown_tag",
    "missing_value",
    "bad_value",
    "non_finite",
    "missing_timestamp",
    "bad_timestamp",
    "bad_quality",
)

_QUALITY = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD}
_MISSING = object()


class PayloadError(ValueError):
    """A message that cannot become a sample; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Decoded(NamedTuple):
    key: str  # the tag's name as the topic or payload gives it (a tag's source_key)
    value: float  # NaN with quality BAD when the payload says null
    ts: float | None  # source time, epoch seconds; None: the payload gives none
    quality: Quality


def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _number(raw: Any, reason: str) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if not isinstance(raw, int | float):
        raise PayloadError(reason, f"{type(raw).__name__} is not a number")
    try:
        return float(raw)
    except OverflowError:  # an integer beyond the float range
        return math.inf if raw > 0 else -math.inf


def _timestamp(raw: Any, fmt: str) -> float:
    if fmt == "iso":
        if not isinstance(raw, str):
            raise PayloadError("bad_timestamp", "an iso timestamp must be a string")
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise PayloadError("bad_timestamp", str(exc)) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            ts = parsed.timestamp()
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError("bad_timestamp", str(exc)) from None
    else:
        if isinstance(raw, bool):
            raise PayloadError("bad_timestamp", "a timestamp cannot be a boolean")
        ts = _number(raw, "bad_timestamp")
        if fmt == "epoch_ms":
            ts /= 1000.0
    if not (math.isfinite(ts) and 0.0 <= ts < MAX_EPOCH_S):
        raise PayloadError("bad_timestamp", f"{raw!r} is not a plausible time")
    return ts


def _quality(raw: Any) -> Quality:
    if raw is None:
        return Quality.GOOD
    if isinstance(raw, bool):
        return Quality.GOOD if raw else Quality.BAD
    if isinstance(raw, str) and (q := _QUALITY.get(raw.strip().lower())) is not None:
        return q
    raise PayloadError("bad_quality", f"{str(raw)[:40]!r} is not good, uncertain or bad")


def topic_key(topic: str, segment: int) -> str:
    levels = topic.split("/")
    try:
        key = levels[segment]
    except IndexError:
        raise PayloadError("no_segment", f"topic {topic[:200]!r} has no level {segment}") from None
    if not key:
        raise PayloadError("no_segment", f"level {segment} of {topic[:200]!r} is empty")
    return key


def decode(payload: bytes, topic: str, route: TopicOptions, max_bytes: int) -> Decoded:
    """Decode one message that matched ``route``; raise PayloadError (only) when it is not a sample."""
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"{len(payload)} bytes > {max_bytes}")
    key = topic_key(topic, route.segment) if route.tag_from == "topic_segment" else None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("not_text", "payload is not UTF-8") from None

    if route.value_path is None:  # a plain number, e.g. b"42.5"
        try:
            value = float(text.strip())
        except (ValueError, OverflowError):
            raise PayloadError("bad_value", f"{text[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise PayloadError("non_finite", text[:40])
        assert key is not None  # tag_from payload needs value_path (options validator)
        return Decoded(key, value, None, Quality.GOOD)

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, deep nesting
        raise PayloadError("not_json", str(exc)[:80]) from None
    if not isinstance(doc, dict):
        raise PayloadError("not_object", f"JSON {type(doc).__name__}, not an object")

    if key is None:
        raw_key = _get(doc, route.tag_path or "tag")
        if raw_key is _MISSING:
            raise PayloadError("missing_tag", route.tag_path or "tag")
        if not isinstance(raw_key, str) or not raw_key:
            raise PayloadError("bad_tag", "the tag's name must be a non-empty string")
        key = raw_key

    quality = Quality.GOOD
    if route.quality_path is not None:
        raw_q = _get(doc, route.quality_path)
        quality = Quality.GOOD if raw_q is _MISSING else _quality(raw_q)

    raw_value = _get(doc, route.value_path)
    if raw_value is _MISSING:
        raise PayloadError("missing_value", route.value_path)
    if raw_value is None:  # "no value": a BAD sample, whatever the quality says
        value, quality = math.nan, Quality.BAD
    else:
        value = _number(raw_value, "bad_value")
        if not math.isfinite(value):
            raise PayloadError("non_finite", str(raw_value)[:40])

    ts = None
    if route.timestamp_path is not None:
        raw_ts = _get(doc, route.timestamp_path)
        if raw_ts is _MISSING:
            raise PayloadError("missing_timestamp", route.timestamp_path)
        ts = _timestamp(raw_ts, route.timestamp_format)
    return Decoded(key, value, ts, quality)


# The C scanner behind json.loads, without json.loads' per-call encoding detection and whitespace passes.
_SCAN = json.JSONDecoder().scan_once
_FAST_QUALITY = {None: Quality.GOOD, "good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD}
FastSample = tuple[float, float | None, Quality]
FastReader = Callable[[bytes], FastSample | None]


def fast_reader(route: TopicOptions, max_bytes: int) -> FastReader | None:
    """A reader for the plain messages of ``route``: ``None`` from it means "take the general path".

    Most messages of a plant are the same small JSON object (``{"value": 1.5,
    "ts": 1.7e9, "quality": "good"}``). For those, the reader skips what
    :func:`decode` does to explain bad input: it scans the object with the C
    scanner, reads top-level keys only, and accepts exactly a finite number, a
    plausible epoch time and a known quality. Anything else (whitespace around
    the object, nested paths, strings for numbers, NaN, a missing field) returns
    ``None`` and goes through :func:`decode`, so every error keeps its reason
    and every sample its value: ``reader(p)`` is ``None`` or equal to ``decode``.
    Returns ``None`` when the route itself is not of that plain shape.
    """
    paths = (route.value_path, route.timestamp_path, route.quality_path)
    if route.value_path is None or route.tag_from != "topic_segment" or route.timestamp_format == "iso":
        return None
    if any(p is not None and "." in p for p in paths):
        return None
    value_key, ts_key, quality_key = paths
    ts_div = 1000.0 if route.timestamp_format == "epoch_ms" else 1.0  # divided as decode() does: same bits
    scan, qualities, missing = _SCAN, _FAST_QUALITY, _MISSING

    def read(payload: bytes) -> FastSample | None:
        if len(payload) > max_bytes or payload[:1] != b"{":
            return None
        try:
            text = payload.decode("utf-8")
            doc, end = scan(text, 0)
        except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
            return None
        if end != len(text) or type(doc) is not dict:
            return None
        value = doc.get(value_key, missing)
        if type(value) is not float:
            if type(value) is not int or not -(2**53) <= value <= 2**53:
                return None
            value = float(value)
        if not math.isfinite(value):
            return None
        ts = None
        if ts_key is not None:
            raw_ts = doc.get(ts_key, missing)
            if type(raw_ts) is float or (type(raw_ts) is int and 0 <= raw_ts < MAX_EPOCH_S * ts_div):
                ts = float(raw_ts) / ts_div
                if not 0.0 <= ts < MAX_EPOCH_S:  # NaN and inf fail too
                    return None
            else:
                return None
        if quality_key is None:
            return value, ts, Quality.GOOD
        raw_q = doc.get(quality_key)
        quality = qualities.get(raw_q) if raw_q is None or type(raw_q) is str else None
        if quality is None:
            return None
        return value, ts, quality

    return read


def filter_matcher(topic_filter: str) -> Callable[[str], bool]:
    """``topic -> bool`` for one MQTT topic filter, with the rules of paho's ``topic_matches_sub``.

    ``+`` is exactly one level, ``#`` (last) the rest including none (``a/#`` matches ``a``), and a filter
    starting with a wildcard does not match a ``$`` topic. paho's function builds a matcher tree per
    call (~10 us); this one splits the filter once, which matters when 10^4 topics are first seen.
    """
    levels = topic_filter.split("/")
    no_dollar = levels[0] in ("+", "#")

    def matches(topic: str) -> bool:
        if no_dollar and topic.startswith("$"):
            return False
        parts = topic.split("/")
        for i, level in enumerate(levels):
            if level == "#":
                return True
            if i >= len(parts) or (level != "+" and level != parts[i]):
                return False
        return len(parts) == len(levels)

    return matches
