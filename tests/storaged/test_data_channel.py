"""The node data channel (storaged/data_channel.py) against a real disk server:
shard bytes go over it, its frames are authenticated, errors keep it in step,
and a client falls back to HTTP where a node serves no channel."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from storaged import data_channel, disk_server, node_auth
from storaged.data_channel import OP_READ, OP_WRITE, Channel
from storaged.disk_server import PREFIX, SERVICE
from storaged.remote_disk import NodeClient

from .helpers import payload
from .test_remote_disk import MIB, SECRET, Node, formatted


@pytest.fixture
def served(tmp_path):
    """(node, remote disk 2, local disks) with disk 2 served by a node."""
    disks = formatted(tmp_path)
    node = Node("n", disks[2:]).start()
    remote = node.remote(disks[2])
    yield node, remote, disks
    remote.close()
    node.stop()
    for d in disks:
        d.close()


def channels(node) -> int:
    return len(node.runner.app[SERVICE].channels)


def open_channel(node, client: NodeClient, headers=None) -> tuple[Channel | None, int, bytes]:
    """A channel opened by hand (``headers``: the upgrade request's own)."""
    path = PREFIX + data_channel.PATH
    if headers is None:
        _, headers = client.prepare("GET", path, None, b"")
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    sock.sendall(data_channel.upgrade_request(path, f"127.0.0.1:{node.port}", headers))
    status, body = data_channel.read_upgrade_answer(sock)
    if status != 101:
        sock.close()
        return None, status, body
    return Channel(sock, SECRET, headers[node_auth.NONCE]), status, body


def test_shard_bytes_go_over_one_kept_channel(served):
    node, remote, disks = served
    body = payload("big", 3 * MIB + 7)
    writer = remote.create_shard("ab" * 16, 1)
    writer.write([memoryview(body)[:MIB], body[MIB:]], 0)
    writer.commit()
    assert channels(node) == 1                      # the write went over a channel
    bufs = [bytearray(MIB), bytearray(3 * MIB)]
    assert remote.read_shard("ab" * 16, 1, 0, bufs) == len(body)   # short at the end
    assert b"".join(bufs)[:len(body)] == body
    assert channels(node) == 1                      # and the read over the same one
    with open(disks[2].shard_path("ab" * 16, 1), "rb") as f:
        assert f.read() == body


def test_errors_keep_the_channel_in_step(served):
    node, remote, disks = served
    with pytest.raises(FileNotFoundError):
        remote.read_shard("cd" * 16, 0, 0, [bytearray(4)])
    client = remote.client
    with pytest.raises(OSError) as err:  # a session the node does not know: body drained
        client.channel_call(OP_WRITE, [remote.disk_id, "nosuch", 0, 2 * MIB],
                            body=[bytes(2 * MIB)], length=2 * MIB)
    assert err.value.errno == errno.EBADF
    with pytest.raises(OSError) as err:
        client.channel_call(OP_READ, ["nodisk", "ab" * 16, 0, 0, 4], into=[bytearray(4)])
    assert err.value.errno == errno.ENODEV
    writer = remote.create_shard("ef" * 16, 0)
    writer.write([b"still in step"], 0)
    writer.commit()
    buf = bytearray(13)
    assert remote.read_shard("ef" * 16, 0, 0, [buf]) == 13 and buf == b"still in step"
    assert channels(node) == 1


def test_frames_are_authenticated(served):
    node, remote, disks = served
    client = NodeClient(node.url, SECRET, "test-client")
    try:
        channel, status, _ = open_channel(node, client)
        args = [remote.disk_id, "ab" * 16, 0, 0, 4]
        status, meta, _ = channel.request(OP_READ, args)
        assert status == 404 and meta["errno"] == errno.ENOENT
        channel.seq = 5                              # a frame out of order (or replayed)
        with pytest.raises(OSError):
            channel.request(OP_READ, args)
        channel.close()
        forged, _, _ = open_channel(node, client)
        forged._secret = b"another-cluster-secret-0123456789"
        with pytest.raises(OSError):                 # the node closes it, answering nothing
            forged.request(OP_READ, args)
        forged.close()
        _, headers = client.prepare("GET", PREFIX + data_channel.PATH, None, b"")
        first, status, _ = open_channel(node, client, headers)
        assert status == 101
        first.close()
        replay, status, body = open_channel(node, client, headers)  # the same upgrade again
        assert replay is None and status == 401 and b"replayed" in body
        plain = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        plain.sendall(data_channel.upgrade_request(PREFIX + data_channel.PATH, "x", {}))
        assert data_channel.read_upgrade_answer(plain)[0] == 401  # unsigned: no channel
        plain.close()
    finally:
        client.close()


def test_an_idle_channel_the_node_closed_is_replaced(served, monkeypatch):
    node, remote, disks = served
    monkeypatch.setattr(disk_server, "CHANNEL_IDLE", 0.2)
    writer = remote.create_shard("ab" * 16, 0)
    writer.write([b"x" * 100], 0)
    writer.commit()
    time.sleep(0.6)                                   # the node ended the idle channel
    assert channels(node) == 0
    assert remote.read_shard("ab" * 16, 0, 0, [bytearray(100)]) == 100


def test_a_node_without_channels_is_served_over_http(tmp_path, monkeypatch):
    """An older node answers the upgrade 404: shard I/O goes on over HTTP."""
    async def no_channel(self, request):
        raise disk_server.NodeError(404, "BadRequest", "Not Found")
    monkeypatch.setattr(disk_server._Service, "channel", no_channel)
    disks = formatted(tmp_path)
    node = Node("n", disks[2:]).start()
    remote = node.remote(disks[2])
    try:
        body = payload("http", MIB + 3)
        writer = remote.create_shard("ab" * 16, 2)
        writer.write([body], 0)
        writer.commit()
        buf = bytearray(len(body))
        assert remote.read_shard("ab" * 16, 2, 0, [buf]) == len(body) and buf == body
        assert not remote.client._channel_ok and channels(node) == 0
    finally:
        remote.close()
        node.stop()
        for d in disks:
            d.close()


async def test_metadata_goes_over_the_channel(served):
    from storaged.data_channel import OP_QUERY
    from storaged.metadb import PutBucket

    node, remote, disks = served
    assert await remote.commit([PutBucket("b", b"record")]) == [True]
    assert await remote.read("get_bucket", "b") == b"record"
    assert remote.read_now("buckets") == {"b": b"record"}
    assert disks[2].get_bucket("b") == b"record"
    assert channels(node) >= 1 and remote.client._channel_ok
    with pytest.raises(ValueError, match="undecodable"):
        remote.client.channel_call(OP_QUERY, [remote.disk_id, b"\xc1garbage"])
    with pytest.raises(ValueError, match="unknown metadata query"):
        remote.client.channel_call(OP_QUERY, [remote.disk_id, b"\x92\xa6delete\x90"])
    assert await remote.read("get_bucket", "b") == b"record"   # the channel goes on
