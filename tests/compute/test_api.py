"""The VM and network admin routes, against the test driver and fake networks."""

from __future__ import annotations

import asyncio

import pytest

from compute import api


@pytest.fixture
async def client(aiohttp_client, manager, networks):
    return await aiohttp_client(api.app(manager, networks))


async def expect_error(response, status, code):
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["code"] == code and body["message"]
    return body


async def test_vm_lifecycle(client, kernel):
    r = await client.post(api.VMS, json={"name": "web", "volume": "vol1", "network": "net1",
                                         "memory": "128M", "cpus": 2, "kernel": kernel,
                                         "cmdline": "console=ttyS0"})
    assert r.status == 201, await r.text()
    vm = await r.json()
    assert (vm["name"], vm["state"], vm["memory_mib"], vm["cpus"]) == ("web", "shutoff", 128, 2)
    assert vm["ip"].startswith("10.77.0.")

    r = await client.get(api.VMS)
    assert [v["name"] for v in await r.json()] == ["web"]
    r = await client.post(f"{api.VMS}/web/start")
    assert (await r.json())["state"] == "running"
    r = await client.post(f"{api.VMS}/web/reboot", json={"hard": True})
    assert (await r.json())["state"] == "running"
    r = await client.post(f"{api.VMS}/web/stop?timeout=5")
    body = await r.json()
    assert (body["state"], body["stopped_by"]) == ("shutoff", "acpi")
    r = await client.get(f"{api.VMS}/web")
    assert (await r.json())["state"] == "shutoff"
    r = await client.delete(f"{api.VMS}/web")
    assert r.status == 204
    await expect_error(await client.get(f"{api.VMS}/web"), 404, "NoSuchVM")


async def test_create_and_start(client):
    r = await client.post(api.VMS, json={"name": "web", "volume": "vol1", "network": "net1",
                                         "start": True})
    assert r.status == 201 and (await r.json())["state"] == "running"


@pytest.mark.parametrize("body,status,code", [
    ({"name": "web", "volume": "nope", "network": "net1"}, 404, "NoSuchVolume"),
    ({"name": "web", "volume": "vol1", "network": "nonet"}, 404, "NoSuchNetwork"),
    ({"name": "Web!", "volume": "vol1", "network": "net1"}, 400, "InvalidVMSpec"),
    ({"name": "web", "volume": "vol1", "network": "net1", "memory": "lots"}, 400,
     "InvalidVMSpec"),
    ({"volume": "vol1", "network": "net1"}, 400, "InvalidArgument"),
    ({"name": "web", "volume": 7, "network": "net1"}, 400, "InvalidArgument"),
])
async def test_create_errors(client, body, status, code):
    await expect_error(await client.post(api.VMS, json=body), status, code)


async def test_duplicate_and_bad_json(client):
    body = {"name": "web", "volume": "vol1", "network": "net1"}
    assert (await client.post(api.VMS, json=body)).status == 201
    await expect_error(await client.post(api.VMS, json={**body, "volume": "vol2"}), 409,
                       "VMAlreadyExists")
    await expect_error(await client.post(api.VMS, data=b"{nope"), 400, "MalformedJSON")
    await expect_error(await client.post(api.VMS, data=b"[1]"), 400, "MalformedJSON")
    await expect_error(await client.post(f"{api.VMS}/web/reboot"), 409, "InvalidVMState")
    await expect_error(await client.post(f"{api.VMS}/web/stop", json={"timeout": "x"}), 400,
                       "InvalidArgument")


async def test_console(client, manager):
    await client.post(api.VMS, json={"name": "web", "volume": "vol1", "network": "net1"})
    path = manager.console_path("web")
    with open(path, "wb") as f:
        f.write(b"hello\n")
    r = await client.get(f"{api.VMS}/web/console")
    assert await r.read() == b"hello\n"
    assert r.headers[api.CONSOLE_OFFSET_HEADER] == "6"
    r = await client.get(f"{api.VMS}/web/console?offset=3")
    assert await r.read() == b"lo\n"
    # follow: ends by itself once the VM is not running (it never started)
    r = await client.get(f"{api.VMS}/web/console?follow=1")
    assert await r.read() == b"hello\n"
    await expect_error(await client.get(f"{api.VMS}/web/console?offset=x"), 400,
                       "InvalidArgument")
    await expect_error(await client.get(f"{api.VMS}/ghost/console?follow=1"), 404, "NoSuchVM")


