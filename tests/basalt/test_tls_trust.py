"""basalt/tls_trust.py: a pinned certificate is trusted as it is, whatever name it
was issued for and whoever issued it; any other certificate is refused."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from basalt import tls_trust

trustme = pytest.importorskip("trustme")


@pytest.fixture
def server(tmp_path):
    """A TLS listener on 127.0.0.1 whose certificate names only basalt.example."""
    ca = trustme.CA()
    leaf = ca.issue_cert("basalt.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the thread sees `stop` soon
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cert = tmp_path / "cert.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", str(cert), ca
    stop.set()
    listener.close()
    thread.join(5)


def test_the_pinned_certificate_is_trusted_whatever_its_name(server, monkeypatch):
    endpoint, cert, _ = server
    monkeypatch.setenv(tls_trust.PINNED, cert)
    tls_trust.check_pinned(endpoint)
    assert tls_trust.boto3_verify(endpoint) is False  # checked first, then unverified


def test_another_certificate_is_refused(server, monkeypatch, tmp_path):
    endpoint, _, ca = server
    other = tmp_path / "other.pem"
    ca.issue_cert("basalt.example").cert_chain_pems[0].write_to_path(str(other))
    monkeypatch.setenv(tls_trust.PINNED, str(other))
    with pytest.raises(ssl.SSLError):
        tls_trust.check_pinned(endpoint)
    with pytest.raises(ssl.SSLError):
        tls_trust.boto3_verify(endpoint)


def test_a_ca_bundle_still_checks_the_name(server, monkeypatch, tmp_path):
    endpoint, _, ca = server
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.delenv(tls_trust.PINNED, raising=False)
    monkeypatch.setenv("BASALT_CA_BUNDLE", str(bundle))
    assert tls_trust.boto3_verify(endpoint) == str(bundle)
    context = tls_trust.client_context()
    with pytest.raises(ssl.SSLCertVerificationError), \
            socket.create_connection(("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1"):
        pass
