"""The MQTT source's fast paths without a broker: burst template, dedup window, read-ahead socket, hand-off."""

from __future__ import annotations

import json
import socket
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.receivers.mqtt import MqttOptions, TopicOptions
from collector.receivers.mqtt.burst import DedupWindow, Template
from collector.receivers.mqtt.decode import PayloadError, decode
from collector.receivers.mqtt.readahead import CHUNK, ReadAhead
from collector.samples import Quality
from tests.collector.receivers.conftest_mqtt import make_receiver

TOPIC = "plantwatch/oil/tank_farm/TK101.LEVEL"


def route(**kw: Any) -> TopicOptions:
    return TopicOptions.model_validate({"filter": "plantwatch/oil/#", **kw})


ROUTES = [route(), route(timestamp_format="epoch_ms", quality_path=None), route(value_path="v", timestamp_path="t")]


def template(r: TopicOptions) -> Template:
    t = Template.for_route(r)
    assert t is not None
    return t


def decoded_or_none(payload: bytes, r: TopicOptions) -> tuple[float, float | None, Quality] | None:
    try:
        d = decode(payload, TOPIC, r, 65_536)
    except PayloadError:
        return None
    return d.value, d.ts, d.quality


def agrees(payloads: list[bytes], r: TopicOptions) -> bool:
    """The template read the burst, and ``decode`` gives every sample exactly; or it declined the burst."""
    read = template(r).parse(payloads)
    singles = [template(r).parse([p]) for p in payloads]
    assert (read is not None) == all(s is not None for s in singles)  # a burst is plain iff each message is
    if read is None:
        return False
    for k, payload in enumerate(payloads):
        d = decoded_or_none(payload, r)
        assert d is not None, payload  # the template accepts only what decode accepts
        got = (float(read.value[k]), float(read.ts[k]), Quality(int(read.quality[k])))
        assert got == d and np.signbit(got[0]) == np.signbit(d[0]), (payload, got, d)
    return True


def test_template_reads_the_simulator_payload_and_declines_the_rest() -> None:
    from sim_plant.servers.mqtt import payload_for

    assert agrees([payload_for(v, 1.7e9 + k) for k, v in enumerate((12.5, -3.0, 0.0, 1e-300, 7e300))], route())
    assert agrees([b'{"value":3,"ts":1700000000000}'], route(timestamp_format="epoch_ms", quality_path=None))
    assert agrees([b'{"value":1.5,"ts":1,"quality":null}', b'{"value":2e3,"ts":2,"quality":"uncertain"}'], route())
    for shape in (route(value_path=None), route(tag_from="payload"), route(timestamp_format="iso")):
        assert Template.for_route(shape) is None  # plain numbers, payload tags, iso times: message by message
    assert Template.for_route(route(value_path="a.b")) is None
    assert Template.for_route(route(timestamp_path=None)) is None  # no source time: deduplicated by payload
    good = b'{"value":1.0,"ts":1,"quality":"good"}'
    for odd in (
        b'{"value": 1.0,"ts":1,"quality":"good"}',  # whitespace
        b'{"ts":1,"value":1.0,"quality":"good"}',  # another key order
        b'{"value":-0,"ts":1,"quality":"good"}',  # the integer -0 is 0.0, not -0.0
        b'{"value":01,"ts":1,"quality":"good"}',  # not JSON
        b'{"value":1.,"ts":1,"quality":"good"}',
        b'{"value":1e400,"ts":1,"quality":"good"}',  # inf: non_finite
        b'{"value":1.0,"ts":1e10,"quality":"good"}',  # after 2286: bad_timestamp
        b'{"value":1.0,"ts":-1,"quality":"good"}',
        b'{"value":1.0,"ts":1,"quality":"Good"}',
        b'{"value":null,"ts":1,"quality":"bad"}',  # no value: a BAD sample, by decode
        good + b"\n" + good,  # a payload holding two lines
        good[:-1],
    ):
        assert template(route()).parse([odd]) is None, odd
        assert template(route()).parse([good, odd, good]) is None, odd  # one odd message: the burst goes slow


numbers = st.integers(-(10**20), 10**20) | st.floats(allow_nan=True, allow_infinity=True)
qualities = st.sampled_from(["good", "bad", "uncertain", "Good", None, "x"]) | st.booleans()
fields = numbers | qualities | st.text(max_size=5) | st.none()


@st.composite
def plain_payloads(draw: st.DrawFn) -> bytes:
    """Mostly the template's own layout (so that acceptance is tested too), sometimes dented."""
    clean = draw(st.integers(0, 7)) > 0
    if clean:
        quality = draw(st.sampled_from(["good", "bad", "uncertain", None]))
        doc = {"value": draw(numbers), "ts": draw(st.floats(0, 9e9) | st.integers(0, 10**10)), "quality": quality}
    else:
        doc = {"value": draw(fields), "ts": draw(numbers | fields), "quality": draw(qualities)}
    if draw(st.integers(0, 5)) == 0:
        del doc["quality"]
    text = json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
    if not clean and draw(st.booleans()):
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.binary(min_size=0, max_size=2)) + text[at + 1 :]
    return text


@settings(max_examples=500, deadline=None)
@given(payloads=st.lists(plain_payloads(), min_size=1, max_size=6), r=st.sampled_from(ROUTES))
def test_template_agrees_with_decode_on_random_bursts(payloads: list[bytes], r: TopicOptions) -> None:
    if r.value_path == "v":
        payloads = [p.replace(b'"value"', b'"v"').replace(b'"ts"', b'"t"') for p in payloads]
    agrees(payloads, r)


