"""OPC-UA server certificates that are trusted by the configuration but still wrong: expired, or naming
another application URI. asyncua's CertificateValidator (validity dates, URI) refuses them at CreateSession;
the source stays down, counts ``security``, logs the reason once and retries under backoff.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path

import pytest

from sim_plant.servers.certs import CertFiles, make_client_cert, make_server_cert
from tests.collector.receivers.conftest_opcua import bounded, client_security, oil_tags, options, running
from tests.sim_plant.opcua.conftest import serving

WATCHED_S = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles]:
    folder: Path = tmp_path_factory.mktemp("opcua-bad-certs")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    return {
        "expired": make_server_cert(folder, "oil", days=2, not_before=past, stem="expired"),
        "other_uri": make_server_cert(folder, "oil", app_uri="urn:plantwatch:sim:someone-else", stem="other-uri"),
        "client": make_client_cert(folder),
    }


@pytest.mark.parametrize(("served", "reason"), [("expired", "TimeInvalid"), ("other_uri", "UriInvalid")])
def test_a_wrong_server_certificate_is_refused_and_retried_under_backoff(
    certs: dict[str, CertFiles], served: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    server_cert = certs[served]
    with serving(
        "oil", security=("Basic256Sha256_SignAndEncrypt",), certificate=server_cert.cert, private_key=server_cert.key
    ) as s:
        # The very certificate the server presents: trusted.
        security = client_security(certs["client"], server_cert.cert)
        opts = options(s.endpoint, oil_tags(s.node_id), security=security, reconnect_min_s=0.5, reconnect_max_s=10)

        async def scenario() -> tuple[int, dict[str, int], int]:
            async with running(opts) as run:
                await asyncio.sleep(WATCHED_S)
                assert not run.status.up
                # ``attempts`` counts an attempt as it starts, ``errors`` once it has failed: let the one in
                # flight at the end of the window finish, so that both counters describe the same attempts.
                await run.until(lambda: run.status.errors.total() >= run.receiver.attempts, 10, "the attempt to end")
                return run.receiver.attempts, dict(run.status.errors), run.status.samples

        with caplog.at_level(logging.DEBUG, logger="plantwatch.test.opcua"):
            attempts, errors, samples = bounded(scenario())
        # delays 0.25-0.5, 0.5-1, 1-2, 2-4 s: 3 to 5 attempts in 5 s; a tight loop would make hundreds
        assert 2 <= attempts <= 6, attempts
        assert errors == {"security": attempts}, errors
        assert samples == 0
        failed = [r for r in caplog.records if r.getMessage() == "OPC-UA connection failed"]
        assert len(failed) == 1 and failed[0].kind == "security", failed  # logged once, then counted
        assert reason in failed[0].error, failed[0].error
        assert len(s.writes) == 0
