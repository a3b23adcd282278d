"""Real `basalt serve` processes for end-to-end tests, over HTTP and HTTPS.

The ``basalt`` fixture (one server per test module and scheme) starts the
server as users do, on free 127.0.0.1 ports with temporary disks, and stops
it (and every worker) afterwards. ``s3`` is a newest-boto3 client at its
default configuration pointed at it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import boto3
import pytest

from tests.cluster.etcd_helpers import free_port

BASALT = os.path.join(os.path.dirname(sys.executable), "basalt")
ACCESS, SECRET = "BASALTTESTACCESSKEY1", "basalt-test-secret-key/0123456789abcdefgh"


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen
    data_dir: str
    endpoint: str
    nbd_port: int
    ca_path: str | None
    log_path: str

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, BASALT_ACCESS_KEY=ACCESS, BASALT_SECRET_KEY=SECRET,
                   BASALT_ENDPOINT=self.endpoint, AWS_ACCESS_KEY_ID=ACCESS,
                   AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                   AWS_ENDPOINT_URL=self.endpoint)
        if self.ca_path:
            env["AWS_CA_BUNDLE"] = self.ca_path
            env["BASALT_CA_BUNDLE"] = self.ca_path
        return env

    def client(self, **config):
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS,
                            aws_secret_access_key=SECRET, region_name="us-east-1",
                            verify=self.ca_path or True,
                            config=Config(**config) if config else None)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        out = subprocess.run([BASALT, "--data-dir", self.data_dir, *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"basalt {' '.join(args)} failed: {out.stderr}{out.stdout}")
        return out


def start_server(tmp: str, *, tls: tuple[str, str, str] | None = None,
                 extra: tuple[str, ...] = (), secret: str = SECRET) -> Server:
    port, nbd = free_port(), free_port()
    data_dir = os.path.join(tmp, "data")
    log_path = os.path.join(tmp, "serve.log")
    args = [BASALT, "--data-dir", data_dir, "serve", "--s3-address", f"127.0.0.1:{port}",
            "--nbd-address", f"127.0.0.1:{nbd}", *extra]
    scheme = "http"
    ca = None
    if tls:
        cert, key, ca = tls
        args += ["--tls-cert", cert, "--tls-key", key]
        scheme = "https"
    env = dict(os.environ, BASALT_ACCESS_KEY=ACCESS, BASALT_SECRET_KEY=secret)
    os.makedirs(tmp, exist_ok=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = Server(proc, data_dir, f"{scheme}://127.0.0.1:{port}", nbd, ca, log_path)
    wait_healthy(server)
    return server


def wait_healthy(server: Server, timeout: float = 60) -> None:
    import ssl
    ctx = ssl.create_default_context(cafile=server.ca_path) if server.ca_path else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"basalt serve exited: {server.log()}")
        try:
            with urllib.request.urlopen(server.endpoint + "/_basalt/health", timeout=2,
                                        context=ctx) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"basalt serve did not become healthy: {server.log()}")


def stop_server(server: Server, sig: int = signal.SIGTERM) -> None:
    """Stop the server and every worker it started (its whole process group)."""
    if server.proc.poll() is None:
        try:
            os.killpg(server.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.proc.wait()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return str(d / "cert.pem"), str(d / "key.pem"), str(d / "ca.pem")


def running(tls: tuple[str, str, str] | None = None):
    """A `basalt serve` in a temp dir for a fixture to yield, stopped and removed after."""
    tmp = tempfile.mkdtemp(prefix="basalt-e2e-")
    server = start_server(tmp, tls=tls)
    yield server
    stop_server(server)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module", params=["http", "https"])
def basalt(request, tls_files):
    """A running `basalt serve`, once over HTTP and once over HTTPS."""
    yield from running(tls_files if request.param == "https" else None)


@pytest.fixture(scope="module")
def basalt_http(tls_files):
    """A running `basalt serve` over HTTP only (for tests that need one scheme)."""
    yield from running()


@pytest.fixture(scope="module")
def basalt_https(tls_files):
    """A running `basalt serve` over HTTPS only (SSE-C needs TLS)."""
    yield from running(tls_files)


@pytest.fixture
def s3(basalt):
    return basalt.client()


@pytest.fixture
def anon(basalt_http):
    """boto3 sending unsigned requests (anonymous, as curl or a browser)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=basalt_http.endpoint, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED))


@pytest.fixture
def bucket(s3):
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def anonymous_fetch(server: Server, path: str, method: str = "GET",
                    data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of an unsigned request, as curl or a browser sends it."""
    import urllib.error
    import urllib.request
    request = urllib.request.Request(server.endpoint + path, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
