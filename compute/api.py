"""The VM and network part of the admin API, as aiohttp routes.

    GET    /_basalt/v1/vms                      list (with live state)
    POST   /_basalt/v1/vms                      create {name, volume, network, memory?,
                                                cpus?, kernel?, initrd?, cmdline?,
                                                user_data?, start?}            -> 201
    GET    /_basalt/v1/vms/{name}               info
    DELETE /_basalt/v1/vms/{name}               delete                          -> 204
    POST   /_basalt/v1/vms/{name}/start
    POST   /_basalt/v1/vms/{name}/stop          {timeout?} (or ?timeout=): ACPI, then destroy
    POST   /_basalt/v1/vms/{name}/reboot        {hard?} (or ?hard=1)
    GET    /_basalt/v1/vms/{name}/console       ?offset=N (negative: from the end);
                                                ?follow=1 streams until the VM stops
    POST   /_basalt/v1/vms/{name}/console       body: bytes typed into the serial port
                                                (at most 64 KiB)                -> 204
    GET    /_basalt/v1/networks                 list
    POST   /_basalt/v1/networks                 create {name, subnet, nat?}     -> 201
    GET    /_basalt/v1/networks/{name}          info (with its reservations)
    DELETE /_basalt/v1/networks/{name}          delete (?force=1 with taps left) -> 204

Errors are JSON ``{"code", "message"}`` with the HTTP status, as in blockd's
volume API. Every manager call blocks, so each runs in a thread. Served where
the managers live (the process that owns the disks); the S3 workers
authenticate admin requests and forward these paths to it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from blockd.api import json_body
from network import NetworkError

from .console import INPUT_MAX
from .errors import ComputeError, from_network_error

VMS = "/_basalt/v1/vms"
NETWORKS = "/_basalt/v1/networks"
CONSOLE_OFFSET_HEADER = "X-Basalt-Console-Offset"

log = logging.getLogger("basalt.compute.api")


def _error(exc: ComputeError) -> web.Response:
    return web.json_response({"code": exc.code, "message": exc.message}, status=exc.status)


async def _body(request: web.Request) -> dict:
    return await json_body(request, lambda message: ComputeError(message, code="MalformedJSON"))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ComputeError(f"{what} must be a number", code="InvalidArgument") from None
    if number < 0:
        raise ComputeError(f"{what} must not be negative", code="InvalidArgument")
    return number


def _string(body: dict, key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ComputeError(f"{key} is required", code="InvalidArgument")
        return None
    if not isinstance(value, str):
        raise ComputeError(f"{key} must be a string", code="InvalidArgument")
    return value


def routes(compute_manager: Any, network_manager: Any, *,
           compute_off_reason: str | None = None,
           network_off_reason: str | None = None) -> web.RouteTableDef:
    """Routes for `compute_manager` (a ComputeManager) and `network_manager`
    (a network.NetworkManager).

    Either may be None when that layer is off on this host: its routes then
    answer 503 ``ComputeUnavailable`` / ``NetworkUnavailable`` with the reason.
    """
    r = web.RouteTableDef()

    def handler(layer: str):
        def wrap(fn):
            async def wrapped(request: web.Request) -> web.StreamResponse:
                if layer == "compute" and compute_manager is None:
                    return _error(ComputeError(
                        f"compute is off on this server: {compute_off_reason or 'not configured'}",
                        status=503, code="ComputeUnavailable"))
                if layer == "network" and network_manager is None:
                    return _error(ComputeError(
                        f"networking is off on this server: "
                        f"{network_off_reason or 'not configured'}",
                        status=503, code="NetworkUnavailable"))
                try:
                    return await fn(request)
                except ComputeError as exc:
                    return _error(exc)
                except NetworkError as exc:
                    return _error(from_network_error(exc))
            return wrapped
        return wrap

    run = asyncio.to_thread

    # -- VMs ----------------------------------------------------------------------

    @r.get(VMS)
    @handler("compute")
    async def list_vms(request: web.Request) -> web.Response:
        return web.json_response(await run(compute_manager.list))

    @r.post(VMS)
    @handler("compute")
    async def create_vm(request: web.Request) -> web.Response:
        body = await _body(request)
        kwargs: dict[str, Any] = {
            "name": _string(body, "name", required=True),
            "volume": _string(body, "volume", required=True),
            "network": _string(body, "network", required=True),
        }
        for key in ("kernel", "initrd", "cmdline", "user_data"):
            kwargs[key] = _string(body, key)
        for key in ("memory", "cpus"):
            if body.get(key) is not None:
                kwargs[key] = body[key]
        record = await run(lambda: compute_manager.create(**kwargs))
        if _flag(body.get("start")):
            info = await run(compute_manager.start, record.name)
        else:
            info = await run(compute_manager.info, record.name)
        return web.json_response(info, status=201)

    @r.get(VMS + "/{name}")
    @handler("compute")
    async def vm_info(request: web.Request) -> web.Response:
        return web.json_response(await run(compute_manager.info, request.match_info["name"]))

    @r.delete(VMS + "/{name}")
    @handler("compute")
    async def delete_vm(request: web.Request) -> web.Response:
        await run(compute_manager.delete, request.match_info["name"])
        return web.Response(status=204)

    @r.post(VMS + "/{name}/start")
    @handler("compute")
    async def start_vm(request: web.Request) -> web.Response:
        return web.json_response(await run(compute_manager.start, request.match_info["name"]))

    @r.post(VMS + "/{name}/stop")
    @handler("compute")
    async def stop_vm(request: web.Request) -> web.Response:
        body = await _body(request)
        raw = body.get("timeout", request.query.get("timeout"))
        kwargs = {} if raw is None else {"timeout": _number(raw, "timeout")}
        name = request.match_info["name"]
        return web.json_response(await run(lambda: compute_manager.stop(name, **kwargs)))

    @r.post(VMS + "/{name}/reboot")
    @handler("compute")
    async def reboot_vm(request: web.Request) -> web.Response:
        body = await _body(request)
        hard = _flag(body.get("hard", request.query.get("hard", False)))
        name = request.match_info["name"]
        return web.json_response(await run(lambda: compute_manager.reboot(name, hard=hard)))

    @r.get(VMS + "/{name}/console")
    @handler("compute")
    async def console(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        try:
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            raise ComputeError("offset must be an integer", code="InvalidArgument") from None
        if not _flag(request.query.get("follow", "0")):
            data, end = await run(compute_manager.console, name, offset)
            return web.Response(body=data, content_type="text/plain", charset="utf-8",
                                headers={CONSOLE_OFFSET_HEADER: str(end)})
        stream = compute_manager.follow_console(name, offset)  # raises NoSuchVM first
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        try:
            async for chunk in stream:
                await response.write(chunk)
        finally:
            await stream.aclose()
        await response.write_eof()
        return response

    @r.post(VMS + "/{name}/console")
    @handler("compute")
    async def console_input(request: web.Request) -> web.Response:
        data = await request.content.read(INPUT_MAX + 1)
        if len(data) > INPUT_MAX:
            raise ComputeError(f"send at most {INPUT_MAX} bytes of console input at a time",
                               status=413, code="InputTooLarge")
        await run(compute_manager.console_input, request.match_info["name"], data)
        return web.Response(status=204)

    # -- networks -------------------------------------------------------------------

    @r.get(NETWORKS)
    @handler("network")
    async def list_networks(request: web.Request) -> web.Response:
        networks = await run(network_manager.list)
        return web.json_response([n.as_dict() for n in networks])

    @r.post(NETWORKS)
    @handler("network")
    async def create_network(request: web.Request) -> web.Response:
        body = await _body(request)
        name = _string(body, "name", required=True)
        subnet = _string(body, "subnet", required=True)
        nat = _flag(body.get("nat", False))
        record = await run(lambda: network_manager.create(name, subnet, nat=nat))
        return web.json_response(record.as_dict(), status=201)

    @r.get(NETWORKS + "/{name}")
    @handler("network")
    async def network_info(request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def describe() -> dict:
            record = network_manager.get(name)
            return {**record.as_dict(),
                    "reservations": [x.as_dict() for x in network_manager.reservations(name)]}

        return web.json_response(await run(describe))

    @r.delete(NETWORKS + "/{name}")
    @handler("network")
    async def delete_network(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        force = _flag(request.query.get("force", "0"))
        if not await run(lambda: network_manager.delete(name, force=force)):
            raise ComputeError(f"no network named {name!r}", status=404, code="NoSuchNetwork")
        return web.Response(status=204)

    return r


def app(compute_manager: Any, network_manager: Any, **reasons: str | None) -> web.Application:
    """A stand-alone aiohttp application serving `routes()` (tests, or a separate socket)."""
    application = web.Application()
    application.add_routes(routes(compute_manager, network_manager, **reasons))
    return application
