"""Property test of the OPC-UA value path: any DataValue in a Publish response -> a sample, or a counted drop.

``_on_publish`` is called from asyncua's publish loop; an exception there would stop the subscription's
processing, so it declares none: whatever the server sends (any variant type and value, any status code,
any timestamps or none, unknown client handles, a missing DataValue) the receiver either queues a sample
with a float value, a time and one of the three qualities, or counts the item as ``malformed`` /
``unknown_handle`` / duplicate. Every item is accounted for.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.queue import SampleQueue
from collector.receivers.base import ReceiverContext
from collector.receivers.opcua import OpcUaOptions, OpcUaReceiver
from collector.samples import Quality

N_TAGS = 3
NOW = 1_800_000_000.0

# (variant type, values of it) as asyncua would decode them, plus Python values no decoder makes.
VARIANTS: list[tuple[ua.VariantType, st.SearchStrategy[Any]]] = [
    (ua.VariantType.Double, st.floats(allow_nan=True, allow_infinity=True)),
    (ua.VariantType.Float, st.floats(width=32, allow_nan=True, allow_infinity=True)),
    (ua.VariantType.Int64, st.integers(-(2**63), 2**63 - 1)),
    (ua.VariantType.UInt64, st.integers(0, 2**64 - 1)),
    (ua.VariantType.Int16, st.integers(-(2**15), 2**15 - 1)),
    (ua.VariantType.Boolean, st.booleans()),
    (ua.VariantType.String, st.text(max_size=10) | st.none()),
    (ua.VariantType.ByteString, st.binary(max_size=10) | st.none()),
    (ua.VariantType.DateTime, st.datetimes()),
    (ua.VariantType.Double, st.lists(st.floats(), max_size=3)),  # an array where a scalar was expected
    (ua.VariantType.Null, st.none()),
]
odd_values = (
    st.integers(min_value=-(10**400), max_value=10**400)
    | st.complex_numbers()
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
timestamps = st.none() | st.datetimes(
    min_value=datetime(1601, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.none() | st.just(UTC)
)


@st.composite
def data_values(draw: st.DrawFn) -> ua.DataValue | None:
    if draw(st.integers(0, 30)) == 0:
        return None  # a notification without a DataValue
    status = draw(st.none() | st.integers(0, 2**32 - 1).map(ua.StatusCode))
    variant: ua.Variant | None = None
    kind = draw(st.integers(0, len(VARIANTS)))
    if kind < len(VARIANTS):
        vtype, values = VARIANTS[kind]
        value = draw(values)
        variant = ua.Variant(None, ua.VariantType.Null) if vtype == ua.VariantType.Null else ua.Variant(value, vtype)
    elif draw(st.booleans()):
        variant = ua.Variant(0.0, ua.VariantType.Double)
        object.__setattr__(variant, "Value", draw(odd_values))  # past the Variant's own type guessing
    dv = ua.DataValue(variant, StatusCode=status)
    object.__setattr__(dv, "SourceTimestamp", draw(timestamps))
    object.__setattr__(dv, "ServerTimestamp", draw(timestamps))
    return dv


def make_receiver() -> tuple[OpcUaReceiver, SampleQueue]:
    tags = [{"name": f"T{k}", "column": f"ns=2;s=t{k}"} for k in range(N_TAGS)]
    opts = OpcUaOptions.model_validate(
        {"name": "plc", "kind": "opcua", "endpoint": "opc.tcp://127.0.0.1:1/x", "tags": tags}
    )
    queue = SampleQueue(1_000_000)
    context = ReceiverContext(
        index=0,
        tag_index={t.source_key: 100 + k for k, t in enumerate(opts.tags)},
        queue=queue,
        tick_s=1.0,
        log=logging.getLogger("plantwatch.test.opcua.values"),
        clock=lambda: NOW,
    )
    return OpcUaReceiver(opts, context), queue


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.tuples(st.integers(-2, N_TAGS + 2) | st.integers(-(2**31), 2**32), data_values()), max_size=12),
    repeat=st.booleans(),
)
def test_any_data_value_is_a_sample_or_a_counted_drop(
    items: list[tuple[int, ua.DataValue | None]], repeat: bool
) -> None:
    rx, queue = make_receiver()
    notes = [ua.MonitoredItemNotification(ClientHandle=h, Value=v) for h, v in items]
    result = publish_result(notes)
    rx._on_publish(result)  # must not raise
    first = (rx.status.samples, rx.status.errors["malformed"])
    if repeat:  # the same response again (a republish): only items without any time can count twice
        rx._on_publish(result)
        timeless = [v for h, v in items if 1 <= h <= N_TAGS and (v is None or not _timed(v))]
        assert rx.status.samples - first[0] == sum(_kept(v) for v in timeless)
        assert rx.status.errors["malformed"] - first[1] == sum(not _kept(v) for v in timeless)
    publishes = 2 if repeat else 1
    batches = queue.drain()
    samples = sum(len(b) for b in batches)
    errors = rx.status.errors
    assert set(errors) <= {"malformed", "unknown_handle"}, errors
    assert samples + errors["malformed"] + errors["unknown_handle"] + rx.duplicates == publishes * len(items)
    assert rx.status.samples == samples
    for b in batches:
        assert b.value.dtype == np.float64 and b.ts.dtype == np.float64 and b.quality.dtype == np.uint8
        assert set(b.tag.tolist()) <= set(range(100, 100 + N_TAGS))
        assert set(b.quality.tolist()) <= {Quality.BAD, Quality.UNCERTAIN, Quality.GOOD}
        assert np.isfinite(b.ts).all() and (b.ts >= 86400.0).all()
        assert (b.recv_ts == NOW).all()
    # each item, judged on its own: a BAD status is never a GOOD sample, a number is its float
    by_handle = [(h, v) for h, v in items if 1 <= h <= N_TAGS]
    if not repeat and batches and rx.duplicates == 0:  # then the kept items line up with the samples
        tags = np.concatenate([b.tag for b in batches])
        quality = np.concatenate([b.quality for b in batches])
        kept = [hv for hv in by_handle if _kept(hv[1])]
        assert len(kept) == len(tags)
        for (h, v), tag, q in zip(kept, tags, quality, strict=True):
            assert tag == 99 + h
            code = v.StatusCode.value if v.StatusCode is not None else 0
            assert q == {0: Quality.GOOD, 1: Quality.UNCERTAIN}.get(code >> 30, Quality.BAD)


def _timed(v: ua.DataValue) -> bool:
    """Whether the value carries a usable time (source or server, after 1970-01-02): what repeats are told by."""
    stamps = (v.SourceTimestamp, v.ServerTimestamp)
    return any(t is not None and t.replace(tzinfo=t.tzinfo or UTC).timestamp() >= 86400.0 for t in stamps)


def _kept(v: ua.DataValue | None) -> bool:
    """Whether the receiver keeps this item (ignoring duplicates): what the docs promise, restated."""
    if v is None:
        return False
    raw = v.Value.Value if v.Value is not None else None
    number = isinstance(raw, bool | int | float)
    code = v.StatusCode.value if v.StatusCode is not None else 0
    return number or (code >> 30) >= 2


def publish_result(notes: list[ua.MonitoredItemNotification]) -> ua.PublishResult:
    message = ua.NotificationMessage(
        SequenceNumber=1, NotificationData=[ua.DataChangeNotification(MonitoredItems=notes)]
    )
    return ua.PublishResult(SubscriptionId=1, NotificationMessage=message)


def at(
    seconds: float, value: float | None = None, code: int = ua.StatusCodes.Good, source: bool = True
) -> ua.DataValue:
    """A value stamped ``seconds`` after 2026-01-01, by the source (else by the server only)."""
    stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    stamps = {"SourceTimestamp": stamp} if source else {"ServerTimestamp": stamp}
    return ua.DataValue(ua.Variant(value), StatusCode=ua.StatusCode(code), **stamps)


def test_a_republished_response_with_queued_values_counts_once() -> None:
    rx, queue = make_receiver()
    notes = [
        ua.MonitoredItemNotification(ClientHandle=1, Value=at(1, 1.0)),  # two queued values of T0
        ua.MonitoredItemNotification(ClientHandle=1, Value=at(2, 2.0)),
        ua.MonitoredItemNotification(ClientHandle=2, Value=at(1, 5.0)),  # T1 good, then bad at the same time
        ua.MonitoredItemNotification(ClientHandle=2, Value=at(1, code=ua.StatusCodes.BadSensorFailure)),
        ua.MonitoredItemNotification(ClientHandle=3, Value=at(1, 7.0, source=False)),  # server time only
        ua.MonitoredItemNotification(ClientHandle=3, Value=at(3, 8.0, source=False)),
    ]
    for _ in range(2):
        rx._on_publish(publish_result(notes))
    assert rx.status.samples == 6
    assert rx.duplicates == 6
    tag = np.concatenate([b.tag for b in queue.drain()])
    assert sorted(tag.tolist()) == [100, 100, 101, 101, 102, 102]
    # a newer value still comes, an older one late does not
    rx._on_publish(publish_result([ua.MonitoredItemNotification(ClientHandle=1, Value=at(3, 3.0))]))
    rx._on_publish(publish_result([ua.MonitoredItemNotification(ClientHandle=1, Value=at(1.5, 9.0))]))
    assert (rx.status.samples, rx.duplicates) == (7, 7)


def test_huge_integers_become_infinite_not_an_exception() -> None:
    rx, queue = make_receiver()
    variant = ua.Variant(0.0, ua.VariantType.Double)
    object.__setattr__(variant, "Value", 10**400)
    dv = ua.DataValue(variant, SourceTimestamp=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=1))
    note = ua.MonitoredItemNotification(ClientHandle=1, Value=dv)
    message = ua.NotificationMessage(
        SequenceNumber=1, NotificationData=[ua.DataChangeNotification(MonitoredItems=[note])]
    )
    rx._on_publish(ua.PublishResult(SubscriptionId=1, NotificationMessage=message))
    (batch,) = queue.drain()
    assert math.isinf(batch.value[0]) and batch.value[0] > 0  # the pipeline marks it BAD (non_finite)
