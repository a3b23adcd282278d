"""How the CLI trusts a Basalt server's TLS certificate.

Normally through a CA bundle: ``$BASALT_CA_BUNDLE``, else ``$AWS_CA_BUNDLE``, else
the system's. A server's own jobs (basalt/volume_jobs.py) run the CLI against the
server itself on a loopback address, where its certificate (issued for a public
name, by whatever CA) would not verify; they set ``$BASALT_TLS_PINNED`` to the
server's certificate file instead, and that exact certificate is trusted
whatever name it was issued for (OpenSSL's partial-chain verification with the
certificate itself as the only trust anchor). Only the holder of its private key
can present it, so this trusts the server and nothing else.
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.parse

PINNED = "BASALT_TLS_PINNED"


def ca_bundle() -> str | None:
    """The CA bundle file the environment names, if any."""
    return os.environ.get("BASALT_CA_BUNDLE") or os.environ.get("AWS_CA_BUNDLE")


def pinned_file() -> str | None:
    return os.environ.get(PINNED) or None


def pinned_context(cert_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly the certificate(s) in ``cert_pem``."""
    context = ssl.create_default_context(cadata=cert_pem)
    context.check_hostname = False  # the certificate is the identity, not a name
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def client_context() -> ssl.SSLContext | None:
    """The context HTTPS clients use (None: Python's default, the system's CAs)."""
    pinned = pinned_file()
    if pinned:
        with open(pinned) as f:
            return pinned_context(f.read())
    ca = ca_bundle()
    return ssl.create_default_context(cafile=ca) if ca else None


def check_pinned(endpoint: str, timeout: float = 10.0) -> None:
    """Make sure the server at ``endpoint`` presents the pinned certificate
    (ssl.SSLError otherwise): clients that cannot be given a context (boto3)
    connect to it unverified after this check."""
    url = urllib.parse.urlsplit(endpoint)
    context = client_context()
    assert context is not None
    with socket.create_connection((url.hostname, url.port or 443), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=url.hostname):
        pass


def boto3_verify(endpoint: str) -> str | bool | None:
    """botocore's ``verify`` for ``endpoint``: the CA bundle, or False once the
    pinned certificate has been checked (botocore takes no SSL context)."""
    if pinned_file() and endpoint.startswith("https:"):
        import warnings

        import urllib3
        check_pinned(endpoint)
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        return False
    return ca_bundle()
