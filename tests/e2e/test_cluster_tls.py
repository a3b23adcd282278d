"""The cluster's node RPC over TLS (`basalt serve --node-tls-cert/--node-tls-key/
--node-tls-ca`): a CA and one certificate per node (SAN IP:127.0.0.1) made here
with `cryptography`; four nodes on a real 3-member etcd (the helpers of
test_cluster.py), one cluster for the module.

Checked: the nodes register https:// addresses and serve S3 byte-exact through
every node (so the owner and the S3 workers reach their peers over TLS); the
node-RPC port refuses a correctly signed plain-HTTP request, a client without a
certificate and one whose certificate another CA signed; a certificate whose SAN
lacks the host is refused by the client; a node whose TLS settings differ from a
peer's counts that peer's disks offline with a reason saying TLS; and the serve
options are checked before anything starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from basalt.cli import build_parser
from basalt.cli.common import resolve_defaults
from basalt.cluster_node import LiveLayout, NodeTLS, UnreachableDisk, node_url, open_members
from basalt.config import ConfigError
from storaged.disk_server import PREFIX, disk_app
from storaged.format import DiskFormat
from storaged.remote_disk import NodeClient, NodeUnavailable
from tests.cluster.etcd_helpers import EtcdCluster, free_port, free_ports, require_etcd
from tests.e2e.conftest import stop_server
from tests.e2e.test_cluster import (
    NODES,
    SECRET_ENV,
    start_node,
    status,
    wait_registered,
    wait_serving,
)

# certificates --------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory, name: str) -> tuple[str, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA: (its PEM path, key, certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path = os.path.join(directory, f"{name}.pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def issue(directory, ca: tuple, name: str, ips: tuple[str, ...] = ("127.0.0.1",),
          dns: tuple[str, ...] = ()) -> tuple[str, str]:
    """A node certificate signed by ``ca`` for server and client use: (cert, key) paths."""
    _, ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(d) for d in dns]
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path = os.path.join(directory, f"{name}.crt")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The cluster's CA and node certificates, and a stranger CA with its own cert."""
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "cluster-ca")
    other = make_ca(d, "other-ca")
    return {"dir": d, "ca": ca[0], "ca_full": ca,
            "nodes": {f"n{i + 1}": issue(d, ca, f"n{i + 1}") for i in range(NODES)},
            "client": issue(d, ca, "tester"),
            "stranger": issue(d, other, "stranger")}


