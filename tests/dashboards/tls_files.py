"""Certificates for /metrics over TLS, made with the project's own certificate helper.

``sim_plant.servers.certs`` writes self-signed certificates (DER) with the SANs
loopback needs; Python's ssl and Prometheus read PEM, so this converts. A
self-signed client certificate is its own CA: naming it as ``client_ca_file``
lets exactly that client in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sim_plant.servers.certs import make_app_cert

SERVER_NAME = "plantwatch.example.internal"


@dataclass(frozen=True)
class Pair:
    cert: Path  # PEM
    key: Path  # PEM


def _pem_pair(directory: Path, stem: str, *, server: bool) -> Pair:
    files = make_app_cert(
        directory, stem, f"urn:plantwatch:test:{stem}", server=server, hostnames=["localhost", SERVER_NAME]
    )
    pem = directory / f"{stem}-cert.pem"
    pem.write_bytes(x509.load_der_x509_certificate(files.cert.read_bytes()).public_bytes(Encoding.PEM))
    return Pair(cert=pem, key=files.key)


@dataclass(frozen=True)
class TlsFiles:
    server: Pair  # plantwatch's certificate, also the CA Prometheus trusts
    client: Pair  # Prometheus' client certificate, also plantwatch's client CA
    stranger: Pair  # a client certificate nobody trusts


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    return TlsFiles(
        server=_pem_pair(directory, "plantwatch", server=True),
        client=_pem_pair(directory, "prometheus", server=False),
        stranger=_pem_pair(directory, "stranger", server=False),
    )
