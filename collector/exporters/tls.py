"""TLS for the /metrics endpoint: one server context, built the same way at config check and at start.

Kept free of plantwatch imports so the config model can build a context to
prove the files load (a key that does not match its certificate is a config
error, not a failed scrape at 3 a.m.).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or later, and a verified client certificate when a client CA is given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    if client_ca_file is not None:
        context.load_verify_locations(cafile=str(client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


__all__ = ["server_context"]
