"""Certificates for the simulator's servers and test clients: OPC-UA application certificates, TLS ones.

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

For Modbus/TLS (and any other plain TLS endpoint) there is a small X.509 PKI:
``make_tls_ca`` and ``make_tls_cert`` (P-256 keys, PEM files; a validity
window in the past gives an expired certificate), and ``server_tls_context``
for the server side, optionally requiring client certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
    not_before: datetime.datetime | None = None,
) -> CertFiles:
    """Write ``<stem>.der`` and ``<stem>.pem`` into ``directory``: a self-signed application certificate.

    ``server`` selects the extended key usage (serverAuth, or clientAuth for a
    client). ``hostnames`` default to ``localhost`` and this machine's name (the
    name asyncua checks a certificate against); ``ips`` go in as IP SANs.
    ``not_before`` moves the validity window (``days`` long) to start then:
    in the past with a short ``days``, the certificate is expired. Existing
    files of the same stem are overwritten.
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
    if not_before is not None:  # the same certificate, re-signed with another validity window
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(cert.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(not_before)
            .not_valid_after(not_before + datetime.timedelta(days=days))
        )
        for extension in cert.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        cert = builder.sign(key, hashes.SHA256())
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
    not_before: datetime.datetime | None = None,
    app_uri: str | None = None,
    stem: str | None = None,
) -> CertFiles:
    """The certificate of the simulator's OPC-UA server for ``plant_name`` (application URI ``server_app_uri``).

    ``app_uri`` puts another URI in it (one the server does not announce: a URI mismatch), ``not_before``
    and ``days`` another validity window (an expired certificate), ``stem`` another file name.
    """
    return make_app_cert(
        directory,
        stem or f"plantwatch-sim-{plant_name}",
        app_uri or server_app_uri(plant_name),
        server=True,
        hostnames=hostnames,
        ips=ips,
        days=days,
        not_before=not_before,
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


# -- plain TLS (Modbus/TLS) ------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsCa:
    """A certificate authority: its certificate as a PEM file (the trust anchor), and what it signs with."""

    cert: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class TlsPair:
    """A certificate (PEM) signed by a ``TlsCa`` and its private key (PEM, owner-only)."""

    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def make_tls_ca(directory: str | os.PathLike[str], name: str = "plantwatch-test-ca", days: int = DEFAULT_DAYS) -> TlsCa:
    """A self-signed CA written as ``<name>.pem`` into ``directory``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return TlsCa(cert=path, certificate=cert, key=key)


def make_tls_cert(
    directory: str | os.PathLike[str],
    stem: str,
    ca: TlsCa,
    *,
    hostnames: Iterable[str] = ("localhost",),
    ips: Iterable[str] = ("127.0.0.1",),
    client: bool = False,
    days: int = DEFAULT_DAYS,
    not_before: datetime.datetime | None = None,
) -> TlsPair:
    """``<stem>.pem`` and ``<stem>.key`` in ``directory``: a server (or ``client``) certificate signed by ``ca``.

    The names go in the subjectAltName (DNS names and IP addresses), which is what TLS clients check.
    ``not_before`` moves the validity window: ``now - 30 days`` with ``days=1`` is an expired certificate.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(hostnames)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else stem)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    _write_key(key_path, key)
    return TlsPair(cert=cert_path, key=key_path)


def server_tls_context(pair: TlsPair, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``pair``; with ``client_ca``, clients must show a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(pair.cert), str(pair.key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


__all__ = [
    "CLIENT_APP_URI",
    "CertFiles",
    "TlsCa",
    "TlsPair",
    "make_app_cert",
    "make_client_cert",
    "make_server_cert",
    "make_tls_ca",
    "make_tls_cert",
    "server_app_uri",
    "server_tls_context",
]