# -- the dedup window -------------------------------------------------------------------------------


def reference(batches: list[list[tuple[int, float]]], window: int) -> list[list[bool]]:
    """The rule in its plainest form: new iff the tag's last ``window`` accepted times do not hold it."""
    recent: dict[int, list[float]] = {}
    out = []
    for batch in batches:
        keep = []
        for tag, ts in batch:
            seen = recent.setdefault(tag, [])
            keep.append(ts not in seen)
            if keep[-1]:
                seen.append(ts)
                del seen[:-window]
        out.append(keep)
    return out


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12).map(float)), max_size=30), min_size=1, max_size=6
    ),
    window=st.integers(1, 8),
    rising=st.booleans(),
)
def test_dedup_window_gives_the_sequential_answer(
    batches: list[list[tuple[int, float]]], window: int, rising: bool
) -> None:
    if rising:  # times that mostly rise per tag, as a live stream's do: the numpy-only path
        batches = [[(t, s + 100.0 * k + j) for j, (t, s) in enumerate(b)] for k, b in enumerate(batches)]
    dedup = DedupWindow(4, window)
    got = []
    for batch in batches:
        tag = np.array([t for t, _ in batch], dtype=np.int64)
        ts = np.array([s for _, s in batch], dtype=np.float64)
        got.append(dedup.admit(tag, ts).tolist())
    assert got == reference(batches, window)


def test_dedup_window_takes_a_collision_free_burst_in_numpy_and_forgets_beyond_the_window() -> None:
    dedup = DedupWindow(2, 8)
    tag = np.array([0, 1, 0, 1], dtype=np.int64)
    assert dedup.admit(tag, np.array([10.0, 10.0, 11.0, 11.0])).all()  # another tag, another time: new
    assert not dedup.admit(np.array([0]), np.array([10.0])).any()  # same tag, same source time: a re-delivery
    assert dedup.admit(np.array([0] * 20), np.arange(12.0, 32.0)).all()
    assert dedup.admit(np.array([0]), np.array([10.0])).all()  # beyond the window: taken again


def test_samples_without_source_time_are_repeats_only_when_flagged_dup() -> None:
    opts = MqttOptions.model_validate(
        {"name": "m", "kind": "mqtt", "topics": [{"filter": "a/#"}], "tags": [{"name": "T1"}]}
    )
    repeat = make_receiver(opts)._is_repeat
    assert not repeat("u", b"1.5", False)
    assert not repeat("u", b"1.5", False)  # a plain repeat is a new reading
    assert repeat("u", b"1.5", True)
    assert not repeat("u", b"2.5", True)


# -- the receiver's burst decoding, end to end without a broker --------------------------------------


def receiver_with(n: int, **topic: Any) -> Any:
    doc = {
        "name": "m",
        "kind": "mqtt",
        "topics": [{"filter": "p/#", **topic}],
        "tags": [{"name": f"T{i}"} for i in range(n)],
    }
    return make_receiver(MqttOptions.model_validate(doc))


def take(receiver: Any) -> list[tuple[int, float, float, int]]:
    batches = receiver.context.queue.drain()
    return [
        (int(t), float(v), float(s), int(q))
        for b in batches
        for t, v, s, q in zip(b.tag, b.value, b.ts, b.quality, strict=True)
    ]


def test_a_plain_burst_is_read_whole_and_an_odd_one_message_by_message_with_the_same_samples() -> None:
    plain = [(f"p/T{k % 3}", b'{"value":%d.5,"ts":%d,"quality":"good"}' % (k, 100 + k), False, 1.0) for k in range(9)]
    odd = [*plain[:4], ("p/T1", b'{"value":"x","ts":1}', False, 1.0), *plain[4:]]
    fast, slow = receiver_with(3), receiver_with(3)
    fast._decode(plain, 0.0)
    slow._decode(odd, 0.0)
    assert fast.bursts == {"template": 1} and slow.bursts == {"each": 1}
    assert take(fast) == take(slow)
    assert slow.status.errors == {"bad_value": 1} and not fast.status.errors
    fast._decode(plain[:2], 0.0)  # re-delivered: dropped and counted, on the burst path too
    assert take(fast) == [] and fast.status.errors == {"duplicate": 2}
    # An unknown tag, or a route whose tag is in the payload, takes the message-by-message path and says why.
    fast._decode([("p/T9", plain[0][1], False, 1.0)], 0.0)
    assert fast.bursts["each"] == 1 and fast.status.errors["unknown_tag"] == 1


# -- the read-ahead socket ----------------------------------------------------------------------------


def test_read_ahead_returns_the_stream_byte_for_byte_with_one_recv_per_chunk() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        reader = ReadAhead(b)
        with pytest.raises(BlockingIOError):  # nothing yet: the socket's own error passes through
            reader.recv(1)
        stream = bytes(range(256)) * 600  # more than one chunk
        a.sendall(stream)
        got = bytearray()
        sizes = [1, 1, 3, 1000, 1]
        while len(got) < len(stream):
            try:
                part = reader.recv(sizes[len(got) % len(sizes)])
            except BlockingIOError:
                continue
            assert len(part) <= sizes[len(got) % len(sizes)]
            got += part
        assert bytes(got) == stream and reader.pending() == 0
        a.sendall(b"xyz")
        assert reader.recv(1) == b"x" and reader.pending() == 2  # read ahead: paho skips select for these
        assert reader.fileno() == b.fileno() and reader.wrapped is b  # the rest is the socket's
        a.close()
        assert reader.recv(5) == b"yz"
        assert reader.recv(5) == b""  # EOF as a socket says it
    assert CHUNK >= 4096
