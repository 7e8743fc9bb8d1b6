"""Modbus/TLS against the simulator's server speaking TLS on 127.0.0.1: verified certificates only.

A certificate the configured CA did not sign, an expired one and one for another name are each refused at
the handshake, counted by kind, and retried under the capped backoff (a handful of attempts in two
seconds, not a tight loop); no value ever comes through such a connection.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import pytest

from collector.receivers.modbus import ModbusOptions
from collector.samples import Quality
from sim_plant.servers.certs import TlsCa, make_tls_ca, make_tls_cert, server_tls_context
from tests.collector.receivers.conftest_modbus import (
    WRITES,
    Running,
    make_receiver,
    options,
    plant_server,
    plant_values,
    register_spec,
    run_bounded,
)

WINDOW_S = 2.0
BACKOFF = {"reconnect_min_s": 0.2, "reconnect_max_s": 0.4, "timeout_s": 1.0}
# Delays are drawn in [d/2, d] with d >= 0.2 from the second attempt: at most ~1 + 2.0 / 0.1 attempts in the window.
MAX_ATTEMPTS = 12
# A device refusing our certificate after a TLS 1.3 handshake: the refusal is seen on the first read,
# so attempts come at the backoff's pace alone (d >= 0.2, drawn in [d/2, d]): at most ~1 + 2.0 / 0.1.
MAX_REFUSALS = 21


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder: Path = tmp_path_factory.mktemp("modbus-tls")
    ca = make_tls_ca(folder, "plant-ca")
    rogue = make_tls_ca(folder, "rogue-ca")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    return {
        "ca": ca,
        "good": make_tls_cert(folder, "plc", ca),
        "untrusted": make_tls_cert(folder, "plc-rogue", rogue),
        "expired": make_tls_cert(folder, "plc-expired", ca, days=1, not_before=past),
        "other_name": make_tls_cert(folder, "plc-other", ca, hostnames=["plc7.example.invalid"], ips=[]),
        "client": make_tls_cert(folder, "plantwatch", ca, client=True, hostnames=["plantwatch"], ips=[]),
        "intruder": make_tls_cert(folder, "intruder", rogue, client=True, hostnames=["intruder"], ips=[]),
    }


def tls_options(port: int, regs: list[dict[str, Any]], ca: TlsCa, client: Any, **tls: Any) -> ModbusOptions:
    doc = {"ca_file": str(ca.cert), "cert_file": str(client.cert), "key_file": str(client.key), **tls}
    return options(port, regs, tls=doc, **BACKOFF)


def test_a_verified_device_is_read_over_tls_with_a_client_certificate(pki: dict[str, Any]) -> None:
    async def scenario() -> None:
        context = server_tls_context(pki["good"], client_ca=pki["ca"].cert)  # the device demands our certificate
        async with plant_server(values=plant_values(), tls=context) as server:
            assert server.endpoint.startswith("modbus-tls://")
            regs = [register_spec(e) for e in server.map if e.table == "holding"]
            running = Running(make_receiver(tls_options(server.port, regs, pki["ca"], pki["client"])))
            try:
                batch = await running.wait_for_batch(
                    lambda b: len(b) == len(regs) and bool((b.quality == Quality.GOOD).all()), 10.0, "a good poll"
                )
                assert batch.value.tolist() == pytest.approx(
                    [v for v, s in zip(plant_values().tolist(), server.tags, strict=True) if not s.discrete], rel=1e-6
                )
                assert running.receiver.status.up and running.receiver.connections == 1
                assert not running.receiver.status.errors, running.receiver.status.errors
            finally:
                await running.stop()
        assert len(WRITES) == 0, WRITES.attempts

    run_bounded(scenario)


def test_without_the_client_certificate_the_device_refuses(pki: dict[str, Any]) -> None:
    """The device drops a client that shows no certificate; with TLS 1.3 that happens after the client's
    handshake, at the first read: the source stays down, retries, and never gets a value."""

    async def scenario() -> None:
        context = server_tls_context(pki["good"], client_ca=pki["ca"].cert)
        async with plant_server(values=plant_values(), tls=context) as server:
            regs = [register_spec(e) for e in server.map if e.table == "holding"]
            opts = options(server.port, regs, tls={"ca_file": str(pki["ca"].cert)}, **BACKOFF)
            running = Running(make_receiver(opts))
            try:
                status = running.receiver.status
                await running.wait_for(lambda: sum(status.errors.values()) >= 2, 15.0, "a second refused attempt")
                assert not status.up and status.samples == 0
                assert status.reconnects == 0, "a refused attempt is not a reconnect"
                assert running.receiver.connections >= 2, "the source retried on a fresh connection"
                assert server.total_reads == 0
            finally:
                await running.stop()
        assert not any(bool((b.quality == Quality.GOOD).any()) for b in running.batches)

    run_bounded(scenario)


@pytest.mark.parametrize(
    ("served", "kind", "tls"),
    [
        ("untrusted", "tls_untrusted", {}),
        ("expired", "tls_untrusted", {}),
        ("other_name", "tls_hostname", {}),
    ],
)
def test_a_refused_certificate_is_counted_and_retried_under_backoff(
    pki: dict[str, Any], served: str, kind: str, tls: dict[str, Any]
) -> None:
    async def scenario() -> None:
        async with plant_server(values=plant_values(), tls=server_tls_context(pki[served])) as server:
            regs = [register_spec(e) for e in server.map if e.table == "holding"]
            running = Running(make_receiver(tls_options(server.port, regs, pki["ca"], pki["client"], **tls)))
            try:
                await running.wait_for(lambda: running.receiver.status.errors[kind] >= 1, 10.0, f"a {kind} error")
                first = running.receiver.status.errors[kind]
                await asyncio.sleep(WINDOW_S)
                running.drain()
                attempts = running.receiver.status.errors[kind] - first
                status = running.receiver.status
                assert 2 <= attempts <= MAX_ATTEMPTS, f"{attempts} attempts in {WINDOW_S} s: {status.errors}"
                assert set(status.errors) == {kind}, status.errors  # counted by its own kind, nothing else
                assert not status.up and running.receiver.connections == 0 and running.receiver.polls == 0
                assert server.total_reads == 0  # not a single request went over a refused channel
                assert running.batches and all(bool((b.quality == Quality.BAD).all()) for b in running.batches)
            finally:
                await running.stop()

    run_bounded(scenario)


def test_verify_hostname_off_still_verifies_the_chain(pki: dict[str, Any]) -> None:
    """For a device known by IP whose certificate names only its DNS name; the CA check stays."""

    async def scenario() -> None:
        async with plant_server(values=plant_values(), tls=server_tls_context(pki["other_name"])) as server:
            regs = [register_spec(e) for e in server.map if e.table == "holding"]
            opts = tls_options(server.port, regs, pki["ca"], pki["client"], verify_hostname=False)
            running = Running(make_receiver(opts))
            try:
                await running.wait_for(lambda: running.receiver.status.up, 10.0, "up without the name check")
            finally:
                await running.stop()
        async with plant_server(values=plant_values(), tls=server_tls_context(pki["untrusted"])) as server:
            opts = tls_options(server.port, regs, pki["ca"], pki["client"], verify_hostname=False)
            running = Running(make_receiver(opts))
            try:
                await running.wait_for(
                    lambda: running.receiver.status.errors["tls_untrusted"] >= 2, 10.0, "the chain still refused"
                )
                assert running.receiver.connections == 0
            finally:
                await running.stop()

    run_bounded(scenario)


def test_unusable_tls_files_are_rejected_or_counted(tmp_path: Path, pki: dict[str, Any]) -> None:
    regs = [{"tag": "A", "table": "holding", "address": 0, "type": "float32"}]
    with pytest.raises(ValueError, match="no such file"):
        options(1, regs, tls={"ca_file": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match="go together"):
        options(1, regs, tls={"cert_file": str(pki["client"].cert)})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")

    async def scenario() -> None:
        running = Running(make_receiver(options(1, regs, tls={"ca_file": str(garbage)}, **BACKOFF)))
        try:
            await running.wait_for(lambda: running.receiver.status.errors["tls_config"] >= 2, 10.0, "tls_config")
            assert not running.receiver.status.up
        finally:
            await running.stop()

    run_bounded(scenario)


# -- a device refusing our client certificate ------------------------------------------------
# With TLS 1.3 the device checks the client's certificate after the client's handshake has returned:
# the refusal arrives as an alert on the first read, and is counted as ``tls_client_refused``, not ``timeout``.


@pytest.mark.parametrize("shown", ["none", "untrusted"])
def test_a_refused_client_certificate_is_its_own_kind_and_retried_under_backoff(
    pki: dict[str, Any], shown: str
) -> None:
    tls: dict[str, Any] = {"ca_file": str(pki["ca"].cert)}
    if shown == "untrusted":
        tls |= {"cert_file": str(pki["intruder"].cert), "key_file": str(pki["intruder"].key)}

    async def scenario() -> None:
        context = server_tls_context(pki["good"], client_ca=pki["ca"].cert)  # the device demands our certificate
        async with plant_server(values=plant_values(), tls=context) as server:
            regs = [register_spec(e) for e in server.map if e.table == "holding"]
            running = Running(make_receiver(options(server.port, regs, tls=tls, **BACKOFF)))
            try:
                status = running.receiver.status
                # Before: each attempt waited out timeout_s and was counted as timeout + no_response.
                await running.wait_for(lambda: status.errors["tls_client_refused"] >= 1, 10.0, "a refusal")
                first = status.errors["tls_client_refused"]
                await asyncio.sleep(WINDOW_S)
                running.drain()
                attempts = status.errors["tls_client_refused"] - first
                assert 2 <= attempts <= MAX_REFUSALS, f"{attempts} attempts in {WINDOW_S} s: {status.errors}"
                assert set(status.errors) == {"tls_client_refused"}, status.errors
                assert not status.up and status.samples == 0
                assert server.total_reads == 0  # the device never served a request over the refused link
                assert running.batches and all(bool((b.quality == Quality.BAD).all()) for b in running.batches)
            finally:
                await running.stop()

    run_bounded(scenario)