async def test_console_follow_streams_until_the_vm_stops(client, manager):
    await client.post(api.VMS, json={"name": "web", "volume": "vol1", "network": "net1",
                                     "start": True})
    path = manager.console_path("web")
    with open(path, "wb") as f:
        f.write(b"boot\n")
    r = await client.get(f"{api.VMS}/web/console?follow=1")
    first = await r.content.read(5)
    assert first == b"boot\n"
    with open(path, "ab") as f:
        f.write(b"bye\n")
    await asyncio.sleep(0.3)
    await asyncio.to_thread(manager.stop, "web", 5)
    rest = await asyncio.wait_for(r.content.read(), 10)
    assert rest == b"bye\n"


async def test_networks(client, networks):
    r = await client.get(api.NETWORKS)
    assert [n["name"] for n in await r.json()] == ["net1", "net2"]
    r = await client.post(api.NETWORKS, json={"name": "net3", "subnet": "10.79.0.0/24",
                                              "nat": True})
    assert r.status == 201
    body = await r.json()
    assert (body["name"], body["gateway"], body["nat"]) == ("net3", "10.79.0.1", True)
    r = await client.get(f"{api.NETWORKS}/net3")
    assert (await r.json())["reservations"] == []
    await expect_error(await client.post(api.NETWORKS, json={"name": "net3",
                                                             "subnet": "10.80.0.0/24"}),
                       409, "NetworkConflict")
    await expect_error(await client.post(api.NETWORKS, json={"name": "x",
                                                             "subnet": "banana"}),
                       400, "InvalidNetwork")
    await expect_error(await client.post(api.NETWORKS, json={"name": "x"}), 400,
                       "InvalidArgument")
    assert (await client.delete(f"{api.NETWORKS}/net3")).status == 204
    await expect_error(await client.delete(f"{api.NETWORKS}/net3"), 404, "NoSuchNetwork")
    await expect_error(await client.get(f"{api.NETWORKS}/net3"), 404, "NoSuchNetwork")


async def test_network_with_a_vm_is_not_deleted_without_force(client):
    await client.post(api.VMS, json={"name": "web", "volume": "vol1", "network": "net1"})
    await expect_error(await client.delete(f"{api.NETWORKS}/net1"), 409, "NetworkConflict")
    assert (await client.delete(f"{api.NETWORKS}/net1?force=1")).status == 204


async def test_layers_that_are_off(aiohttp_client):
    client = await aiohttp_client(api.app(None, None, compute_off_reason="no libvirtd",
                                          network_off_reason="needs root"))
    body = await expect_error(await client.get(api.VMS), 503, "ComputeUnavailable")
    assert "no libvirtd" in body["message"]
    body = await expect_error(await client.get(api.NETWORKS), 503, "NetworkUnavailable")
    assert "needs root" in body["message"]


async def test_console_input(client, manager):
    from compute import console

    from .fakes import FakeConsoleSocket

    await client.post(api.VMS, json={"name": "web", "volume": "vol1", "network": "net1"})
    url = f"{api.VMS}/web/console"
    await expect_error(await client.post(url, data=b"root\r"), 409, "InvalidVMState")
    await client.post(f"{api.VMS}/web/start")
    qemu = FakeConsoleSocket(console.socket_path(manager.console_path("web")))
    try:
        r = await client.post(url, data=b"root\r")
        assert r.status == 204, await r.text()
        await expect_error(await client.post(url, data=b"x" * (console.INPUT_MAX + 1)), 413,
                           "InputTooLarge")
    finally:
        await asyncio.to_thread(qemu.close)
    assert qemu.received == [b"root\r"]
    await expect_error(await client.post(f"{api.VMS}/ghost/console", data=b"x"), 404,
                       "NoSuchVM")
