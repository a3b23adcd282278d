"""`basalt serve` and `basalt heal`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
from typing import TYPE_CHECKING

from ..config import ConfigError, parse_address, parse_ec
from ..progress import Progress, human_bytes
from .common import CLIError, admin_client, emit

if TYPE_CHECKING:
    from ..cluster_node import NodeTLS


def _run(coro) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    from .. import logs
    from ..server import ServeOptions, serve
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if not args.lifecycle_day_seconds > 0:
        raise ConfigError("--lifecycle-day-seconds must be positive")
    opts = ServeOptions(
        data_dir=args.data_dir, disks=args.disk or None,
        ec=parse_ec(args.ec) if args.ec else None,
        s3_address=parse_address(args.s3_address, 9000),
        nbd_address=parse_address(args.nbd_address, 10809),
        tls_cert=args.tls_cert, tls_key=args.tls_key, domain=args.domain, region=args.region,
        nbd_socket=args.nbd_socket, netns=args.netns, libvirt_uri=args.libvirt_uri,
        workers=args.workers, sync=not args.no_fsync, log_level=args.log_level,
        lifecycle_day_ns=round(args.lifecycle_day_seconds * 1e9),
        master_key_file=args.master_key_file, allow_sse_c_over_http=args.allow_sse_c_over_http,
        usage_flush_seconds=args.usage_flush_seconds, usage_hour_seconds=args.usage_hour_seconds,
    )
    if args.cluster:
        from ..cluster_node import ClusterOptions
        if not args.node or not args.advertise:
            raise ConfigError("--cluster needs --node NAME and --advertise HOST:PORT")
        opts = dataclasses.replace(opts, cluster=ClusterOptions(
            args.cluster, args.node, parse_address(args.advertise, 9100), args.zone or "",
            node_tls(args)))
    elif args.node or args.advertise or args.zone:
        raise ConfigError("--node, --advertise and --zone go with --cluster")
    elif args.node_tls_cert or args.node_tls_key or args.node_tls_ca:
        raise ConfigError("--node-tls-cert, --node-tls-key and --node-tls-ca go with --cluster "
                          "(they secure the node-to-node RPC)")
    if args.console_idle_seconds:  # the S3 workers inherit it (gateway.console reads it)
        os.environ["BASALT_CONSOLE_IDLE_SECONDS"] = str(args.console_idle_seconds)
    logs.setup(args.log_level)
    # What the imports made (~41,000 objects) lives as long as the server: keep
    # the collector's full passes from walking it each time (~14 ms -> ~0 ms).
    # The S3 workers freeze their own after start-up (basalt.worker).
    gc.collect()
    gc.freeze()
    try:
        _run(serve(opts))
    finally:
        gc.unfreeze()  # the process as it was (tests call this in-process)
    return 0


def node_tls(args: argparse.Namespace) -> NodeTLS | None:
    """The node RPC's TLS (basalt.cluster_node.NodeTLS) from the serve options,
    checked now: unreadable or mismatched files stop the server before it starts."""
    import ssl

    from ..cluster_node import NodeTLS
    if bool(args.node_tls_cert) != bool(args.node_tls_key):
        raise ConfigError("--node-tls-cert and --node-tls-key go together")
    if not args.node_tls_cert:
        if args.node_tls_ca:
            raise ConfigError("--node-tls-ca needs --node-tls-cert and --node-tls-key "
                              "(the node's own certificate, signed by that CA)")
        return None
    tls = NodeTLS(os.path.abspath(args.node_tls_cert), os.path.abspath(args.node_tls_key),
                  os.path.abspath(args.node_tls_ca) if args.node_tls_ca else None)
    try:
        tls.server_context()
        tls.client_context()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the node-RPC TLS files ({tls.cert}, {tls.key}"
                          f"{', ' + tls.ca if tls.ca else ''}): {exc}") from None
    return tls


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
        raise CLIError("IncompleteHeal", "the server ended the heal without a result", 1)
    lines = [f"heal done in {result['elapsed']:.1f}s: {result['objects']} objects checked, "
             f"{result['healed']} healed, {result['shards_rebuilt']} shards rebuilt "
             f"({human_bytes(result['bytes_rebuilt'])}), {result['removed']} dangling removed, "
             f"{result['failed']} failed"]
    lines += [f"  failed: {err}" for err in result["errors"][:20]]
    if result.get("disks_offline"):
        lines.append(f"  warning: {result['disks_offline']} disks were offline and not healed")
    emit(args, result, "\n".join(lines))
    return 1 if result["failed"] or result.get("disks_offline") else 0


def register(sub, add) -> None:
    p = add(sub, "serve", help="start the storage, S3 and NBD services")
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
    p.add_argument("--lifecycle-day-seconds", type=float, default=86400, metavar="N",
                   help="length of a lifecycle rule's day (default 86400; shorter for tests)")
    p.add_argument("--cluster", metavar="etcd://HOST:PORT[,HOST:PORT...]",
                   help="join the cluster coordinated by this etcd")
    p.add_argument("--node", metavar="NAME", help="this node's name in the cluster")
    p.add_argument("--advertise", metavar="HOST:PORT",
                   help="the node-to-node RPC address this node listens on")
    p.add_argument("--zone", metavar="Z", help="this node's failure zone")
    p.add_argument("--node-tls-cert", metavar="PEM",
                   help="serve the node RPC over HTTPS only with this certificate (its SAN "
                        "must hold the --advertise host); also presented to the other nodes")
    p.add_argument("--node-tls-key", metavar="PEM", help="the node certificate's private key")
    p.add_argument("--node-tls-ca", metavar="PEM",
                   help="the CA that signs the nodes' certificates: peers are verified "
                        "against it and must present one (mutual TLS); default: the "
                        "system's CAs verify peers, no client certificate required")
    p.add_argument("--master-key-file", metavar="PATH",
                   help="the key every encryption key is sealed under (default: DATA_DIR/"
                        "master.key, generated on first start; keep a copy off the host)")
    p.add_argument("--allow-sse-c-over-http", action="store_true",
                   help="accept SSE-C keys over plain HTTP (tests only: AWS refuses them)")
    p.add_argument("--usage-flush-seconds", type=float, default=10.0, metavar="N",
                   help="metered usage reaches `basalt usage` within N seconds (default 10; "
                        "0 turns metering off)")
    p.add_argument("--usage-hour-seconds", type=float, default=3600.0, metavar="N",
                   help="length of a metered hour in seconds (default 3600; shorter for "
                        "tests and demos: a day of usage in 24 N seconds)")
    p.add_argument("--console-idle-seconds", type=float, metavar="N",
                   help="web console sessions end after N idle seconds (default 1800)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = add(sub, "heal", help="heal every object now and report")
    p.add_argument("--quick", action="store_true",
                   help="check shard presence and sizes only, not every checksum")
    p.set_defaults(func=cmd_heal)
