"""`basalt network ...` and `basalt vm ...`."""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError
from ..progress import human_bytes
from .common import admin_client, emit, emit_table

NETWORK_COLUMNS = [
    ("NAME", lambda n: n["name"], False),
    ("SUBNET", lambda n: n["subnet"], False),
    ("GATEWAY", lambda n: n["gateway"], False),
    ("BRIDGE", lambda n: n["bridge"], False),
    ("MODE", lambda n: "nat" if n["nat"] else "isolated", False),
]

VM_COLUMNS = [
    ("NAME", lambda vm: vm["name"], False),
    ("STATE", lambda vm: vm["state"], False),
    ("IP", lambda vm: vm.get("ip"), False),
    ("CPUS", lambda vm: vm["cpus"], True),
    ("MEMORY", lambda vm: human_bytes(vm["memory_mib"] << 20), True),
    ("VOLUME", lambda vm: vm["volume"], False),
    ("NETWORK", lambda vm: vm["network"], False),
]


def _network_text(n: dict) -> str:
    lines = [f"{n['name']}  {n['subnet']}  gateway {n['gateway']}  bridge {n['bridge']}  "
             f"{'nat' if n['nat'] else 'isolated'}"]
    lines += [f"  {r['ip']:15} {r['mac']}  {r['owner']}" for r in n.get("reservations", [])]
    return "\n".join(lines)


def cmd_network(args: argparse.Namespace) -> int:
    """Virtual networks (bridge, DHCP, NAT) through the admin API."""
    client = admin_client(args)
    path = "/_basalt/v1/networks"
    if args.action == "list":
        return emit_table(args, client.call("GET", path), NETWORK_COLUMNS)
    if args.action == "delete":
        client.call("DELETE", f"{path}/{args.name}", {"force": "1"} if args.force else None)
        return emit(args, {"name": args.name, "deleted": True}, f"deleted network {args.name}")
    if args.action == "create":
        result = client.call("POST", path, body={"name": args.name, "subnet": args.subnet,
                                                  "nat": args.nat})
    else:  # info
        result = client.call("GET", f"{path}/{args.name}")
    return emit(args, result, _network_text(result))


def _vm_line(vm: dict) -> str:
    return (f"{vm['name']}  {vm['state']}  {vm.get('ip') or '-'}  {vm['cpus']} cpu  "
            f"{human_bytes(vm['memory_mib'] << 20)}  volume {vm['volume']}  "
            f"network {vm['network']}")


def _console(args: argparse.Namespace, client) -> int:
    if args.json and args.follow:
        raise ConfigError("--follow streams the raw console; it does not go with --json")
    chunks, _ = client.raw(f"/_basalt/v1/vms/{args.name}/console",
                           {"follow": "1"} if args.follow else None,
                           timeout=None if args.follow else 60)
    if args.json:
        data = b"".join(chunks)
        return emit(args, {"name": args.name, "console": data.decode("utf-8", "replace")})
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
        return emit_table(args, client.call("GET", path), VM_COLUMNS)
    if action == "console":
        return _console(args, client)
    if action == "delete":
        client.call("DELETE", f"{path}/{args.name}", timeout=slow)
        return emit(args, {"name": args.name, "deleted": True}, f"deleted VM {args.name}")
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
    return emit(args, result, _vm_line(result))


def register(sub, add) -> None:
    p = add(sub, "network", help="virtual networks for VMs")
    nsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p.set_defaults(func=cmd_network)
    n = add(nsub, "create", help="a bridge with DHCP (and NAT with --nat)")
    n.add_argument("name")
    n.add_argument("--subnet", required=True, metavar="CIDR", help="e.g. 10.20.0.0/24")
    n.add_argument("--nat", action="store_true", help="let guests reach the outside")
    add(nsub, "list", help="list networks")
    add(nsub, "info", help="a network and its address reservations").add_argument("name")
    n = add(nsub, "delete", help="delete a network")
    n.add_argument("name")
    n.add_argument("--force", action="store_true", help="even with VM NICs still on it")

    p = add(sub, "vm", help="virtual machines on volumes and networks")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p.set_defaults(func=cmd_vm)
    m = add(msub, "create", help="define a VM booting from a volume")
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
        add(msub, action, help=text).add_argument("name")
    m = add(msub, "stop", help="ACPI power-off, forced after --timeout")
    m.add_argument("name")
    m.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="wait this long for the guest (default 30)")
    m = add(msub, "reboot", help="ACPI reboot (--hard: reset)")
    m.add_argument("name")
    m.add_argument("--hard", action="store_true", help="reset at once instead of asking the guest")
    add(msub, "list", help="list VMs")
    m = add(msub, "console", help="the serial console output so far")
    m.add_argument("name")
    m.add_argument("--follow", "-f", action="store_true", help="keep streaming it")
