"""The OPC-UA receiver against the simulator's real OPC-UA server on 127.0.0.1.

Every test ends by checking the server's WriteLog: the receiver never writes,
calls methods or manages nodes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from collector.samples import Quality
from sim_plant.servers.base import WriteLog
from sim_plant.servers.opcua import ALL_SECURE, OpcUaPlantServer
from tests.collector.receivers.conftest_opcua import (
    NAMES,
    OIL,
    Pki,
    bounded,
    client_security,
    make_pki,
    oil_tags,
    options,
    running,
)
from tests.conftest import ROOT, free_port
from tests.sim_plant.opcua.conftest import Served, serving

USER, PASSWORD = "operator", "s3cret-Pa55"
POLICIES = ["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]
MODES = ["Sign", "SignAndEncrypt"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory)


def scan(seed: int = 1, steps: int = 2) -> np.ndarray:
    plant = OIL(seed=seed)
    plant.run(steps)
    return plant.measured()


async def publish(served: Served, ts: float, values: np.ndarray) -> None:
    await asyncio.to_thread(served.publish, ts, values)


def test_receives_every_oil_tag_with_source_timestamps() -> None:
    with serving("oil") as s:
        opts = options(s.endpoint, oil_tags(s.node_id))

        async def scenario() -> None:
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 15, "up")
                t0 = float(int(time.time())) - 10.0
                rows = [scan(seed=k) for k in range(3)]
                for k, row in enumerate(rows):
                    await publish(s, t0 + k, row)
                n = len(NAMES)

                def all_in() -> bool:
                    _, _, ts, q = run.samples()
                    return int(((ts >= t0) & (q == Quality.GOOD)).sum()) >= 3 * n

                await run.until(all_in, 10, "3 scans of every tag")
                tag, value, ts, q = run.samples()
                good = (ts >= t0) & (q == Quality.GOOD)
                assert sorted(set(tag[good].tolist())) == list(range(n))
                for k, row in enumerate(rows):
                    at = good & (ts == t0 + k)
                    assert at.sum() == n, f"scan {k}: {at.sum()} values"
                    got = np.empty(n)
                    got[tag[at]] = value[at]
                    expected = row.copy()
                    discrete = np.array([spec.discrete for spec in OIL.TAGS])
                    expected[discrete] = (expected[discrete] >= 0.5).astype(float)
                    np.testing.assert_allclose(got, expected)
                assert run.status.samples >= 3 * n
                assert run.status.errors == {}
                assert run.status.reconnects == 0
                # one batch per Publish response, not per value
                assert max(len(b) for b in run.batches) >= n
            assert not run.status.up

        bounded(scenario())
        assert len(s.writes) == 0, s.writes.attempts


def test_bad_status_is_bad_quality_and_namespace_uri_resolves() -> None:
    with serving("oil") as s:
        # columns by namespace URI (nsu=) and bare identifiers in namespace_uri: both resolved after connect
        tags = [{"name": n, "column": f"nsu={s.server.namespace_uri};s=oil.{n}"} for n in NAMES[:6]]
        tags += [{"name": n, "column": f"oil.{n}"} for n in NAMES[6:]]
        opts = options(s.endpoint, tags, namespace_uri=s.server.namespace_uri)

        async def scenario() -> None:
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 15, "up")
                t0 = float(int(time.time()))
                row = scan()
                sick = NAMES.index("FT101.FLOW_IN")
                row[sick] = np.nan
                await publish(s, t0, row)

                def arrived() -> bool:
                    _, _, ts, _ = run.samples()
                    return int((ts == t0).sum()) >= len(NAMES)

                await run.until(arrived, 10, "the scan")
                tag, value, ts, q = run.samples()
                at = ts == t0
                by_tag = dict(zip(tag[at].tolist(), q[at].tolist(), strict=True))
                assert by_tag[sick] == Quality.BAD
                assert np.isnan(value[at & (tag == sick)]).all()
                assert all(by_tag[i] == Quality.GOOD for i in range(len(NAMES)) if i != sick)
                assert run.status.errors == {}

        bounded(scenario())
        assert len(s.writes) == 0


def test_unknown_node_is_counted_and_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    with serving("oil") as s:
        tags = [*oil_tags(s.node_id), {"name": "GHOST", "column": "ns=2;s=oil.NO.SUCH.TAG"}]
        opts = options(s.endpoint, tags)

        async def scenario() -> None:
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 15, "up")
                t0 = float(int(time.time()))
                await publish(s, t0, scan())
                await run.until(lambda: int((run.samples()[2] == t0).sum()) >= len(NAMES), 10, "the scan")
                tag, _, _, q = run.samples()
                ghost = len(NAMES)
                assert (q[tag == ghost] == Quality.BAD).all() and (tag == ghost).any()
                assert run.status.errors["bad_node"] == 1

        with caplog.at_level(logging.WARNING):
            bounded(scenario())
        assert any("NO.SUCH.TAG" in str(getattr(r, "node", "")) for r in caplog.records)
        assert len(s.writes) == 0


@pytest.fixture(scope="module")
def secure_server(pki: Pki) -> Iterator[Served]:
    """One server offering every secure policy and mode (and not None), shared by the secure read tests."""
    with serving("oil", security=ALL_SECURE, certificate=pki.server.cert, private_key=pki.server.key) as s:
        yield s


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", POLICIES)
def test_secure_source_reads_over_every_policy_and_mode(
    secure_server: Served, pki: Pki, policy: str, mode: str
) -> None:
    s = secure_server
    writes_before = len(s.writes)
    security = client_security(pki.client, pki.server.cert, mode=mode, policy=policy)
    opts = options(s.endpoint, oil_tags(s.node_id), security=security)

    async def scenario() -> None:
        async with running(opts) as run:
            await run.until(lambda: run.status.up, 20, "up")  # up only on a channel of this very policy and mode
            # a scan time of its own (eighths of a second apart), since the server's last values are shared
            t0 = float(int(time.time())) + (2 * POLICIES.index(policy) + MODES.index(mode)) / 8
            await publish(s, t0, scan())
            await run.until(lambda: int((run.samples()[2] == t0).sum()) >= len(NAMES), 10, "the scan")
            assert run.status.errors == {}

    bounded(scenario())
    assert len(s.writes) == writes_before


def test_secure_source_refuses_a_server_offering_only_none(pki: Pki) -> None:
    with serving("oil") as s:  # security None only
        security = client_security(pki.client, pki.server.cert, mode="Sign")
        opts = options(s.endpoint, oil_tags(s.node_id), security=security)

        async def scenario() -> None:
            async with running(opts) as run:
                await run.until(lambda: run.status.errors["security"] >= 2, 10, "two refusals")
                assert not run.status.up
                assert run.status.samples == 0

        bounded(scenario())
        assert len(s.writes) == 0


def test_untrusted_server_certificate_is_rejected_and_retried_under_backoff(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(
        "oil", security=("Basic256Sha256_SignAndEncrypt",), certificate=pki.server.cert, private_key=pki.server.key
    ) as s:
        security = client_security(pki.client, pki.impostor.cert)  # not the certificate the server presents
        opts = options(s.endpoint, oil_tags(s.node_id), security=security, reconnect_min_s=0.5, reconnect_max_s=10)
        watched = 5.0

        async def scenario() -> tuple[int, dict[str, int]]:
            async with running(opts) as run:
                await asyncio.sleep(watched)
                assert not run.status.up
                assert run.status.samples == 0
                # ``attempts`` counts an attempt as it starts, ``errors`` once it has failed: let the one in
                # flight at the end of the window finish, so that both counters describe the same attempts.
                await run.until(lambda: run.status.errors.total() >= run.receiver.attempts, 10, "the attempt to end")
                return run.receiver.attempts, dict(run.status.errors)

        with caplog.at_level(logging.DEBUG, logger="plantwatch.test.opcua"):
            attempts, errors = bounded(scenario())
        # delays 0.25-0.5, 0.5-1, 1-2, 2-4 s: 3 to 5 attempts in 5 s; a tight loop would make hundreds
        assert 2 <= attempts <= 6, attempts
        assert errors == {"security": attempts}, errors
        failed = [r for r in caplog.records if r.getMessage() == "OPC-UA connection failed"]
        assert len(failed) == 1 and failed[0].kind == "security"  # logged once, then counted
        assert len(s.writes) == 0


def test_wrong_password_is_rejected_and_logged_right_one_works(caplog: pytest.LogCaptureFixture) -> None:
    with serving("oil", username=USER, password=PASSWORD) as s:
        wrong = options(s.endpoint, oil_tags(s.node_id), username=USER, password="wrong")
        right = options(s.endpoint, oil_tags(s.node_id), username=USER, password=PASSWORD)

        async def scenario() -> None:
            async with running(wrong) as run:
                await run.until(lambda: run.status.errors["auth"] >= 2, 10, "two refusals")
                assert not run.status.up and run.status.samples == 0
            async with running(right) as run:
                await run.until(lambda: run.status.up, 15, "up")

        with caplog.at_level(logging.INFO):
            bounded(scenario())
        failed = [r for r in caplog.records if r.getMessage() == "OPC-UA connection failed"]
        assert [r.kind for r in failed] == ["auth"]
        assert "BadUserAccessDenied" in failed[0].error
        assert PASSWORD not in caplog.text and "wrong" not in caplog.text.replace("went wrong", "")
        assert len(s.writes) == 0


def test_server_restart_on_the_same_port_down_then_up_without_double_counting() -> None:
    port = free_port()
    writes = WriteLog()

    def start() -> Served:
        return Served.started(OpcUaPlantServer("oil", OIL.TAGS, writes, port=port))

    first: Served | None = start()
    second: Served | None = None
    assert first is not None
    try:
        opts = options(first.endpoint, oil_tags(first.node_id), watchdog_s=2.0, reconnect_max_s=2.0)
        n = len(NAMES)

        async def scenario() -> None:
            nonlocal first, second
            assert first is not None
            baseline = len(asyncio.all_tasks())
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 15, "up")
                t0 = float(int(time.time()))
                await publish(first, t0, scan(seed=1))
                await run.until(lambda: int((run.samples()[2] == t0).sum()) >= n, 10, "first scan")

                await asyncio.to_thread(first.close)
                first = None
                took = await run.until(lambda: not run.status.up, 10, "down")
                assert took < 5.0
                _, _, _, q = run.samples()
                assert (q[-n:] == Quality.BAD).all()  # the tags go BAD at once

                second = await asyncio.to_thread(start)
                await run.until(lambda: run.status.up, 20, "up again")
                assert run.status.reconnects == 1
                # the restarted server re-serves the last scan (same source timestamps), then a new one
                dup_before = run.receiver.duplicates
                await publish(second, t0, scan(seed=1))
                await publish(second, t0 + 1, scan(seed=2))
                await run.until(lambda: int((run.samples()[2] == t0 + 1).sum()) >= n, 10, "new scan")
                await asyncio.sleep(0.5)
                _, _, ts, q = run.samples()
                assert int(((ts == t0) & (q == Quality.GOOD)).sum()) == n, "t0 counted once"
                assert run.receiver.duplicates - dup_before == n
                assert run.status.errors["connection"] >= 1
            # The client's tasks did not outlive it: they end during its teardown (polled, not a fixed sleep,
            # as a busy machine may take a few loop turns longer to run their last steps).
            deadline = time.monotonic() + 5.0
            while len(leftovers := [t for t in asyncio.all_tasks() if not t.done()]) > baseline:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert len(leftovers) <= baseline, leftovers

        bounded(scenario(), 90)
    finally:
        for served in (first, second):
            if served is not None:
                served.close()
    assert len(writes) == 0, writes.attempts


def test_trust_on_first_use_pins_the_first_certificate(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    with serving(
        "oil", security=("Aes256Sha256RsaPss_Sign",), certificate=pki.server.cert, private_key=pki.server.key
    ) as s:
        security = {
            "policy": "Aes256Sha256RsaPss",
            "mode": "Sign",
            "certificate": str(pki.client.cert),
            "private_key": str(pki.client.key),
            "trust_on_first_use": True,
        }
        opts = options(s.endpoint, oil_tags(s.node_id), security=security)

        async def scenario() -> bytes | None:
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 20, "up")
                return run.receiver._pinned

        with caplog.at_level(logging.WARNING):
            pinned = bounded(scenario())
        assert pinned is not None and pinned == pki.server.cert.read_bytes()
        assert any(r.getMessage().startswith("trusting the OPC-UA server certificate") for r in caplog.records)
        assert len(s.writes) == 0


def test_sigstopped_server_is_detected_within_the_watchdog_and_recovers() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "sim", "--plant", "oil", "--opcua-port", str(port), "--no-modbus"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        endpoint = ""
        while not endpoint and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("endpoint opcua "):
                endpoint = line.split()[2]
        assert endpoint, "the simulator did not start"
        uri = "urn:plantwatch:sim:oil"
        tags = [{"name": n, "column": f"nsu={uri};s=oil.{n}"} for n in NAMES]
        watchdog = 3.0
        opts = options(endpoint, tags, watchdog_s=watchdog, reconnect_max_s=2.0)

        async def scenario() -> float:
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 20, "up")
                before = run.status.samples
                await run.until(lambda: run.status.samples >= before + 2 * len(NAMES), 10, "live data")
                os.kill(proc.pid, signal.SIGSTOP)
                try:
                    hung = await run.until(lambda: not run.status.up, 3 * watchdog, "down")
                    assert run.status.errors["watchdog"] >= 1, run.status.errors
                    await asyncio.sleep(1.0)
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
                await run.until(lambda: run.status.up, 30, "up again")
                assert run.status.reconnects == 1
                after = run.status.samples
                await run.until(lambda: run.status.samples >= after + 2 * len(NAMES), 10, "data again")
                return hung

        hung = bounded(scenario(), 90)
        assert hung <= watchdog + 0.5, f"hang detected after {hung:.2f} s"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
    assert "write attempts by clients: 0 " in out, out[-500:]


def test_deadband_drops_a_move_inside_it_and_delivers_one_outside() -> None:
    deadband = 5.0
    level, flow = NAMES.index("TK101.LEVEL"), NAMES.index("FT101.FLOW_IN")
    assert level < flow  # written in this order by one publish, so the level would come first if it came at all
    with serving("oil") as s:
        opts = options(s.endpoint, oil_tags(s.node_id), deadband_abs=deadband)

        async def scenario() -> None:
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 15, "up")  # subscribed before the first publish
                t0 = float(int(time.time()))
                row = scan()
                await publish(s, t0, row)  # every tag leaves BadWaitingForInitialData: reported, whatever the move
                await run.until(lambda: int((run.samples()[2] == t0).sum()) >= len(NAMES), 10, "the first scan")
                moved = row.copy()
                moved[level] += deadband / 2
                moved[flow] += deadband * 2
                await publish(s, t0 + 1, moved)
                await run.until(lambda: bool((run.samples()[2] == t0 + 1).any()), 10, "the move outside")
                tag, value, ts, _ = run.samples()
                at = ts == t0 + 1
                assert tag[at].tolist() == [flow] and value[at].tolist() == [moved[flow]]
                assert run.status.errors == {}

        bounded(scenario())
        assert len(s.writes) == 0


def test_numeric_node_ids_of_namespace_0_deliver_values() -> None:
    with serving("oil") as s:
        tags = [
            {"name": "SERVICE_LEVEL", "column": "i=2267"},  # Server.ServiceLevel, a Byte: 255 is full service
            {"name": "SERVER_STATE", "column": "ns=0;i=2259"},  # Server.ServerStatus.State, an Int32: 0 is Running
            {"name": NAMES[0], "column": s.node_id(NAMES[0])},
        ]
        opts = options(s.endpoint, tags)

        async def scenario() -> None:
            async with running(opts) as run:
                await run.until(lambda: run.status.up, 15, "up")

                def both_good() -> bool:
                    tag, _, _, q = run.samples()
                    return {0, 1} <= set(tag[q == Quality.GOOD].tolist())

                await run.until(both_good, 10, "a good value of each numeric node")
                tag, value, _, q = run.samples()
                assert set(value[(tag == 0) & (q == Quality.GOOD)].tolist()) == {255.0}
                assert set(value[(tag == 1) & (q == Quality.GOOD)].tolist()) == {0.0}
                assert run.status.errors == {}

        bounded(scenario())
        assert len(s.writes) == 0
