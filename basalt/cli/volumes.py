"""`basalt volume ...`: block volumes, snapshots, backups."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import urllib.parse

from ..config import ConfigError, parse_size
from ..progress import Progress, human_bytes
from .common import admin_client, emit, emit_table, s3_errors_name, warn

PATH = "/_basalt/v1/volumes"
OVERCOMMIT = "{provisioned} provisioned on {usable} usable (thin volumes: writes fail when the " \
             "disks fill)"


def volume_line(v: dict) -> str:
    origin = f"  from {v['origin']}" if v.get("origin") and not v.get("snapshot") else ""
    encrypted = f"  encrypted (key {v['key_id']})" if v.get("encrypted") else ""
    return (f"{v['name']}  {human_bytes(v['size'])} provisioned  "
            f"{human_bytes(v['allocated'])} allocated{origin}{encrypted}")


VOLUME_COLUMNS = [
    ("NAME", lambda v: v["name"], False),
    ("SIZE", lambda v: human_bytes(v["size"]), True),
    ("ALLOCATED", lambda v: human_bytes(v["allocated"]), True),
    ("CONNECTIONS", lambda v: v.get("connections", 0), True),
    ("ORIGIN", lambda v: v.get("origin") if not v.get("snapshot") else "", False),
]


def _status(client) -> dict:
    """The server's NBD addresses and capacity ({} from a server without them)."""
    from ..admin_client import AdminError  # here: `basalt serve` never loads the gateway for it
    try:
        return client.call("GET", "/_basalt/v1/status") or {}
    except AdminError as exc:
        if exc.status == 404:
            return {}
        raise


def nbd_uris(client, status: dict, name: str) -> dict:
    """``nbd://HOST:PORT/NAME`` and ``nbd+unix:///NAME?socket=PATH`` (when known)."""
    out = {}
    host, _, port = (status.get("nbd") or "").rpartition(":")
    if port:
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = urllib.parse.urlsplit(client.endpoint).hostname or "127.0.0.1"
        out["nbd_uri"] = f"nbd://{f'[{host}]' if ':' in host else host}:{port}/{name}"
    if status.get("nbd_socket"):
        out["nbd_socket"] = status["nbd_socket"]
        out["nbd_unix_uri"] = f"nbd+unix:///{name}?socket={status['nbd_socket']}"
    return out


def overcommit(client, status: dict) -> str | None:
    """The warning when the volumes' sizes add up to more than the disks hold
    as volumes (raw capacity / the M+1 replicas), else None."""
    usable = (status.get("capacity") or {}).get("volumes")
    if not usable:
        return None
    provisioned = sum(v["size"] for v in client.call("GET", PATH) if not v.get("snapshot"))
    if provisioned <= usable:
        return None
    return OVERCOMMIT.format(provisioned=human_bytes(provisioned), usable=human_bytes(usable))


def _after_sizing(args, client, result: dict, lines: list[str]) -> int:
    """Warn about over-commit (stderr), then print the result."""
    status = _status(client)
    warning = overcommit(client, status)
    if warning:
        warn(warning)
        result = dict(result, warning=warning)
    if args.action == "create":
        uris = nbd_uris(client, status, result["name"])
        result = dict(result, **uris)
        lines += [f"  {uris[k]}" for k in ("nbd_uri", "nbd_unix_uri") if k in uris]
    return emit(args, result, "\n".join(lines))


def cmd_volume(args: argparse.Namespace) -> int:
    """Block volume administration through the admin API."""
    action = args.action
    size = parse_size(args.size) if getattr(args, "size", None) else None  # before connecting
    if action == "create" and size is None and not args.from_image:
        raise ConfigError("give --size (or --from-image)")
    if action == "create" and args.kms_key and not args.encrypted:
        raise ConfigError("--kms-key needs --encrypted")
    client = admin_client(args)
    if action == "list":
        return emit_table(args, client.call("GET", PATH, {"snapshots": "true"}), VOLUME_COLUMNS)
    if action == "create":
        body = {"name": args.name, "size": size}
        if args.from_image:
            body["image"] = args.from_image
        if args.encrypted:
            body["encrypted"] = True
            if args.kms_key:
                body["kms_key"] = args.kms_key
        result = client.call("POST", PATH, body=body)
        return _after_sizing(args, client, result, [f"created volume {volume_line(result)}"])
    if action == "resize":
        result = client.call("PATCH", f"{PATH}/{args.name}",
                             body={"size": size, "force": args.force})
        return _after_sizing(args, client, result, [f"resized volume {volume_line(result)}"])
    if action == "delete":
        client.call("DELETE", f"{PATH}/{args.name}")
        return emit(args, {"name": args.name, "deleted": True}, f"deleted volume {args.name}")
    if action == "backup":
        from ..backup import run_backup
        with s3_errors_name(args.to):
            return run_backup(args, client)
    if action == "restore":
        with s3_errors_name(args.source):
            return _restore(args, client)
    if action == "info":
        result = client.call("GET", f"{PATH}/{args.name}")
    elif action == "snapshot":
        result = client.call("POST", f"{PATH}/{args.name}/snapshots",
                             body={"snapshot": args.snapshot})
    elif action == "clone":
        result = client.call("POST", f"{PATH}/{args.source}/clone", body={"name": args.name})
    else:  # rollback
        result = client.call("POST", f"{PATH}/{args.source}/rollback")
    return emit(args, result, volume_line(result))


