"""Username/password: only the configured pair gets a session; anonymous only when no user is configured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asyncua import Client, ua
from asyncua.crypto import security_policies as sp

from tests.sim_plant.opcua.conftest import Pki, Served, run, serving

USER, PASSWORD = "operator", "s3cret-Pa55"


@pytest.fixture(scope="module")
def served(pki: Pki) -> Iterator[Served]:
    with serving(
        "oil",
        security=("None", "Basic256Sha256_SignAndEncrypt"),
        certificate=pki.server.cert,
        private_key=pki.server.key,
        username=USER,
        password=PASSWORD,
    ) as s:
        yield s


async def session_read(endpoint: str, user: str | None, password: str | None, pki: Pki | None = None) -> str:
    """Open a session (optionally on a Basic256Sha256 SignAndEncrypt channel) and read the server's state."""
    client = Client(endpoint)
    if user is not None:
        client.set_user(user)
    if password is not None:
        client.set_password(password)
    if pki is not None:
        client.application_uri = pki.client.app_uri
        await client.set_security(
            sp.SecurityPolicyBasic256Sha256,
            str(pki.client.cert),
            str(pki.client.key),
            server_certificate=str(pki.server.cert),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    async with client:
        state = await client.get_node(ua.ObjectIds.Server_ServerStatus_State).read_value()
        return ua.ServerState(state).name


def test_right_pair_is_accepted(served: Served, pki: Pki) -> None:
    assert run(session_read(served.endpoint, USER, PASSWORD)) == "Running"
    assert run(session_read(served.endpoint, USER, PASSWORD, pki)) == "Running"


@pytest.mark.parametrize(
    ("user", "password"),
    [(USER, "wrong"), ("admin", PASSWORD), (USER, ""), (USER.upper(), PASSWORD), ("admin", "admin")],
    ids=["wrong-password", "wrong-user", "empty-password", "case-differs", "admin-admin"],
)
def test_wrong_pair_is_rejected(served: Served, user: str, password: str) -> None:
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        run(session_read(served.endpoint, user, password))


def test_anonymous_is_rejected_when_a_user_is_configured(served: Served, pki: Pki) -> None:
    with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):
        run(session_read(served.endpoint, None, None))
    with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):
        run(session_read(served.endpoint, None, None, pki))


def test_password_is_not_sent_in_clear(served: Served) -> None:
    """On the None endpoint the username token is encrypted with the server certificate's policy."""
    endpoints = run(Client(served.endpoint).connect_and_get_server_endpoints())
    for e in endpoints:
        (token,) = e.UserIdentityTokens
        assert token.TokenType == ua.UserTokenType.UserName
        if e.SecurityMode == ua.MessageSecurityMode.None_:
            assert token.SecurityPolicyUri == sp.SecurityPolicyBasic256Sha256.URI


def test_no_user_configured_means_anonymous_only() -> None:
    with serving("oil") as s:
        assert run(session_read(s.endpoint, None, None)) == "Running"
        with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):
            run(session_read(s.endpoint, USER, PASSWORD))