def client_context(ca: str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def list_disks(url: str, ctx: ssl.SSLContext | None) -> list:
    """A signed GET of the node's disk list (raises NodeUnavailable when refused)."""
    client = NodeClient(url, SECRET_ENV.encode(), "tester", ssl=ctx, backoff=0)
    try:
        return client.call("GET", PREFIX + "/disks").json()
    finally:
        client.close()


def handshake(port: int, ctx: ssl.SSLContext) -> bytes:
    """A TLS connection to 127.0.0.1:``port`` with ``ctx`` and one HTTP request:
    the start of the answer, b"" when the server closed the connection instead
    (in TLS 1.3 the server judges the client's certificate after the client has
    finished its side of the handshake; it then closes, with or without an alert)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
            return tls.recv(100)
    except (ssl.SSLError, ConnectionError):
        return b""


def assert_refused_by_handshake(port: int, pki: dict) -> None:
    """Mutual TLS: no client certificate, or one of another CA, is refused."""
    assert handshake(port, client_context(pki["ca"], None)) == b""
    assert handshake(port, client_context(pki["ca"], pki["stranger"])) == b""
    assert handshake(port, client_context(pki["ca"], pki["client"])).startswith(b"HTTP/1.1 ")
    with pytest.raises(NodeUnavailable):
        list_disks(f"https://127.0.0.1:{port}", client_context(pki["ca"], None))
    with pytest.raises(NodeUnavailable):
        list_disks(f"https://127.0.0.1:{port}", client_context(pki["ca"], pki["stranger"]))


# the serve options (no server) ------------------------------------------------------


def parse(*argv: str):
    return resolve_defaults(build_parser().parse_args(argv))


def test_serve_node_tls_options_are_checked_before_anything_starts(pki, fake_serve):
    from basalt.cli.serve import cmd_serve
    cert, key = pki["nodes"]["n1"]
    cluster = ("--cluster", "etcd://127.0.0.1:1", "--node", "n1", "--advertise", "127.0.0.1:1")

    def refused(*argv: str) -> str:
        with pytest.raises(ConfigError) as info:
            cmd_serve(parse("serve", *argv))
        return str(info.value)

    assert "--cluster" in refused("--node-tls-cert", cert, "--node-tls-key", key)
    assert "--cluster" in refused("--node-tls-ca", pki["ca"])
    assert "go together" in refused(*cluster, "--node-tls-cert", cert)
    assert "go together" in refused(*cluster, "--node-tls-key", key)
    assert "--node-tls-cert" in refused(*cluster, "--node-tls-ca", pki["ca"])
    assert "cannot use" in refused(*cluster, "--node-tls-cert", cert, "--node-tls-key",
                                   str(pki["dir"] / "missing.key"))
    # A key that is not the certificate's.
    assert "cannot use" in refused(*cluster, "--node-tls-cert", cert,
                                   "--node-tls-key", pki["nodes"]["n2"][1])
    assert fake_serve == []

    # In any position after the command; paths made absolute.
    cmd_serve(parse("serve", "--node-tls-ca", pki["ca"], *cluster[:2], "--node-tls-key", key,
                    *cluster[2:], "--data-dir", "D", "--node-tls-cert", cert))
    cmd_serve(parse("serve", *cluster))
    assert fake_serve[0].cluster.tls == NodeTLS(cert, key, pki["ca"])
    assert fake_serve[1].cluster.tls is None


# TLS on one side only, hostname checks (in process) --------------------------------------


def test_a_peer_whose_tls_differs_is_offline_with_a_tls_reason(pki, tmp_path):
    fmt = DiskFormat("dep", "d1", ("d0", "d1"), 1, 1, 4096)
    members = [{"disk_id": "d1", "node": "n2", "format": fmt.to_json(),
                "url": node_url("https://127.0.0.1:9")}]
    secret = SECRET_ENV.encode()
    no_tls = open_members(members, "n1", secret)[0]          # no TLS here, an https peer
    tls_only = open_members([dict(members[0], url=node_url("127.0.0.1:9"))], "n1", secret,
                            client_ssl=client_context(pki["ca"], None))[0]  # and the reverse
    for disk in (no_tls, tls_only):
        assert isinstance(disk, UnreachableDisk) and not disk.online
        assert "TLS" in disk.reason
        assert disk.reattach(True) == disk.reason and not disk.check()
        assert disk.status() == ("offline", disk.reason)
        disk.close()
    assert "no node-RPC TLS configured" in no_tls.reason
    assert "requires TLS" in tls_only.reason

    # In a store (as a node builds it): the disk counts offline, with that reason,
    # and the disk watch leaves it so.
    local = {"disk_id": "d0", "node": "n1", "root": str(tmp_path / "d0"),
             "format": dataclasses.replace(fmt, disk_id="d0").to_json()}
    live = LiveLayout("n1", secret, sync=False)
    store = live.build([{"pool": "p", "state": "active", "sets": [[local, *members]]}])[0]

    async def check() -> None:
        try:
            for _ in range(2):
                states = store.disk_states()
                assert states[0]["state"] != "offline" and states[1]["state"] == "offline"
                assert "TLS" in states[1]["reason"] and "https://127.0.0.1:9" in states[1]["reason"]
                await store.run(store.healer.watch_disks)
        finally:
            await store.close()
    asyncio.run(check())


@pytest.fixture
def rpc_server(pki):
    """A node-RPC server in this process (no disks) with n1's certificate, mutual TLS."""
    cert, key = pki["nodes"]["n1"]
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    async def start():
        from aiohttp import web
        runner = web.AppRunner(disk_app([], SECRET_ENV.encode(), "n1"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port,
                          ssl_context=NodeTLS(cert, key, pki["ca"]).server_context()).start()
        holder["runner"] = runner
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_node_rpc_certificates_are_checked_both_ways(pki, rpc_server):
    port = rpc_server
    tester = NodeTLS(*pki["client"], pki["ca"])
    assert list_disks(f"https://127.0.0.1:{port}", tester.client_context()) == []
    # The server's certificate is for 127.0.0.1, not for another name of the host.
    with pytest.raises(NodeUnavailable, match="(?i)certificate|hostname|match"):
        list_disks(f"https://localhost:{port}", tester.client_context())
    with pytest.raises(NodeUnavailable):
        list_disks(f"http://127.0.0.1:{port}", None)
    assert_refused_by_handshake(port, pki)


# a cluster over TLS (one for the module) --------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory, pki):
    require_etcd()
    tmp = tmp_path_factory.mktemp("tls-cluster")
    etcd = EtcdCluster(tmp / "etcd", size=3)
    nodes = []
    try:
        etcd.start()
        ports = free_ports(3 * NODES)
        rpc_ports = []
        for i in range(NODES):
            name = f"n{i + 1}"
            cert, key = pki["nodes"][name]
            node_ports = tuple(ports[3 * i:3 * i + 3])
            rpc_ports.append(node_ports[1])
            nodes.append(start_node(str(tmp), name, etcd.endpoints, node_ports, extra=(
                "--node-tls-cert", cert, "--node-tls-key", key, "--node-tls-ca", pki["ca"])))
        wait_registered(nodes)
        nodes[0].cli("cluster", "pool", "create", "--ec", "3+1", "--name", "p1",
                     *[f"n{i + 1}" for i in range(NODES)])
        wait_serving(nodes)
        yield nodes, rpc_ports
    finally:
        for node in nodes:
            stop_server(node)
        etcd.stop()


def test_nodes_register_https_and_serve_objects_through_every_node(tls_cluster):
    nodes, rpc_ports = tls_cluster
    seen = {n["name"]: n["advertise"] for n in status(nodes[1])["nodes"]}
    assert seen == {f"n{i + 1}": f"https://127.0.0.1:{rpc_ports[i]}" for i in range(NODES)}
    a = nodes[0].client()
    a.create_bucket(Bucket="tls")
    bodies = {f"k{i}": os.urandom(size) for i, size in
              enumerate((0, 1, 4096, 300_000, 2 * 1024 * 1024 + 13))}
    for key, body in bodies.items():
        a.put_object(Bucket="tls", Key=key, Body=body)
    for node in nodes[1:]:
        client = node.client()
        for key, body in bodies.items():
            assert client.get_object(Bucket="tls", Key=key)["Body"].read() == body
        assert [o["Key"] for o in client.list_objects_v2(Bucket="tls")["Contents"]] \
            == sorted(bodies)


def test_the_node_rpc_port_refuses_plain_http_and_foreign_certificates(tls_cluster, pki):
    nodes, rpc_ports = tls_cluster
    tester = NodeTLS(*pki["client"], pki["ca"]).client_context()
    for port in rpc_ports:
        # Control: signed, over TLS, with a certificate of the cluster's CA.
        listed = list_disks(f"https://127.0.0.1:{port}", tester)
        assert len(listed) == 1 and listed[0]["online"]
        # The same signed request in plain HTTP: no answer.
        with pytest.raises(NodeUnavailable):
            list_disks(f"http://127.0.0.1:{port}", None)
        # Without a client certificate, or with one another CA signed: the handshake fails.
        assert_refused_by_handshake(port, pki)
