"""A VM's serial console over the console's WebSocket, both ways.

Output: the owner's followed console stream (``GET .../console?follow=1``,
the last 64 KiB first) relayed as text. Input: what the browser sends (text
or binary messages) is queued and typed into the guest with ``POST
.../console``, one request at a time so keystrokes keep their order; what
arrives while one is in flight goes in the next. A refusal (the VM is off,
the guest does not read its serial port, an output-only console) comes
back on the socket as a bracketed notice. The owner serves one input
connection to the guest at a time, so any number of browsers can share a
console. Authentication and CSRF are the caller's (api.vm_console).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import urllib.parse

import aiohttp
from aiohttp import web

REPLAY = 64 << 10  # output from before the console opened that it shows first
PENDING_MAX = 64 << 10  # typed bytes waiting for the guest; more is dropped (and said so)


async def _notice(ws: web.WebSocketResponse, text: str) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(f"\r\n[{text}]\r\n")


async def bridge(request: web.Request, owner_socket: str, name: str) -> web.WebSocketResponse:
    """Serve the WebSocket of `request` as VM `name`'s console until either side ends."""
    url = f"http://owner/_basalt/v1/vms/{urllib.parse.quote(name, safe='')}/console"
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    pending = bytearray()
    typed = asyncio.Event()

    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=owner_socket),
                                     timeout=aiohttp.ClientTimeout(total=None)) as client:

        async def output() -> None:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            async with client.get(url, params={"follow": "1", "offset": str(-REPLAY)}) as upstream:
                if upstream.status != 200:
                    await ws.send_str(f"[console unavailable: {await upstream.text()}]\r\n")
                    return
                async for chunk in upstream.content.iter_any():
                    await ws.send_str(decoder.decode(chunk))
                await ws.send_str("\r\n[the console stream ended]\r\n")

        async def keyboard() -> None:
            async for message in ws:  # ends when the browser closes
                if message.type == aiohttp.WSMsgType.TEXT:
                    data = message.data.encode()
                elif message.type == aiohttp.WSMsgType.BINARY:
                    data = message.data
                else:
                    continue
                if len(pending) + len(data) > PENDING_MAX:
                    await _notice(ws, "input dropped: the guest is not taking it")
                    continue
                pending.extend(data)
                typed.set()

        async def typist() -> None:
            while True:
                await typed.wait()
                typed.clear()
                data = bytes(pending)
                pending.clear()
                try:
                    async with client.post(url, data=data) as answer:
                        if answer.status == 204:
                            continue
                        try:
                            why = (await answer.json())["message"]
                        except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
                            why = f"HTTP {answer.status}"
                except aiohttp.ClientError as exc:
                    why = f"the disk-owning process is unreachable: {exc}"
                await _notice(ws, f"input not delivered: {why}")

        tasks = [asyncio.ensure_future(output()), asyncio.ensure_future(keyboard())]
        helper = asyncio.ensure_future(typist())
        try:
            done, _ = await asyncio.wait([*tasks, helper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    await _notice(ws, f"console stream ended: {exc}")
        finally:
            for task in (*tasks, helper):
                task.cancel()
            await asyncio.gather(*tasks, helper, return_exceptions=True)
            await ws.close()
    return ws
