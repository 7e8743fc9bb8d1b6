"""Options, ports and the start/stop contract of the OPC-UA plant server."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import pytest
from asyncua import Client

from sim_plant.plants import PLANTS
from sim_plant.servers.base import PlantServer, WriteLog
from sim_plant.servers.certs import make_client_cert, make_server_cert, server_app_uri
from sim_plant.servers.opcua import OpcUaPlantServer, unit_id
from tests.conftest import free_port
from tests.sim_plant.opcua.conftest import run, serving

OIL = PLANTS["oil"]


def make(**options: object) -> OpcUaPlantServer:
    return OpcUaPlantServer("oil", OIL.TAGS, WriteLog(), **options)  # type: ignore[arg-type]


def test_is_a_plant_server() -> None:
    server = make()
    assert isinstance(server, PlantServer)
    assert server.protocol == "opcua"
    assert server.endpoint == "opc.tcp://127.0.0.1:0/plantwatch/oil"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security": ()}, "at least one"),
        ({"security": ("Basic128Rsa15_Sign",)}, "unknown policies"),
        ({"security": ("Basic256Sha256_Sign",)}, "need certificate"),
        ({"username": "operator"}, "go together"),
        ({"password": "x"}, "go together"),
        ({"bad_status": 0}, "Bad status"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**options)


def test_stop_is_safe_without_start_and_twice() -> None:
    server = make()

    async def scenario() -> None:
        await server.stop()
        with pytest.raises(RuntimeError, match="before start"):
            await server.publish(0.0, np.zeros(len(OIL.TAGS)))
        await server.start()
        try:
            with pytest.raises(ValueError, match="expected 12 values"):
                await server.publish(0.0, np.zeros(3))
        finally:
            await server.stop()
            await server.stop()

    run(scenario())


def test_given_port_and_loopback_bind() -> None:
    port = free_port()
    with serving("oil", port=port) as s:
        assert s.server.port == port
        assert s.endpoint == f"opc.tcp://127.0.0.1:{port}/plantwatch/oil"
        endpoints = run(Client(s.endpoint).connect_and_get_server_endpoints())
        assert {e.EndpointUrl for e in endpoints} == {s.endpoint}
        # bound to loopback only (asyncua's listening sockets; private attributes, read only here)
        bserver = s.server._server.bserver  # type: ignore[union-attr]
        names = [sock.getsockname() for sock in bserver._server.sockets]
        assert names == [("127.0.0.1", port)]
        assert s.server.startup_seconds is not None and 0.0 < s.server.startup_seconds < 30.0


def test_two_plants_side_by_side_have_their_own_namespaces() -> None:
    with serving("oil") as oil, serving("chemical") as chem:

        async def scenario() -> tuple[list[str], list[str]]:
            async with Client(oil.endpoint) as a, Client(chem.endpoint) as b:
                return await a.get_namespace_array(), await b.get_namespace_array()

        ns_oil, ns_chem = run(scenario())
    assert "urn:plantwatch:sim:oil" in ns_oil and "urn:plantwatch:sim:chemical" not in ns_oil
    assert "urn:plantwatch:sim:chemical" in ns_chem
    assert ns_oil[1] == server_app_uri("oil")


def test_certificates(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    server = make_server_cert(tmp_path, "oil")
    client = make_client_cert(tmp_path)
    for files, usage in ((server, ExtendedKeyUsageOID.SERVER_AUTH), (client, ExtendedKeyUsageOID.CLIENT_AUTH)):
        cert = x509.load_der_x509_certificate(files.cert.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert files.app_uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert usage in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert files.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert files.key.stat().st_mode & 0o077 == 0
    assert server.app_uri == "urn:plantwatch:sim:oil:server"


def test_unit_id_packs_the_common_code() -> None:
    assert unit_id("CEL") == 4408652
    assert unit_id("P1") == (ord("P") << 8) | ord("1")


def test_start_failure_leaves_nothing_running() -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        server = make(port=port)

        async def scenario() -> None:
            with pytest.raises(OSError):
                await server.start()
            await server.stop()
            await asyncio.sleep(0)

        run(scenario())