def _restore(args: argparse.Namespace, client) -> int:
    from ..backup import run_restore
    if not args.json:
        return run_restore(args, client)
    # run_restore prints its summary line; with --json it becomes one document.
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = run_restore(args, client)
    text = captured.getvalue().strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = {"restored": args.source, "volume": client.call("GET", f"{PATH}/{args.to}"),
                    "message": text}
    print(json.dumps(document))
    return code


BACKUP_COLUMNS = [
    ("ID", lambda b: b["id"], False),
    ("TIME", lambda b: b["time"], False),
    ("VOLUME", lambda b: b["volume"], False),
    ("SIZE", lambda b: human_bytes(b["size"]), True),
    ("STORED", lambda b: human_bytes(b["bytes"]), True),
]


def cmd_backups(args: argparse.Namespace) -> int:
    """`volume backups list|prune s3://BUCKET/PREFIX`."""
    if args.backups_action == "prune" and args.keep < 1:
        raise ConfigError("--keep must be at least 1")
    from .. import backup_catalog as catalog
    client = admin_client(args)
    with s3_errors_name(args.source):
        if args.backups_action == "list":
            return emit_table(args, catalog.list_backups(args, client), BACKUP_COLUMNS)
        result = catalog.prune_backups(args, client, Progress())
    return emit(args, result, f"pruned {len(result['removed'])} backups, kept "
                f"{len(result['kept'])}; deleted {result['packs_deleted']} packs "
                f"({human_bytes(result['bytes_freed'])})")


def register(sub, add) -> None:
    p = add(sub, "volume", help="block volumes (NBD exports)")
    vsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p.set_defaults(func=cmd_volume)
    v = add(vsub, "create", help="create a thin volume")
    v.add_argument("name")
    v.add_argument("--size", help="e.g. 10G, 10GiB, 512M, 1.5T or bytes "
                   "(with --from-image: grow to at least this)")
    v.add_argument("--from-image", metavar="IMAGE",
                   help="a copy-on-write clone of an imported image")
    v.add_argument("--encrypted", action="store_true",
                   help="encrypt the volume's blocks at rest (AES-256-XTS, its own data key)")
    v.add_argument("--kms-key", metavar="KEY",
                   help="with --encrypted: the KMS key sealing the data key (name, alias/NAME, "
                        "id or ARN; default: the built-in key)")
    add(vsub, "list", help="list volumes and snapshots")
    add(vsub, "info", help="one volume's sizes and state").add_argument("name")
    v = add(vsub, "resize", help="grow (online) or shrink (--force) a volume")
    v.add_argument("name")
    v.add_argument("--size", required=True, help="the new size, e.g. 20G")
    v.add_argument("--force", action="store_true", help="allow shrinking (loses data)")
    add(vsub, "delete", help="delete a volume (or a snapshot NAME@SNAP)").add_argument("name")
    v = add(vsub, "snapshot", help="take an instant read-only snapshot")
    v.add_argument("name")
    v.add_argument("snapshot")
    v = add(vsub, "clone", help="a new volume from a snapshot (copy-on-write)")
    v.add_argument("source", metavar="NAME@SNAP")
    v.add_argument("name", metavar="NEW")
    add(vsub, "rollback", help="return a volume to a snapshot").add_argument(
        "source", metavar="NAME@SNAP")
    endpoint_help = "the backups' S3 endpoint (default: $AWS_ENDPOINT_URL, else this Basalt)"
    v = add(vsub, "backup", help="back a volume up to S3 (incremental)")
    v.add_argument("name")
    v.add_argument("--to", required=True, metavar="s3://BUCKET/PREFIX")
    v.add_argument("--endpoint-url", help=endpoint_help)
    v.add_argument("--passphrase-file", metavar="FILE", help="encrypt the backup under this "
                   "passphrase (restorable anywhere with it); an encrypted volume's backup "
                   "is encrypted anyway, without one restorable only with this master key")
    v = add(vsub, "restore", help="restore a backup onto a new volume")
    v.add_argument("source", metavar="s3://BUCKET/PREFIX[@BACKUP]")
    v.add_argument("--to", required=True, metavar="NAME")
    v.add_argument("--endpoint-url", help=endpoint_help)
    v.add_argument("--passphrase-file", metavar="FILE",
                   help="the passphrase an encrypted backup was made with")
    v = add(vsub, "backups", help="list or prune the backups at an S3 location")
    bsub = v.add_subparsers(dest="backups_action", required=True, metavar="ACTION")
    v.set_defaults(func=cmd_backups)
    b = add(bsub, "list", help="the backups there, oldest first")
    b.add_argument("source", metavar="s3://BUCKET/PREFIX")
    b.add_argument("--endpoint-url", help=endpoint_help)
    b = add(bsub, "prune", help="keep the newest N backups, delete the others and "
            "the packs that no kept backup uses")
    b.add_argument("source", metavar="s3://BUCKET/PREFIX")
    b.add_argument("--keep", type=int, required=True, metavar="N")
    b.add_argument("--endpoint-url", help=endpoint_help)
