"""A Modbus/TLS device that refuses our client certificate is counted as ``tls_client_refused``, not ``timeout``.

With TLS 1.3 the device checks the client's certificate after the client's handshake has returned: the
refusal arrives as an alert on the first read. The simulator's TLS server demands a certificate signed by
the plant CA; the receiver shows none, or one signed by another CA. Either way the source stays down,
the refusal is counted under its own kind and retried under the capped backoff, and no value comes through.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from collector.samples import Quality
from sim_plant.servers.certs import make_tls_ca, make_tls_cert, server_tls_context
from tests.collector.receivers.conftest_modbus import (
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
MAX_ATTEMPTS = 21


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder: Path = tmp_path_factory.mktemp("modbus-tls-client")
    ca = make_tls_ca(folder, "plant-ca")
    rogue = make_tls_ca(folder, "rogue-ca")
    return {
        "ca": ca,
        "device": make_tls_cert(folder, "plc", ca),
        "intruder": make_tls_cert(folder, "intruder", rogue, client=True, hostnames=["intruder"], ips=[]),
    }


@pytest.mark.parametrize("shown", ["none", "untrusted"])
def test_a_refused_client_certificate_is_its_own_kind_and_retried_under_backoff(
    pki: dict[str, Any], shown: str
) -> None:
    tls: dict[str, Any] = {"ca_file": str(pki["ca"].cert)}
    if shown == "untrusted":
        tls |= {"cert_file": str(pki["intruder"].cert), "key_file": str(pki["intruder"].key)}

    async def scenario() -> None:
        context = server_tls_context(pki["device"], client_ca=pki["ca"].cert)  # the device demands our certificate
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
                assert 2 <= attempts <= MAX_ATTEMPTS, f"{attempts} attempts in {WINDOW_S} s: {status.errors}"
                assert set(status.errors) == {"tls_client_refused"}, status.errors
                assert not status.up and status.samples == 0
                assert server.total_reads == 0  # the device never served a request over the refused link
                assert running.batches and all(bool((b.quality == Quality.BAD).all()) for b in running.batches)
            finally:
                await running.stop()

    run_bounded(scenario)
