"""Secure endpoints: signed and encrypted channels with generated certificates; unsecured clients refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asyncua import Client, ua
from asyncua.crypto import security_policies as sp
from asyncua.crypto.uacrypto import der_from_x509, load_certificate

from sim_plant.plants import PLANTS
from sim_plant.servers.opcua import ALL_SECURE
from tests.sim_plant.opcua.conftest import Pki, Served, run, serving

OIL = PLANTS["oil"]
SIGN = ua.MessageSecurityMode.Sign
ENCRYPT = ua.MessageSecurityMode.SignAndEncrypt
POLICIES = {
    "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": sp.SecurityPolicyAes256Sha256RsaPss,
}
COMBOS = [(name, mode) for name in POLICIES for mode in (SIGN, ENCRYPT)]


@pytest.fixture(scope="module")
def served(pki: Pki) -> Iterator[Served]:
    with serving("oil", security=ALL_SECURE, certificate=pki.server.cert, private_key=pki.server.key) as s:
        plant = OIL(seed=9)
        plant.run(2)
        s.publish(42.0, plant.measured())
        yield s


async def secure_client(served: Served, pki: Pki, policy: str, mode: ua.MessageSecurityMode) -> Client:
    client = Client(served.endpoint)
    client.application_uri = pki.client.app_uri
    await client.set_security(
        POLICIES[policy], str(pki.client.cert), str(pki.client.key), server_certificate=str(pki.server.cert), mode=mode
    )
    return client


@pytest.mark.parametrize(("policy", "mode"), COMBOS, ids=[f"{p}-{m.name}" for p, m in COMBOS])
def test_secure_client_reads(served: Served, pki: Pki, policy: str, mode: ua.MessageSecurityMode) -> None:
    """Includes Basic256Sha256 SignAndEncrypt and Aes256Sha256RsaPss Sign."""

    async def scenario() -> float:
        client = await secure_client(served, pki, policy, mode)
        async with client:
            assert client.security_policy.Mode == mode
            assert client.security_policy.URI == POLICIES[policy].URI
            return await client.get_node(served.node_id("TK101.LEVEL")).read_value()

    value = run(scenario())
    plant = OIL(seed=9)
    plant.run(2)
    assert value == plant.measured()[OIL.tag_names().index("TK101.LEVEL")]


def test_endpoints_offer_only_the_configured_secure_policies(served: Served, pki: Pki) -> None:
    """Discovery still works on an unsecured channel (GetEndpoints must), and lists no None endpoint."""
    endpoints = run(Client(served.endpoint).connect_and_get_server_endpoints())
    offered = {(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints}
    assert offered == {(POLICIES[p].URI, m) for p, m in COMBOS}
    cert = run(load_certificate(pki.server.cert))
    for e in endpoints:
        assert e.EndpointUrl == served.endpoint  # the bound port, not the requested 0
        assert e.ServerCertificate == der_from_x509(cert)
        assert [t.TokenType for t in e.UserIdentityTokens] == [ua.UserTokenType.Anonymous]


def test_client_without_security_is_refused(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # A well-behaved asyncua client gives up itself: no None endpoint is offered.
    with pytest.raises(ua.UaError, match="No matching endpoints"):
        run(Client(served.endpoint).connect())

    # A client that ignores the endpoint list and opens an unsecured session anyway is refused by
    # the server (asyncua alone would serve it: it accepts a None channel for discovery).
    def any_endpoint(endpoints: object, mode: ua.MessageSecurityMode, uri: str) -> ua.EndpointDescription:
        token = ua.UserTokenPolicy(PolicyId="anonymous", TokenType=ua.UserTokenType.Anonymous)
        return ua.EndpointDescription(
            EndpointUrl=served.endpoint, SecurityMode=mode, SecurityPolicyUri=uri, UserIdentityTokens=[token]
        )

    monkeypatch.setattr(Client, "find_endpoint", staticmethod(any_endpoint))

    async def rogue() -> object:
        client = Client(served.endpoint)
        try:
            await client.connect()
        except BaseException:
            client.disconnect_socket()
            raise
        try:
            return await client.get_node(served.node_id("TK101.LEVEL")).read_value()
        finally:
            await client.disconnect()

    with pytest.raises(ua.uaerrors.BadSecurityPolicyRejected):
        run(rogue())


def test_secure_client_write_is_counted_and_refused(served: Served, pki: Pki) -> None:
    before = len(served.writes)

    async def scenario() -> tuple[float, float]:
        client = await secure_client(served, pki, "Aes256Sha256RsaPss", ENCRYPT)
        async with client:
            node = client.get_node(served.node_id("LIC101.SP"))
            was = await node.read_value()
            with pytest.raises(ua.uaerrors.BadNotWritable):
                await node.write_value(ua.Variant(9.0, ua.VariantType.Double))
            return was, await node.read_value()

    was, now = run(scenario())
    assert was == now == 5.0
    assert [(a.kind, a.target) for a in served.writes.attempts[before:]] == [("Write", served.node_id("LIC101.SP"))]
