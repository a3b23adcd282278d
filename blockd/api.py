"""The volume part of the admin API (``/_basalt/v1/volumes``), as aiohttp routes.

Served by the process that owns the disks on a Unix socket; the S3 workers
authenticate admin requests and forward these to it. The volume engine refuses
with domain errors (blockd/errors.py); this is where their codes become HTTP
statuses, in one table.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web

from storaged import StorageError

from . import backup_cipher, images, restore
from .errors import (
    InvalidArgument,
    InvalidVolumeName,
    NoSuchVolume,
    ServiceUnavailable,
    VolumeError,
)
from .manager import MAX_SIZE, VolumeManager
from .pool import CHUNK

PREFIX = "/_basalt/v1/volumes"
# The volume side of images (forwarded to the owner like every /_basalt/v1/volume* path).
IMAGES = "/_basalt/v1/volume-images"
# Backup keys sealed by (and checked against) this server's master key.
BACKUP_KEYS = "/_basalt/v1/volume-backup-keys"


# The HTTP status of each refusal's code (blockd/images.py's included). A code
# not listed is 400 for an InvalidArgument, else 500: a refusal nobody mapped.
STATUS = {
    "NoSuchVolume": 404, "NoSuchImage": 404,
    "InternalVolume": 403,
    "VolumeExists": 409, "SnapshotExists": 409, "VolumeInUse": 409, "ShrinkRefused": 409,
    "VolumeHasSnapshots": 409, "ImageInUse": 409,
    "InvalidImage": 400, "BackupDamaged": 422, "BackupKeyInvalid": 400,
    "QemuImgMissing": 501,
    "ServiceUnavailable": 503,
    # an encrypted volume's KMS key (the KMS exception names, as AWS KMS answers them)
    "NotFoundException": 400, "DisabledException": 400, "InvalidCiphertextException": 400,
    "KMSInternalException": 500, "EncryptionUnavailable": 501,
}


def http_status(exc: VolumeError) -> int:
    """The HTTP status answering a refused volume operation."""
    found = STATUS.get(exc.code)
    if found is not None:
        return found
    return 400 if isinstance(exc, InvalidArgument) else 500


def _error(exc: VolumeError) -> web.Response:
    return web.json_response({"code": exc.code, "message": exc.message}, status=http_status(exc))


async def json_body(request: web.Request, error: Callable[[str], Exception]) -> dict:
    """The request's JSON object body ({} when empty); `error(message)` is raised otherwise."""
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        raise error("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise error("the request body must be a JSON object")
    return data


async def _body(request: web.Request) -> dict:
    return await json_body(request, lambda message: InvalidArgument("MalformedJSON", message))


def _human(n: float) -> str:
    """``1.0 PiB`` (binary units, as the CLI prints sizes)."""
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        n /= 1024
        if n < 1024 or unit == "EiB":
            break
    return f"{n:.1f} {unit}"


def _size(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument("InvalidSize", "size must be a number of bytes")
    if not 0 < value <= MAX_SIZE:
        raise InvalidArgument("InvalidSize",
                              f"size {_human(value)} is over the limit of {_human(MAX_SIZE)}"
                              if value > 0 else "size must be at least 1 byte")
    return value


def routes(manager: VolumeManager) -> web.RouteTableDef:
    r = web.RouteTableDef()

    def handler(fn):
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except VolumeError as exc:
                return _error(exc)
            except StorageError as exc:  # e.g. no write quorum for an image's object
                return _error(ServiceUnavailable(str(exc)))
        return wrapped

    @r.get(PREFIX)
    @handler
    async def list_volumes(request: web.Request) -> web.Response:
        """Volumes; snapshots (backup ones too) with ``?snapshots=true``; the images'
        internal volumes only with ``?internal=true``."""
        snaps = request.query.get("snapshots", "false") == "true"
        internal = request.query.get("internal", "false") == "true"
        return web.json_response([v.as_dict() for v in manager.list(snaps, internal)])

    @r.post(PREFIX)
    @handler
    async def create(request: web.Request) -> web.Response:
        body = await _body(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidVolumeName(message="name is required")
        encrypted, kms_key = body.get("encrypted", False), body.get("kms_key")
        if not isinstance(encrypted, bool) or not isinstance(kms_key, str | None):
            raise InvalidArgument("InvalidEncryption",
                                  "encrypted is true or false, kms_key a KMS key name or id")
        if kms_key is not None and not encrypted:
            raise InvalidArgument("InvalidEncryption", "kms_key needs encrypted: true")
        if body.get("image"):
            if encrypted:
                raise InvalidArgument("InvalidEncryption",
                                      "volumes made from an image cannot be encrypted")
            size = _size(body["size"]) if body.get("size") is not None else None
            info = await images.volume_from_image(manager, manager.store, str(body["image"]),
                                                  name, size)
        else:
            info = await manager.create(name, _size(body.get("size")), encrypted=encrypted,
                                        kms_key=kms_key)
        return web.json_response(info.as_dict(), status=201)

    @r.get(PREFIX + "/{name}")
    @handler
    async def info(request: web.Request) -> web.Response:
        return web.json_response(manager.info(request.match_info["name"]).as_dict())

    @r.patch(PREFIX + "/{name}")
    @handler
    async def resize(request: web.Request) -> web.Response:
        body = await _body(request)
        info = await manager.resize(request.match_info["name"], _size(body.get("size")),
                                    force=bool(body.get("force")))
        return web.json_response(info.as_dict())

    @r.delete(PREFIX + "/{name}")
    @handler
    async def delete(request: web.Request) -> web.Response:
        await manager.delete(request.match_info["name"])
        return web.Response(status=204)

    @r.post(PREFIX + "/{name}/snapshots")
    @handler
    async def snapshot(request: web.Request) -> web.Response:
        body = await _body(request)
        note = body.get("note") or ""
        if not isinstance(note, str) or len(note) > 1024:
            raise InvalidArgument("InvalidNote", "note must be a string of at most 1024 chars")
        info = await manager.snapshot(request.match_info["name"], str(body.get("snapshot", "")),
                                      note=note)
        return web.json_response(info.as_dict(), status=201)

    @r.get(PREFIX + "/{name}/snapshots")
    @handler
    async def snapshots(request: web.Request) -> web.Response:
        return web.json_response([s.as_dict() for s in
                                  manager.snapshots(request.match_info["name"])])

    @r.post(PREFIX + "/{name}/clone")
    @handler
    async def clone(request: web.Request) -> web.Response:
        body = await _body(request)
        info = await manager.clone(request.match_info["name"], str(body.get("name", "")))
        return web.json_response(info.as_dict(), status=201)

    @r.post(PREFIX + "/{name}/rollback")
    @handler
    async def rollback(request: web.Request) -> web.Response:
        return web.json_response((await manager.rollback(request.match_info["name"])).as_dict())

    @r.get(PREFIX + "/{name}/diff")
    @handler
    async def diff(request: web.Request) -> web.Response:
        """How many chunks a snapshot has allocated; those allocated and changed
        since snapshot ``base`` (all without one), and those unmapped since."""
        base = request.query.get("base") or None
        entries, changed = manager.diff(request.match_info["name"], base)
        return web.json_response({"chunk_size": CHUNK,
                                  "size": manager.info(request.match_info["name"]).size,
                                  "allocated": len(entries),
                                  "changed": [i for i in changed if i in entries],
                                  "removed": [i for i in changed if i not in entries]})

    @r.post(PREFIX + "/{name}/restore")
    @handler
    async def restore_packs(request: web.Request) -> web.StreamResponse:
        """Write a batch of a backup's packs into the volume (blockd/restore.py):
        JSON lines ``{"written": N}`` while it runs, then ``{"done": true,
        "written": N}`` once the batch is durable, or ``{"error": CODE, "message"}``."""
        name = request.match_info["name"]
        body = await _body(request)
        if name not in manager.records:
            raise NoSuchVolume(name)
        keys = restore.parse_keys(body, manager)
        packs = restore.parse_packs(body, manager.records[name].size, keys)
        ca = body.get("ca") if isinstance(body.get("ca"), str) else None
        pinned = body.get("pinned") is True and ca is not None
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        written = [0]
        task = asyncio.ensure_future(restore.restore(
            manager, name, packs, ca, lambda n: written.__setitem__(0, n), keys, pinned))
        try:
            while not task.done():
                await asyncio.wait([task], timeout=0.5)
                if not task.done():
                    await resp.write(json.dumps({"written": written[0]}).encode() + b"\n")
            line = {"done": True, "written": task.result()}
        except VolumeError as exc:
            line = {"error": exc.code, "message": exc.message}
        except (StorageError, OSError) as exc:  # e.g. a failed flush
            line = {"error": "ServiceUnavailable", "message": str(exc)}
        finally:
            if not task.done():  # the client went away: stop fetching
                task.cancel()
        await resp.write(json.dumps(line).encode() + b"\n")
        await resp.write_eof()
        return resp

    @r.post(BACKUP_KEYS)
    @handler
    async def backup_key(request: web.Request) -> web.Response:
        """Seal a backup key the CLI made (``{"key": B64}`` → ``{"sealed": B64}``:
        only a server with this master key opens it), or check that a sealed one
        opens here (``{"sealed": B64}`` → ``{"valid": true}``). Never answers a key."""
        body = await _body(request)
        try:
            if "sealed" in body:
                backup_cipher.open_on_server(restore.server_key(manager),
                                             backup_cipher.unb64(body["sealed"]))
                return web.json_response({"valid": True})
            key = backup_cipher.unb64(body.get("key"))
            if len(key) != backup_cipher.KEY_BYTES:
                raise InvalidArgument("InvalidKeys", "a backup key is 32 bytes")
        except backup_cipher.BackupKeyError as exc:
            raise restore.BackupKeyInvalid(str(exc)) from None
        sealed = backup_cipher.seal_for_server(restore.server_key(manager), key)
        return web.json_response({"sealed": backup_cipher.b64(sealed)})

    @r.get(IMAGES)
    @handler
    async def image_usage(request: web.Request) -> web.Response:
        """``{image: {"bases": [...], "volumes": [...]}}`` for images with a base volume."""
        return web.json_response(images.usage(manager))

    @r.delete(IMAGES + "/{image}")
    @handler
    async def delete_image(request: web.Request) -> web.Response:
        """Delete an image (object and bases; 409 ImageInUse naming the volumes), or with
        ``?stale=true`` only the unused bases of its earlier versions."""
        stale = request.query.get("stale", "false") == "true"
        return web.json_response(await images.delete_image(
            manager, manager.store, request.match_info["image"], stale_only=stale))

    @r.post("/_basalt/v1/volume-heal")
    @handler
    async def heal(request: web.Request) -> web.Response:
        return web.json_response(await manager.heal())

    return r


def owner_app(manager: VolumeManager) -> web.Application:
    app = web.Application()
    app.add_routes(routes(manager))
    return app
