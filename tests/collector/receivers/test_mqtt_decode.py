"""The MQTT source without a broker: options, sample config, and the payload decoder (examples and hypothesis)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.receivers.mqtt import MqttOptions, MqttReceiver, TlsOptions, TopicOptions
from collector.receivers.mqtt.decode import REASONS, PayloadError, decode, fast_reader, filter_matcher
from collector.samples import Quality
from collector.sources import TagConfig
from tests.collector.receivers.conftest_mqtt import make_receiver
from tests.conftest import ROOT

FOLDER = ROOT / "collector" / "receivers" / "mqtt"
TOPIC = "plantwatch/oil/tank_farm/TK101.LEVEL"


def route(**kw: Any) -> TopicOptions:
    return TopicOptions.model_validate({"filter": "plantwatch/oil/#", **kw})


def base(**kw: Any) -> dict[str, Any]:
    return {"name": "m", "kind": "mqtt", "topics": [{"filter": "a/#"}], "tags": [{"name": "T1"}], **kw}


# -- options and documentation -------------------------------------------------------------------


def test_sample_yaml_and_readme_document_every_option() -> None:
    text = (FOLDER / "sample.yaml").read_text()
    sample = yaml.safe_load(text)
    assert isinstance(sample, list) and sample[0]["kind"] == "mqtt"
    assert set(sample[0]) == set(MqttOptions.model_fields)
    assert set(sample[0]["tags"][0]) == set(TagConfig.model_fields)
    assert set(sample[0]["topics"][0]) == set(TopicOptions.model_fields)
    opts = MqttOptions.model_validate(sample[0])
    for field, info in MqttOptions.model_fields.items():  # every value in the sample is the default
        if not info.is_required():
            assert getattr(opts, field) == info.get_default(call_default_factory=True), field
    for field, info in TopicOptions.model_fields.items():
        if not info.is_required():
            assert getattr(opts.topics[0], field) == info.get_default(), field
    readme = (FOLDER / "README.md").read_text()
    for field in (*MqttOptions.model_fields, *TopicOptions.model_fields, *TlsOptions.model_fields):
        assert f"`{field}`" in readme, f"README.md does not list {field}"
    tls = [source["tls"] for source in sample if source.get("tls") is not None]  # the TLS source's mapping
    assert tls and set(tls[0]) == set(TlsOptions.model_fields), "sample.yaml does not show every tls option"
    assert TlsOptions.model_validate(tls[0]) == TlsOptions(), "sample.yaml: a tls option is not its default"
    assert [MqttOptions.model_validate(source).kind for source in sample] == ["mqtt"] * len(sample)
    assert MqttReceiver.kind == "mqtt" and MqttReceiver.live and MqttReceiver.options_model is MqttOptions


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (base(topics=[{"filter": "a/#/b"}]), "'#' must be a whole level and the last one"),
        (base(topics=[{"filter": "a/b+"}]), "'+' must be a whole level"),
        (base(topics=[{"filter": ""}]), "cannot be empty"),
        (base(topics=[{"filter": "a/b", "segment": 2}]), "segment 2 is outside the 2 levels"),
        (base(topics=[{"filter": "a/#", "tag_from": "payload", "value_path": None}]), "set value_path"),
        (base(topics=[{"filter": "a/#", "value_path": "a..b"}]), "is not a dotted path"),
        (base(topics=[]), "at least 1 item"),
        (base(password="x"), "a password needs a username"),
        (base(reconnect_min_s=5, reconnect_max_s=1), "reconnect_max_s must be at least reconnect_min_s"),
        (base(queue_max_bytes=10), "queue_max_bytes must hold at least one payload"),
        (base(max_packet_bytes=65536), "max_packet_bytes must be at least max_payload_bytes + 66560"),
        (base(protocol="v3"), "'v5' or 'v311'"),
        (base(qos=3), "Input should be 0, 1 or 2"),
        (base(port=0), "greater than or equal to 1"),
        (base(tls={"cert_file": "/etc/hostname"}), "cert_file and key_file go together"),
        (base(tls={"ca_file": "/no/such/ca.pem"}), "no such file"),
        (base(tags=[{"name": "A", "column": "X"}, {"name": "B", "column": "X"}]), "two tags read the same topic"),
        (base(retain=True), "Extra inputs are not permitted"),
        (base(topics=[{"filter": "a/#", "qos": 1}]), "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_rejected_with_a_clear_message(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        MqttOptions.model_validate(doc)


def test_option_defaults_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_MQTT_PASSWORD", "s3cret")
    opts = MqttOptions.model_validate(base(username="reader", password={"env": "PW_MQTT_PASSWORD"}))
    assert opts.password is not None and opts.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(opts)
    assert opts.effective_client_id == "plantwatch-m"
    assert (opts.port, opts.protocol, opts.qos, opts.clean_start, opts.reconnect_max_s) == (1883, "v5", 1, False, 10)
    receiver = make_receiver(opts)
    props = receiver._connect_properties()
    assert props is not None and props.SessionExpiryInterval == 3600
    assert props.MaximumPacketSize == 16 * 1024 * 1024  # a memory ceiling, far above max_payload_bytes
    # the backoff grows, is capped by reconnect_max_s, and is jittered (never the same every time)
    delays = [receiver._backoff() for _ in range(40)]
    assert delays[0] <= 0.5 and max(delays) <= 10.0 and min(delays[10:]) >= 5.0
    assert len({round(d, 6) for d in delays[10:]}) > 1


# -- decoder: examples ---------------------------------------------------------------------------


def test_decoder_reads_the_simulator_payload_and_the_documented_variants() -> None:
    d = decode(b'{"value": 5.25, "ts": 1767225600.5, "quality": "good"}', TOPIC, route(), 65536)
    assert d == (TOPIC.rsplit("/", 1)[1], 5.25, 1767225600.5, Quality.GOOD)
    d = decode(b'{"value": null, "ts": 1.0, "quality": "bad"}', TOPIC, route(), 65536)
    assert math.isnan(d.value) and d.quality == Quality.BAD
    d = decode(b'{"value": 3, "ts": 1.0, "quality": "Uncertain"}', TOPIC, route(), 65536)
    assert (d.value, d.quality) == (3.0, Quality.UNCERTAIN)
    d = decode(b'{"value": true, "ts": 1.0}', TOPIC, route(), 65536)  # no quality field: good
    assert (d.value, d.quality) == (1.0, Quality.GOOD)
    d = decode(b" 42.5\n", "a/b/FT1", route(value_path=None), 65536)
    assert d == ("FT1", 42.5, None, Quality.GOOD)
    d = decode(
        b'{"v": 1, "t": 1767225600500}',
        "x/y",
        route(value_path="v", timestamp_path="t", timestamp_format="epoch_ms", segment=0),
        99,
    )
    assert (d.key, d.ts) == ("x", 1767225600.5)
    doc = {"tag": "PT1", "data": {"v": 2.5, "at": "2026-01-01T00:00:00Z", "q": "bad"}}
    r = route(
        tag_from="payload", value_path="data.v", timestamp_path="data.at", timestamp_format="iso", quality_path="data.q"
    )
    assert decode(json.dumps(doc).encode(), "any/topic", r, 65536) == ("PT1", 2.5, 1767225600.0, Quality.BAD)
    doc["data"]["at"] = "2026-01-01T00:00:00"  # naive is UTC
    assert decode(json.dumps(doc).encode(), "any/topic", r, 65536).ts == 1767225600.0
    d = decode(b'{"value": 1.5}', TOPIC, route(timestamp_path=None, quality_path=None), 65536)
    assert d == ("TK101.LEVEL", 1.5, None, Quality.GOOD)


MALFORMED = {
    "too_large": (b'{"value": 1, "ts": 1}' + b" " * 100, route()),
    "not_text": (b'{"value": 1, "ts": 1, "q": "\xff"}', route()),
    "not_json": (b"{value: 1}", route()),
    "not_object": (b"[1, 2]", route()),
    "missing_tag": (b'{"value": 1, "ts": 1}', route(tag_from="payload")),
    "bad_tag": (b'{"tag": 7, "value": 1, "ts": 1}', route(tag_from="payload")),
    "no_segment": (b'{"value": 1, "ts": 1}', route(segment=9)),
    "missing_value": (b'{"ts": 1, "quality": "good"}', route()),
    "bad_value": (b'{"value": "5.0", "ts": 1}', route()),
    "non_finite": (b'{"value": NaN, "ts": 1}', route()),
    "missing_timestamp": (b'{"value": 1}', route()),
    "bad_timestamp": (b'{"value": 1, "ts": "yesterday"}', route()),
    "bad_quality": (b'{"value": 1, "ts": 1, "quality": "meh"}', route()),
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_each_malformed_kind_raises_its_reason(reason: str) -> None:
    payload, r = MALFORMED[reason]
    with pytest.raises(PayloadError) as info:
        decode(payload, TOPIC, r, 100)
    assert info.value.reason == reason and reason in REASONS


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"value": Infinity, "ts": 1}', "non_finite"),
        (b'{"value": 1e999, "ts": 1}', "non_finite"),
        (b'{"value": -Infinity, "ts": 1}', "non_finite"),
        (b'{"value": ' + b"9" * 400 + b', "ts": 1}', "non_finite"),  # an int beyond float range
        (b'{"value": ' + b"9" * 5000 + b', "ts": 1}', "not_json"),  # beyond Python's int digit limit
        (b"[" * 50_000, "not_json"),  # nesting beyond the recursion limit
        (b'{"value": 1, "ts": NaN}', "bad_timestamp"),
        (b'{"value": 1, "ts": -5}', "bad_timestamp"),
        (b'{"value": 1, "ts": 1e12}', "bad_timestamp"),
        (b'{"value": 1, "ts": true}', "bad_timestamp"),
        (b'{"value": [1], "ts": 1}', "bad_value"),
        (b'{"value": {"x": 1}, "ts": 1}', "bad_value"),
        (b"", "not_json"),
        (b"null", "not_object"),
    ],
)
def test_more_bad_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode(payload, TOPIC, route(), 1 << 20)
    assert info.value.reason == reason


@pytest.mark.parametrize("payload", [b"nan", b"inf", b"-Infinity", b"abc", b"", b"1e999", b"\xff"])
def test_bad_plain_numbers(payload: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        decode(payload, TOPIC, route(value_path=None), 100)
    assert info.value.reason in ("non_finite", "bad_value", "not_text")


# -- decoder: property-based -------------------------------------------------------------------

ROUTES = [
    route(),
    route(value_path=None),
    route(tag_from="payload"),
    route(timestamp_format="iso"),
    route(timestamp_format="epoch_ms", quality_path=None),
    route(value_path="a.b", timestamp_path="a.c", quality_path="a.d"),
]
TOPICS = st.sampled_from([TOPIC, "plantwatch", "plantwatch/oil/", "/", "a/b/c/d/e"])
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_values = json_values | st.sampled_from(["good", "bad", "GOOD", "2026-01-01T00:00:00+01:00", "x"])
documents = st.fixed_dictionaries(
    {},
    optional={
        "value": field_values,
        "ts": field_values,
        "quality": field_values,
        "tag": field_values,
        "a": st.fixed_dictionaries({}, optional={"b": field_values, "c": field_values, "d": field_values}),
    },
)


def check(payload: bytes, topic: str, r: TopicOptions) -> None:
    try:
        d = decode(payload, topic, r, 4096)
    except PayloadError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(d.key, str) and d.key
    assert isinstance(d.value, float)
    assert math.isfinite(d.value) or (math.isnan(d.value) and d.quality == Quality.BAD)
    assert d.ts is None or (isinstance(d.ts, float) and 0 <= d.ts < 1e10)
    assert d.quality in (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=5000), topic=TOPICS, r=st.sampled_from(ROUTES))
def test_random_bytes_raise_only_payload_error(payload: bytes, topic: str, r: TopicOptions) -> None:
    check(payload, topic, r)


@settings(max_examples=600, deadline=None)
@given(doc=documents | json_values, topic=TOPICS, r=st.sampled_from(ROUTES))
def test_random_json_raises_only_payload_error(doc: Any, topic: str, r: TopicOptions) -> None:
    check(json.dumps(doc, allow_nan=True).encode(), topic, r)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60), r=st.sampled_from(ROUTES))
def test_random_text_raises_only_payload_error(text: str, r: TopicOptions) -> None:
    check(text.encode("utf-8", "surrogatepass"), TOPIC, r)


# -- the fast reader: the same answer as decode, or none -----------------------------------------------


def agrees(payload: bytes, r: TopicOptions) -> bool:
    """True when the fast reader took ``payload``; then decode gives exactly the same sample."""
    reader = fast_reader(r, 4096)
    fast = reader(payload) if reader is not None else None
    if fast is None:
        return False
    d = decode(payload, TOPIC, r, 4096)  # must not raise: the fast reader accepts only good samples
    assert (d.value, d.ts, d.quality) == fast, (payload, fast, d)
    assert type(fast[0]) is float and (fast[1] is None or type(fast[1]) is float)
    return True


def test_fast_reader_takes_the_simulator_payload_and_declines_the_rest() -> None:
    from sim_plant.servers.mqtt import payload_for

    assert agrees(payload_for(12.5, 1.7e9), route())
    assert agrees(b'{"value":3,"ts":1700000000000}', route(timestamp_format="epoch_ms", quality_path=None))
    assert fast_reader(route(value_path=None), 4096) is None  # plain numbers, payload tags, iso, nested paths:
    assert fast_reader(route(tag_from="payload"), 4096) is None  # always the general path
    assert fast_reader(route(timestamp_format="iso"), 4096) is None
    assert fast_reader(route(value_path="a.b"), 4096) is None
    for payload in (
        b' {"value":1.0,"ts":1}',
        b'{"value":"1","ts":1}',
        b'{"value":NaN,"ts":1}',
        b'{"value":1}',
        b'{"value":1.0,"ts":1,"quality":"Good"}',
        b'{"value":true,"ts":1}',
        b'{"value":1,"ts":1e10}',
        b'{"value":1,"ts":1} ',
        b'{"value":null,"ts":1}',
        b'{"value":1,"ts":-1}',
    ):
        assert not agrees(payload, route()), payload


@settings(max_examples=600, deadline=None)
@given(doc=documents | json_values, r=st.sampled_from(ROUTES))
def test_fast_reader_agrees_with_decode_on_random_json(doc: Any, r: TopicOptions) -> None:
    agrees(json.dumps(doc, allow_nan=True).encode(), r)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=200), r=st.sampled_from(ROUTES))
def test_fast_reader_agrees_with_decode_on_random_bytes(payload: bytes, r: TopicOptions) -> None:
    agrees(payload, r)


# -- topic filters: the receiver's matcher agrees with paho's ---------------------------------------

levels = st.sampled_from(["a", "b", "", "$SYS", "+", "#", "plantwatch", "oil"])


@settings(max_examples=500, deadline=None)
@given(flt=st.lists(levels, min_size=1, max_size=5), topic=st.lists(levels, min_size=1, max_size=5))
def test_filter_matcher_agrees_with_paho(flt: list[str], topic: list[str]) -> None:
    import paho.mqtt.client as mqtt

    topic_filter = "/".join(flt)
    if "#" in flt[:-1] or any(("+" in x or "#" in x) and len(x) > 1 for x in flt):
        return  # not a valid filter (the options refuse it)
    name = "/".join(t for t in topic if t not in ("+", "#")) or "a"
    assert filter_matcher(topic_filter)(name) == mqtt.topic_matches_sub(topic_filter, name), (topic_filter, name)


def test_filter_matcher_examples() -> None:
    assert filter_matcher("plantwatch/oil/#")("plantwatch/oil/tank_farm/TK101.LEVEL")
    assert filter_matcher("plantwatch/oil/#")("plantwatch/oil")
    assert not filter_matcher("plantwatch/oil/#")("plantwatch/chemical/x")
    assert filter_matcher("a/+/c")("a//c") and not filter_matcher("a/+/c")("a/b/c/d")
    assert not filter_matcher("#")("$SYS/broker") and filter_matcher("$SYS/#")("$SYS/broker")
