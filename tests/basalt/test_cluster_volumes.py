"""The volume admin API on a node that is not (yet) serving volumes."""

from types import SimpleNamespace

import pytest

from basalt import cluster_volumes
from basalt.cluster_volumes import ClusterVolumes
from basalt.credentials import Credentials


class _Election:
    def __init__(self, leader):
        self._leader = leader

    async def leader(self):
        return self._leader


class _Etcd:
    async def get(self, key):
        return [b'{"s3": "http://127.0.0.1:9", "nbd": "127.0.0.1:9"}']


def volumes_app(leader):
    node = SimpleNamespace(election=_Election(leader), opts=SimpleNamespace(node="n3"),
                           etcd=_Etcd())
    creds = Credentials("rootaccesskey", "root-secret-key-0123456789")
    cv = ClusterVolumes(node, None, ("127.0.0.1", 0), "http://127.0.0.1:1", creds, "/nonexistent")
    from aiohttp import web
    app = web.Application()
    app.add_routes(cv.routes())
    return app


async def test_an_owner_still_loading_its_volumes_answers_503_not_itself(aiohttp_client,
                                                                        monkeypatch):
    """Elected but not serving yet: forwarding to the leader would come back to
    this node, each hop holding an executor thread until none is left."""
    forwarded = []
    monkeypatch.setattr(cluster_volumes, "_send", lambda req: forwarded.append(req) or (
        500, b"{}", "application/json"))
    client = await aiohttp_client(volumes_app(leader="n3"))
    resp = await client.post("/_basalt/v1/volumes", json={"name": "v", "size": 1 << 20})
    assert resp.status == 503
    assert "starting" in (await resp.json())["message"]
    assert not forwarded


@pytest.mark.parametrize("leader, status", [("n1", 201), (None, 503)])
async def test_another_nodes_ownership_is_forwarded(aiohttp_client, monkeypatch, leader, status):
    forwarded = []
    monkeypatch.setattr(cluster_volumes, "_send", lambda req: forwarded.append(req) or (
        201, b"{}", "application/json"))
    client = await aiohttp_client(volumes_app(leader=leader))
    resp = await client.post("/_basalt/v1/volumes", json={"name": "v", "size": 1 << 20})
    assert resp.status == status
    assert len(forwarded) == (leader is not None)
