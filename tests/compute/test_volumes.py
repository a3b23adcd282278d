"""The volume check ComputeManager does before defining a VM: NBD_OPT_INFO over the socket."""

from __future__ import annotations

import asyncio

import pytest

from blockd import NBDServer, StaticRegistry
from blockd.export import Export
from compute.errors import VolumeUnavailableError
from compute.volumes import export_info


class Blank(Export):
    def __init__(self, name: str, size: int, read_only: bool = False):
        self.name, self.size, self.read_only = name, size, read_only

    async def pread(self, offset: int, length: int) -> bytes:
        return bytes(length)


@pytest.fixture
async def nbd_socket(tmp_path):
    path = str(tmp_path / "nbd.sock")
    server = NBDServer(StaticRegistry([Blank("disk", 1 << 30), Blank("disk@snap", 1 << 20, True)]))
    await server.start_unix(path)
    yield path
    await server.close()


async def test_existing_writable_volume(nbd_socket):
    info = await asyncio.to_thread(export_info, nbd_socket, "disk")
    assert (info.name, info.size, info.read_only) == ("disk", 1 << 30, False)


async def test_read_only_snapshot(nbd_socket):
    info = await asyncio.to_thread(export_info, nbd_socket, "disk@snap")
    assert info.read_only and info.size == 1 << 20


async def test_unknown_volume_is_none(nbd_socket):
    assert await asyncio.to_thread(export_info, nbd_socket, "nope") is None


def test_no_server_is_a_503(tmp_path):
    with pytest.raises(VolumeUnavailableError) as err:
        export_info(str(tmp_path / "missing.sock"), "disk")
    assert (err.value.status, err.value.code) == (503, "VolumeServiceUnavailable")
