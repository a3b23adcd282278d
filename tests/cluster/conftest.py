"""Fixtures of the cluster tests: a real 3-member etcd cluster and clients of it."""

from __future__ import annotations

import pytest

from cluster import Etcd
from tests.cluster.etcd_helpers import EtcdCluster, require_etcd

# One attempt on one member; a call failing over through all three members is
# bounded by 3 x this.
REQUEST_TIMEOUT = 2.0


def running_cluster(base):
    """A 3-member etcd cluster on free 127.0.0.1 ports for a fixture to yield; every
    member is SIGKILLed and reaped and every data dir removed afterwards. Skips
    without the ``etcd`` binary, except under ``CI`` where that is a failure."""
    cluster = EtcdCluster(base, size=3, binary=require_etcd())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_cluster(tmp_path):
    """A fresh 3-member etcd cluster of the test's own (``endpoints``, ``kill(i)``,
    ``start(i)``, ``wait_healthy()``), for a test that stops members."""
    yield from running_cluster(tmp_path / "etcd")


@pytest.fixture(scope="package")
def shared_etcd_cluster(tmp_path_factory):
    """One cluster for the tests that never stop a member (each start costs ~2.5 s)."""
    yield from running_cluster(tmp_path_factory.mktemp("etcd"))


@pytest.fixture
def etcd_for_clients(request):
    """The cluster ``etcd_client`` connects to: the test's own ``etcd_cluster`` when
    it takes one, else the shared one, emptied (no key, no lease) first."""
    if "etcd_cluster" in request.fixturenames:
        return request.getfixturevalue("etcd_cluster")
    cluster = request.getfixturevalue("shared_etcd_cluster")
    cluster.clear()
    return cluster


@pytest.fixture
async def etcd_client(etcd_for_clients):
    """Make clients of ``etcd_for_clients`` (``timeout`` defaults to REQUEST_TIMEOUT);
    all closed at the end."""
    clients: list[Etcd] = []

    def make(timeout: float = REQUEST_TIMEOUT, endpoints: str | None = None) -> Etcd:
        client = Etcd(endpoints or etcd_for_clients.endpoints, timeout=timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
