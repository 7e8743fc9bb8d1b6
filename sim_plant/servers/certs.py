"""Self-signed OPC-UA application instance certificates for the simulator's server and for test clients.

OPC-UA identifies an application by its certificate: the certificate's
SubjectAltName must carry the application URI the application announces
(a mismatch is logged by asyncua and rejected by stricter stacks) and the host
names it is reached by. ``asyncua.crypto.cert_gen`` builds such certificates
(OPC 10000-6 6.2.2); this module only picks the names and writes the files:
the certificate as DER, the key as unencrypted PKCS#8 PEM readable by its owner
only. The files are what ``asyncua.Server.load_certificate`` /
``load_private_key`` and ``asyncua.Client.set_security`` take.

Generating a 2048-bit RSA key costs tens of milliseconds; tests make one
server and one client pair per session, not one per test.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

DEFAULT_DAYS = 365
CLIENT_APP_URI = "urn:plantwatch:client"


def server_app_uri(plant_name: str) -> str:
    """The application URI of the simulator's OPC-UA server for one plant (not its namespace URI)."""
    return f"urn:plantwatch:sim:{plant_name}:server"


@dataclass(frozen=True)
class CertFiles:
    """A certificate (DER) and its private key (PEM) on disk, and the application URI the certificate names."""

    cert: Path
    key: Path
    app_uri: str


def make_app_cert(
    directory: str | os.PathLike[str],
    stem: str,
    app_uri: str,
    *,
    server: bool,
    hostnames: Iterable[str] | None = None,
    ips: Iterable[str] = ("127.0.0.1",),
    days: int = DEFAULT_DAYS,
) -> CertFiles:
    """Write ``<stem>.der`` and ``<stem>.pem`` into ``directory``: a self-signed application certificate.

    ``server`` selects the extended key usage (serverAuth, or clientAuth for a
    client). ``hostnames`` default to ``localhost`` and this machine's name (the
    name asyncua checks a certificate against); ``ips`` go in as IP SANs.
    Existing files of the same stem are overwritten.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(hostnames) if hostnames is not None else ["localhost", socket.gethostname()]
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(app_uri)]
    sans += [x509.DNSName(name) for name in dict.fromkeys(names) if name]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    usage = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]

    key = generate_private_key()
    cert = generate_self_signed_app_certificate(
        key, stem, {"organizationName": "plantwatch"}, sans, extended=usage, days=days
    )
    cert_path = folder / f"{stem}.der"
    key_path = folder / f"{stem}.pem"
    cert_path.write_bytes(cert.public_bytes(encoding=Encoding.DER))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(dump_private_key_as_pem(key))
    return CertFiles(cert=cert_path, key=key_path, app_uri=app_uri)


def make_server_cert(
    directory: str | os.PathLike[str],
    plant_name: str,
    *,
    hostnames: Iterable[str] | None = None,
    ips: Iterable[str] = ("127.0.0.1",),
    days: int = DEFAULT_DAYS,
) -> CertFiles:
    """The certificate of the simulator's OPC-UA server for ``plant_name`` (application URI ``server_app_uri``)."""
    return make_app_cert(
        directory,
        f"plantwatch-sim-{plant_name}",
        server_app_uri(plant_name),
        server=True,
        hostnames=hostnames,
        ips=ips,
        days=days,
    )


def make_client_cert(
    directory: str | os.PathLike[str],
    stem: str = "plantwatch-client",
    app_uri: str = CLIENT_APP_URI,
    *,
    hostnames: Iterable[str] | None = None,
    ips: Iterable[str] = ("127.0.0.1",),
    days: int = DEFAULT_DAYS,
) -> CertFiles:
    """A client certificate; set ``Client.application_uri`` to ``app_uri`` when using it."""
    return make_app_cert(directory, stem, app_uri, server=False, hostnames=hostnames, ips=ips, days=days)


__all__ = [
    "CLIENT_APP_URI",
    "CertFiles",
    "make_app_cert",
    "make_client_cert",
    "make_server_cert",
    "server_app_uri",
]
