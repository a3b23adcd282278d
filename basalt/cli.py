"""The `basalt` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from . import logs
from .admin_client import AdminError
from .backup import BackupError
from .config import DEFAULT_DATA_DIR, ConfigError, parse_address, parse_ec, parse_size
from .progress import Progress, human_bytes


def _run(coro) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServeOptions, serve
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    opts = ServeOptions(
        data_dir=args.data_dir, disks=args.disk or None,
        ec=parse_ec(args.ec) if args.ec else None,
        s3_address=parse_address(args.s3_address, 9000),
        nbd_address=parse_address(args.nbd_address, 10809),
        tls_cert=args.tls_cert, tls_key=args.tls_key, domain=args.domain, region=args.region,
        nbd_socket=args.nbd_socket, netns=args.netns, libvirt_uri=args.libvirt_uri,
        workers=args.workers, sync=not args.no_fsync, log_level=args.log_level,
    )
    logs.setup(args.log_level)
    _run(serve(opts))
    return 0


def admin_client(args: argparse.Namespace):
    from .admin_client import AdminClient
    from .credentials import for_client
    return AdminClient(args.endpoint, for_client(os.path.abspath(args.data_dir)))


def cmd_heal(args: argparse.Namespace) -> int:
    """Heal every object now (blocks until done), with progress, then a summary."""
    progress = Progress()
    result: dict = {}
    query = {"deep": "false" if args.quick else "true"}
    for line in admin_client(args).stream("POST", "/_basalt/v1/heal", query):
        if "progress" in line:
            p = line["progress"]
            progress.update(f"healing: {p['objects']} objects checked, {p['healed']} healed, "
                            f"{human_bytes(p['bytes_rebuilt'])} rebuilt, {p['failed']} failed")
        if line.get("done"):
            result = line
    progress.done()
    if not result:
        print("basalt: the server ended the heal without a result", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"heal done in {result['elapsed']:.1f}s: {result['objects']} objects checked, "
              f"{result['healed']} healed, {result['shards_rebuilt']} shards rebuilt "
              f"({human_bytes(result['bytes_rebuilt'])}), {result['removed']} dangling removed, "
              f"{result['failed']} failed")
        for err in result["errors"][:20]:
            print(f"  failed: {err}")
        if result.get("disks_offline"):
            print(f"  warning: {result['disks_offline']} disks were offline and not healed")
    return 1 if result["failed"] or result.get("disks_offline") else 0


def _print_list(items: list[dict], as_json: bool, line) -> int:
    if as_json:
        print(json.dumps(items))
    for item in [] if as_json else items:
        print(line(item))
    return 0


def _volume_line(v: dict) -> str:
    origin = f"  from {v['origin']}" if v.get("origin") and not v.get("snapshot") else ""
    return (f"{v['name']:24} {human_bytes(v['size']):>10} provisioned  "
            f"{human_bytes(v['allocated']):>10} allocated{origin}")


def cmd_volume(args: argparse.Namespace) -> int:
    """Block volume administration through the admin API."""
    client = admin_client(args)
    path = "/_basalt/v1/volumes"
    action = args.action
    if action == "list":
        return _print_list(client.call("GET", path, {"snapshots": "true"}), args.json,
                           _volume_line)
    if action == "create":
        if not args.size and not args.from_image:
            raise ConfigError("give --size (or --from-image)")
        body = {"name": args.name, "size": parse_size(args.size) if args.size else None}
        if args.from_image:
            body["image"] = args.from_image
        result = client.call("POST", path, body=body)
    elif action == "info":
        result = client.call("GET", f"{path}/{args.name}")
    elif action == "resize":
        result = client.call("PATCH", f"{path}/{args.name}",
                             body={"size": parse_size(args.size), "force": args.force})
    elif action == "snapshot":
        result = client.call("POST", f"{path}/{args.name}/snapshots",
                             body={"snapshot": args.snapshot})
    elif action == "clone":
        result = client.call("POST", f"{path}/{args.source}/clone", body={"name": args.name})
    elif action == "rollback":
        result = client.call("POST", f"{path}/{args.source}/rollback")
    elif action in ("backup", "restore"):
        from .backup import run_backup, run_restore
        return run_backup(args, client) if action == "backup" else run_restore(args, client)
    else:  # delete
        client.call("DELETE", f"{path}/{args.name}")
        print(f"deleted volume {args.name}")
        return 0
    print(json.dumps(result) if args.json else _volume_line(result))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """Disk images, stored as objects in the basalt-images bucket."""
    from .images import import_image, list_images
    client = admin_client(args)
    if args.action == "list":
        return _print_list(list_images(client), args.json, lambda image: (
            f"{image['name']:32} {human_bytes(image['size']):>10}  {image['format']}"))
    image = import_image(client, args.source, args.name, Progress())
    print(f"imported {args.source} as image {args.name} ({image['format']}, "
          f"{human_bytes(image['size'])})")
    return 0


def _network_line(n: dict) -> str:
    return (f"{n['name']:16} {n['subnet']:18} gateway {n['gateway']:15} "
            f"bridge {n['bridge']:15} {'nat' if n['nat'] else 'isolated'}")


def cmd_network(args: argparse.Namespace) -> int:
    """Virtual networks (bridge, DHCP, NAT) through the admin API."""
    client = admin_client(args)
    path = "/_basalt/v1/networks"
    if args.action == "list":
        return _print_list(client.call("GET", path), args.json, _network_line)
    if args.action == "delete":
        client.call("DELETE", f"{path}/{args.name}", {"force": "1"} if args.force else None)
        print(f"deleted network {args.name}")
        return 0
    if args.action == "create":
        result = client.call("POST", path, body={"name": args.name, "subnet": args.subnet,
                                                  "nat": args.nat})
    else:  # info
        result = client.call("GET", f"{path}/{args.name}")
    if args.json:
        print(json.dumps(result))
        return 0
    print(_network_line(result))
    for r in result.get("reservations", []):
        print(f"  {r['ip']:15} {r['mac']}  {r['owner']}")
    return 0


def _vm_line(vm: dict) -> str:
    return (f"{vm['name']:16} {vm['state']:9} {vm['ip']:15} {vm['cpus']} cpu "
            f"{vm['memory_mib']:>5} MiB  volume {vm['volume']}  network {vm['network']}")


def _console(client, name: str, follow: bool) -> int:
    chunks, _ = client.raw(f"/_basalt/v1/vms/{name}/console",
                           {"follow": "1"} if follow else None, timeout=None if follow else 60)
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
        out.flush()
    return 0


def cmd_vm(args: argparse.Namespace) -> int:
    """Virtual machines on Basalt volumes and networks through the admin API."""
    client = admin_client(args)
    path = "/_basalt/v1/vms"
    action = args.action
    # Booting, ACPI power-off and a first-use KVM probe can outlast the
    # default minute of an admin call.
    slow = 300
    if action == "list":
        return _print_list(client.call("GET", path), args.json, _vm_line)
    if action == "console":
        return _console(client, args.name, args.follow)
    if action == "delete":
        client.call("DELETE", f"{path}/{args.name}", timeout=slow)
        print(f"deleted VM {args.name}")
        return 0
    if action == "create":
        body = {"name": args.name, "volume": args.volume, "network": args.network,
                "memory": args.memory, "cpus": args.cpus, "cmdline": args.cmdline,
                "start": args.start}
        for key in ("kernel", "initrd"):
            if getattr(args, key):  # the server opens them: absolute paths
                body[key] = os.path.abspath(getattr(args, key))
        if args.user_data:
            with open(args.user_data, encoding="utf-8") as f:
                body["user_data"] = f.read()
        result = client.call("POST", path, body=body, timeout=slow)
    elif action == "info":
        result = client.call("GET", f"{path}/{args.name}")
    elif action == "stop":
        body = {"timeout": args.timeout} if args.timeout is not None else {}
        result = client.call("POST", f"{path}/{args.name}/stop", body=body,
                             timeout=slow + (args.timeout or 0))
    elif action == "reboot":
        result = client.call("POST", f"{path}/{args.name}/reboot", body={"hard": args.hard},
                             timeout=slow)
    else:  # start
        result = client.call("POST", f"{path}/{args.name}/start", timeout=slow)
    print(json.dumps(result) if args.json else _vm_line(result))
    return 0


def _add_json_flags(subparsers) -> None:
    for parser in subparsers.choices.values():
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basalt", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("BASALT_DATA_DIR", DEFAULT_DATA_DIR),
                        help="state directory (default: ./basalt-data)")
    parser.add_argument("--endpoint",
                        default=os.environ.get("BASALT_ENDPOINT", "http://127.0.0.1:9000"),
                        help="a running Basalt (default: $BASALT_ENDPOINT or http://127.0.0.1:9000)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start the storage, S3 and NBD services")
    p.add_argument("--disk", action="append", metavar="PATH",
                   help="a disk directory (repeat; default: 4 inside the data dir)")
    p.add_argument("--ec", metavar="K+M", help="erasure coding (default: from the disk count)")
    p.add_argument("--s3-address", default="127.0.0.1:9000", metavar="HOST:PORT")
    p.add_argument("--nbd-address", default="127.0.0.1:10809", metavar="HOST:PORT")
    p.add_argument("--nbd-socket", metavar="PATH", help="also serve NBD on this Unix socket")
    p.add_argument("--tls-cert", metavar="PEM", help="serve S3 over HTTPS with this certificate")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--domain", help="virtual-hosted-style domain (bucket.DOMAIN)")
    p.add_argument("--region", default="us-east-1", help="the region Basalt reports")
    p.add_argument("--workers", type=int, default=0, help="S3 worker processes (default: cores)")
    p.add_argument("--no-fsync", action="store_true",
                   help="skip fsync (benchmarks and throwaway data only)")
    p.add_argument("--netns", metavar="NS",
                   help="run networks and VMs inside this network namespace")
    p.add_argument("--libvirt-uri", metavar="URI",
                   help="libvirt to run VMs on (default: qemu:///system; "
                        "'private': a libvirtd of Basalt's own under DATA_DIR/run)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("heal", help="heal every object now and report")
    p.add_argument("--quick", action="store_true",
                   help="check shard presence and sizes only, not every checksum")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_heal)

    p = sub.add_parser("volume", help="block volumes (NBD exports)")
    vsub = p.add_subparsers(dest="action", required=True)
    v = vsub.add_parser("create", help="create a thin volume")
    v.add_argument("name")
    v.add_argument("--size", help="e.g. 10G (with --from-image: grow to at least this)")
    v.add_argument("--from-image", metavar="IMAGE",
                   help="a copy-on-write clone of an imported image")
    v = vsub.add_parser("list", help="list volumes")
    v = vsub.add_parser("info", help="one volume's sizes and state")
    v.add_argument("name")
    v = vsub.add_parser("resize", help="grow (online) or shrink (--force) a volume")
    v.add_argument("name")
    v.add_argument("--size", required=True)
    v.add_argument("--force", action="store_true", help="allow shrinking (loses data)")
    v = vsub.add_parser("delete", help="delete a volume (or a snapshot NAME@SNAP)")
    v.add_argument("name")
    v = vsub.add_parser("snapshot", help="take an instant read-only snapshot")
    v.add_argument("name")
    v.add_argument("snapshot")
    v = vsub.add_parser("clone", help="a new volume from a snapshot (copy-on-write)")
    v.add_argument("source", metavar="NAME@SNAP")
    v.add_argument("name", metavar="NEW")
    v = vsub.add_parser("rollback", help="return a volume to a snapshot")
    v.add_argument("source", metavar="NAME@SNAP")
    v = vsub.add_parser("backup", help="back a volume up to S3 (incremental)")
    v.add_argument("name")
    v.add_argument("--to", required=True, metavar="s3://BUCKET/PREFIX")
    v.add_argument("--endpoint-url", help="the target's S3 endpoint (default: "
                   "$AWS_ENDPOINT_URL, else this Basalt)")
    v = vsub.add_parser("restore", help="restore a backup onto a new volume")
    v.add_argument("source", metavar="s3://BUCKET/PREFIX[@BACKUP]")
    v.add_argument("--to", required=True, metavar="NAME")
    v.add_argument("--endpoint-url", help="the backup's S3 endpoint (default: "
                   "$AWS_ENDPOINT_URL, else this Basalt)")
    _add_json_flags(vsub)
    p.set_defaults(func=cmd_volume)

    p = sub.add_parser("image", help="disk images for volumes")
    isub = p.add_subparsers(dest="action", required=True)
    i = isub.add_parser("import", help="store a raw or qcow2 image (a file or s3://...)")
    i.add_argument("source", metavar="FILE|s3://BUCKET/KEY")
    i.add_argument("name")
    i = isub.add_parser("list", help="list images")
    i.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("network", help="virtual networks for VMs")
    nsub = p.add_subparsers(dest="action", required=True)
    n = nsub.add_parser("create", help="a bridge with DHCP (and NAT with --nat)")
    n.add_argument("name")
    n.add_argument("--subnet", required=True, metavar="CIDR", help="e.g. 10.20.0.0/24")
    n.add_argument("--nat", action="store_true", help="let guests reach the outside")
    nsub.add_parser("list", help="list networks")
    n = nsub.add_parser("info", help="a network and its address reservations")
    n.add_argument("name")
    n = nsub.add_parser("delete", help="delete a network")
    n.add_argument("name")
    n.add_argument("--force", action="store_true", help="even with VM NICs still on it")
    _add_json_flags(nsub)
    p.set_defaults(func=cmd_network)

    p = sub.add_parser("vm", help="virtual machines on volumes and networks")
    msub = p.add_subparsers(dest="action", required=True)
    m = msub.add_parser("create", help="define a VM booting from a volume")
    m.add_argument("name")
    m.add_argument("--volume", required=True, help="its disk (a Basalt volume)")
    m.add_argument("--network", required=True, help="the network of its NIC")
    m.add_argument("--memory", default="256M", help="e.g. 256M, 1G (default 256M)")
    m.add_argument("--cpus", type=int, default=1)
    m.add_argument("--kernel", metavar="FILE", help="boot this kernel directly")
    m.add_argument("--initrd", metavar="FILE", help="with --kernel: its initramfs")
    m.add_argument("--cmdline", help="with --kernel: the kernel command line")
    m.add_argument("--user-data", metavar="FILE", help="cloud-init user-data for the guest")
    m.add_argument("--start", action="store_true", help="start it at once")
    for action, text in (("start", "start a VM"), ("info", "one VM and its state"),
                         ("delete", "delete a VM (its volume stays)")):
        msub.add_parser(action, help=text).add_argument("name")
    m = msub.add_parser("stop", help="ACPI power-off, forced after --timeout")
    m.add_argument("name")
    m.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="wait this long for the guest (default 30)")
    m = msub.add_parser("reboot", help="ACPI reboot (--hard: reset)")
    m.add_argument("name")
    m.add_argument("--hard", action="store_true", help="reset at once instead of asking the guest")
    msub.add_parser("list", help="list VMs")
    m = msub.add_parser("console", help="the serial console output so far")
    m.add_argument("name")
    m.add_argument("--follow", "-f", action="store_true", help="keep streaming it")
    _add_json_flags(msub)
    p.set_defaults(func=cmd_vm)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The engine's commit and coding threads wake from I/O needing the GIL for a
    # moment; a short switch interval keeps them from waiting 5 ms behind the
    # event loop (measured: +30% small-object PUTs).
    sys.setswitchinterval(0.0005)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, OSError, AdminError, BackupError) as exc:
        print(f"basalt: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, not a traceback
        from storaged import StorageError
        if isinstance(exc, StorageError):
            print(f"basalt: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
