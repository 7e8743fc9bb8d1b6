"""The OPC-UA receiver without a server: options, node ids, notification decoding, backoff, docs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from asyncua import ua
from pydantic import ValidationError

from collector.queue import SampleQueue
from collector.receivers.base import ReceiverContext
from collector.receivers.opcua import OpcUaOptions, OpcUaReceiver, OpcUaSecurity
from collector.receivers.opcua.nodes import NodeIdError, parse_node_key
from collector.receivers.opcua.receiver import SourceLost, classify, quality_of
from collector.samples import Quality
from collector.sources import TagConfig
from tests.collector.receivers.conftest_opcua import Pki, make_pki
from tests.conftest import ROOT

FOLDER = ROOT / "collector" / "receivers" / "opcua"
EP = "opc.tcp://127.0.0.1:4840/x"
TAGS = [{"name": "A", "column": "ns=2;s=a"}, {"name": "B", "column": "ns=2;s=b"}]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory)


def make(**extra: object) -> OpcUaOptions:
    return OpcUaOptions.model_validate({"name": "plc", "kind": "opcua", "endpoint": EP, "tags": TAGS, **extra})


# -- docs --------------------------------------------------------------------------------------


def test_sample_yaml_lists_every_option_with_its_default() -> None:
    sample = yaml.safe_load((FOLDER / "sample.yaml").read_text())
    assert isinstance(sample, list) and sample[0]["kind"] == "opcua"
    assert set(sample[0]) == set(OpcUaOptions.model_fields)
    assert set(sample[0]["security"]) == set(OpcUaSecurity.model_fields)
    assert set(sample[0]["tags"][0]) == set(TagConfig.model_fields)
    parsed = OpcUaOptions.model_validate(sample[0])
    minimal = OpcUaOptions.model_validate(
        {k: sample[0][k] for k in ("name", "kind", "endpoint", "tags")}, context={"base_dir": FOLDER}
    )
    assert parsed == minimal  # every value in the sample is the default


def test_readme_names_every_option() -> None:
    text = (FOLDER / "README.md").read_text()
    for name in set(OpcUaOptions.model_fields) - {"name", "kind", "tags", "security"}:
        assert f"`{name}`" in text, name
    for name in OpcUaSecurity.model_fields:
        assert f"`security.{name}`" in text, name


def test_receiver_source_uses_no_writing_service() -> None:
    for path in FOLDER.glob("*.py"):
        code = path.read_text()
        for call in ("write", "call(", "add_nodes", "delete_nodes", "add_references", "delete_references"):
            hits = [m.group(0) for m in re.finditer(rf"\.{re.escape(call)}\w*", code)]
            assert not hits, (path.name, hits)


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"endpoint": "http://x"}, "opc.tcp://"),
        ({"username": "op"}, "go together"),
        ({"password": "x"}, "go together"),
        ({"reconnect_min_s": 20}, "reconnect_min_s"),
        ({"reconnect_max_s": 0}, "greater than 0"),
        ({"queue_size": 0}, "greater than or equal to 1"),
        ({"deadband_abs": 0.1, "trigger": "status"}, "deadband_abs needs"),
        ({"security": {"policy": "Basic128Rsa15"}}, "policy"),
        ({"security": {"policy": "Basic256Sha256"}}, "needs certificate and private_key"),
        ({"security": {"mode": "None"}}, "mode"),
        ({"tags": [{"name": "A", "column": "ns=x;s=a"}]}, "tag A: bad node id"),
        ({"tags": [{"name": "A", "column": "ns=2;q=a"}]}, "must start with i=, s=, g= or b="),
        ({"tags": [{"name": "A", "column": "ns=2;i=abc"}]}, "tag A: bad node id"),
        ({"tags": [{"name": "TK101.LEVEL"}]}, "is not a node id"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_bad_options_are_rejected_with_a_clear_message(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**extra)


def test_secure_options(pki: Pki, tmp_path: Path) -> None:
    base = {"policy": "Aes256Sha256RsaPss", "certificate": str(pki.client.cert), "private_key": str(pki.client.key)}
    with pytest.raises(ValidationError, match="needs server_certificate"):
        make(security=base)
    assert make(security={**base, "trust_on_first_use": True}).security.secure
    opts = make(security={**base, "server_certificate": str(pki.server.cert), "mode": "Sign"})
    assert opts.security.server_certificate == pki.server.cert
    with pytest.raises(ValidationError, match="no such file"):
        make(security={**base, "server_certificate": str(tmp_path / "missing.der")})
    with pytest.raises(ValidationError, match="policy None uses no certificates"):
        make(security={"certificate": str(pki.client.cert)})
    # a bare column is fine once the namespace is named
    assert make(namespace_uri="urn:x", tags=[{"name": "TK101.LEVEL"}]).tags[0].source_key == "TK101.LEVEL"


def test_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLC_PASSWORD", "pw")
    opts = make(username="op", password={"env": "PLC_PASSWORD"})
    assert opts.password is not None and opts.password.get_secret_value() == "pw"
    assert "pw" not in repr(opts)


# -- node ids ----------------------------------------------------------------------------------


def test_node_keys_resolve() -> None:
    ns = ["http://opcfoundation.org/UA/", "urn:a", "urn:plant"]
    assert parse_node_key("ns=2;s=oil.X").resolve(ns, None) == ua.NodeId("oil.X", 2)
    assert parse_node_key("nsu=urn:plant;s=oil.X").resolve(ns, None) == ua.NodeId("oil.X", 2)
    assert parse_node_key("i=2258").resolve(ns, None) == ua.NodeId(2258, 0)
    assert parse_node_key("i=7").resolve(ns, "urn:a") == ua.NodeId(7, 1)
    assert parse_node_key("oil.X").resolve(ns, "urn:plant") == ua.NodeId("oil.X", 2, ua.NodeIdType.String)
    assert parse_node_key("ns=1;s=x").resolve(ns, "urn:plant") == ua.NodeId("x", 1)  # explicit index wins
    with pytest.raises(NodeIdError, match="no namespace urn:gone"):
        parse_node_key("nsu=urn:gone;s=x").resolve(ns, None)
    for bad in ("", "ns=;s=x", "nsu=;s=x", "ns=70000;s=x", "ns=2;x"):
        with pytest.raises(NodeIdError):
            parse_node_key(bad)


# -- notifications -----------------------------------------------------------------------------


def receiver(tags: list[dict[str, str]] = TAGS) -> tuple[OpcUaReceiver, SampleQueue]:
    opts = make(tags=tags)
    queue = SampleQueue(10_000)
    keys = [t.source_key for t in opts.tags]
    context = ReceiverContext(
        index=3,
        tag_index={k: 10 + i for i, k in enumerate(keys)},
        queue=queue,
        tick_s=1.0,
        log=logging.getLogger("plantwatch.test.opcua.units"),
        clock=lambda: 5000.0,
    )
    return OpcUaReceiver(opts, context), queue


def dv(value: object, ts: float | None, status: int = ua.StatusCodes.Good, vtype: ua.VariantType | None = None):  # type: ignore[no-untyped-def]
    variant = None if value is None else ua.Variant(value, vtype) if vtype else ua.Variant(value)
    src = None if ts is None else datetime.fromtimestamp(ts, UTC)
    return ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=src)


def publish(rx: OpcUaReceiver, *items: tuple[int, ua.DataValue]) -> None:
    notes = [ua.MonitoredItemNotification(ClientHandle=h, Value=v) for h, v in items]
    msg = ua.NotificationMessage(SequenceNumber=1, NotificationData=[ua.DataChangeNotification(MonitoredItems=notes)])
    rx._on_publish(ua.PublishResult(SubscriptionId=1, NotificationMessage=msg))


def test_one_publish_is_one_batch_with_quality_and_source_time() -> None:
    rx, queue = receiver()
    t = 1_700_000_000.5
    publish(
        rx,
        (1, dv(1.5, t)),
        (2, dv(True, t)),
        (1, dv(2.5, t + 1, ua.StatusCodes.UncertainLastUsableValue)),
        (2, dv(None, t + 1, ua.StatusCodes.BadSensorFailure)),
    )
    (batch,) = queue.drain()
    assert batch.source == 3
    assert batch.tag.tolist() == [10, 11, 10, 11]
    np.testing.assert_array_equal(batch.value, [1.5, 1.0, 2.5, np.nan])
    assert batch.ts.tolist() == [t, t, t + 1, t + 1]
    assert batch.quality.tolist() == [Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN, Quality.BAD]
    assert batch.recv_ts.tolist() == [5000.0] * 4
    assert batch.watermark is None
    assert rx.status.samples == 4


def test_republished_values_are_not_counted_twice() -> None:
    rx, queue = receiver()
    t = 1_700_000_000.0
    publish(rx, (1, dv(1.0, t)), (2, dv(2.0, t)))
    publish(rx, (1, dv(1.0, t)), (2, dv(2.0, t)), (1, dv(1.1, t + 1)))  # a re-sent burst plus one new value
    publish(rx, (2, dv(2.0, t, ua.StatusCodes.BadCommunicationError)))  # same time, new status: news
    batches = queue.drain()
    assert [b.tag.tolist() for b in batches] == [[10, 11], [10], [11]]
    assert rx.duplicates == 2
    assert rx.status.samples == 4


def test_timestamps_fall_back_to_server_then_receive_time() -> None:
    rx, queue = receiver()
    server_ts = datetime.fromtimestamp(1_700_000_100.0, UTC)
    publish(
        rx,
        (1, ua.DataValue(ua.Variant(1.0), ServerTimestamp=server_ts)),
        (2, ua.DataValue(ua.Variant(2.0))),
        (1, dv(3.0, 0.0)),  # 1970-01-01: no real time, as OPC-UA's "null" 1601 date
    )
    (batch,) = queue.drain()
    assert batch.ts.tolist() == [1_700_000_100.0, 5000.0, 5000.0]


def test_malformed_values_are_counted_logged_once_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    rx, queue = receiver()
    t = 1_700_000_000.0
    with caplog.at_level(logging.WARNING):
        publish(rx, (1, dv("text", t)), (1, dv("more", t + 1)), (2, dv([1.0, 2.0], t)), (2, dv(None, t + 1)))
        publish(rx, (9, dv(1.0, t)), (1, dv(7, t + 2, vtype=ua.VariantType.Int32)))
    (batch,) = queue.drain()
    assert batch.tag.tolist() == [10] and batch.value.tolist() == [7.0]
    assert rx.status.errors == {"malformed": 4, "unknown_handle": 1}
    kinds = [r.kind for r in caplog.records]
    assert sorted(kinds) == ["no_value", "type_list", "type_str", "unknown_handle"]


def test_keepalive_sends_nothing_and_bad_status_change_ends_the_session() -> None:
    rx, queue = receiver()
    rx._on_publish(ua.PublishResult(SubscriptionId=1, NotificationMessage=ua.NotificationMessage()))
    assert queue.drain() == []

    async def scenario() -> SourceLost:
        rx._lost = asyncio.get_running_loop().create_future()
        note = ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout))
        msg = ua.NotificationMessage(SequenceNumber=2, NotificationData=[note])
        rx._on_publish(ua.PublishResult(SubscriptionId=1, NotificationMessage=msg))
        return await asyncio.wait_for(rx._lost, 1)

    lost = asyncio.run(scenario())
    assert lost.kind == "subscription" and "BadTimeout" in str(lost)
    assert queue.drain() == []


def test_quality_and_error_kinds() -> None:
    assert quality_of(None) == Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.GoodClamped)) == Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate)) == Quality.UNCERTAIN
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)) == Quality.BAD
    assert quality_of(ua.StatusCode(0xC0000000)) == Quality.BAD  # reserved severity 11: bad
    assert classify(ua.uaerrors.BadUserAccessDenied()) == "auth"
    assert classify(ua.uaerrors.BadIdentityTokenRejected()) == "auth"
    assert classify(ua.uaerrors.BadCertificateUriInvalid()) == "security"
    assert classify(ua.uaerrors.BadSecurityPolicyRejected()) == "security"
    assert classify(ua.UaError("No matching endpoints: 3, uri")) == "security"
    assert classify(ConnectionRefusedError()) == "connection"
    assert classify(TimeoutError()) == "timeout"
    assert classify(SourceLost("watchdog", "x")) == "watchdog"
    assert classify(ua.uaerrors.BadTooManySessions()) == "protocol"


def test_backoff_is_capped_exponential_with_jitter() -> None:
    rx, _ = receiver()
    delays = [[rx._backoff(k) for _ in range(200)] for k in range(12)]
    for k, ds in enumerate(delays):
        nominal = min(10.0, 0.5 * 2**k)
        assert min(ds) >= nominal * 0.5 and max(ds) <= nominal
        assert max(ds) - min(ds) > 0.1 * nominal  # jittered, not a fixed step
    assert max(delays[-1]) <= 10.0


def test_cancellation_swallowed_by_a_library_still_stops_run() -> None:
    """asyncua's task-cancel helper and anyio's file reads (certificates) can eat a CancelledError;
    run() must stop anyway (``Task.cancelling`` still counts the request)."""
    entered = []

    async def swallowing_configure(client: object) -> None:
        entered.append(True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1.0)
        raise ConnectionResetError("the library carried on")

    rx, _ = receiver()
    rx._configure = swallowing_configure  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(rx.run())
        while not entered:
            await asyncio.sleep(0.01)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        if not done:  # stop it for good, then fail
            rx._configure = plain_configure  # type: ignore[method-assign]
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        assert done, "run() went on after being cancelled"
        assert task.cancelled()

    async def plain_configure(client: object) -> None:
        raise ConnectionResetError("refused")

    asyncio.run(scenario())
    assert rx.attempts == 1
