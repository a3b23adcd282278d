"""Fixtures of the cluster tests: a real 3-member etcd cluster and clients of it."""

from __future__ import annotations

import pytest

from cluster import Etcd
from tests.cluster.etcd_helpers import EtcdCluster, require_etcd

# One attempt on one member; a call failing over through all three members is
# bounded by 3 x this.
REQUEST_TIMEOUT = 2.0


@pytest.fixture
def etcd_cluster(tmp_path):
    """A fresh 3-member etcd cluster on free 127.0.0.1 ports (``endpoints``,
    ``kill(i)``, ``start(i)``, ``wait_healthy()``); every member is SIGKILLed and
    reaped and every data dir removed afterwards. Skips without the ``etcd``
    binary, except under ``CI`` where that is a failure."""
    binary = require_etcd()
    cluster = EtcdCluster(tmp_path / "etcd", size=3, binary=binary)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def etcd_client(etcd_cluster):
    """Make clients of ``etcd_cluster`` (``timeout`` defaults to REQUEST_TIMEOUT); all closed at the end."""
    clients: list[Etcd] = []

    def make(timeout: float = REQUEST_TIMEOUT, endpoints: str | None = None) -> Etcd:
        client = Etcd(endpoints or etcd_cluster.endpoints, timeout=timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
