"""NetworkManager: the one entry point that keeps records and kernel in step.

Records (LMDB) are the truth; the kernel state (bridges, taps, dnsmasq, the
nftables table, ip_forward) is derived from them and can always be rebuilt
with `ensure()`. Mutations that touch the kernel are serialised across
threads and processes by an flock on the state directory, so two server
workers never race on one bridge or rewrite a hosts file from a stale view.

The methods are blocking (netlink and subprocesses); from asyncio code call
them through `asyncio.to_thread`.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from . import firewall, links
from .addressing import bridge_name, parse_subnet, tap_name, validate_name, validate_owner
from .dhcp import DhcpServer
from .errors import HostToolError, NetworkConflictError, NetworkNotFoundError
from .namespace import Namespace
from .records import Network, Reservation, Tap
from .store import Store

REQUIRED_TOOLS = ("ip", "dnsmasq", "nft", "sysctl")
_IP_FORWARD = "net.ipv4.ip_forward"
# Meta key set when Basalt itself switched ip_forward on, so it only ever
# switches off what it switched on.
_FORWARD_META = "ip_forward_enabled_by_basalt"
_CAP_NET_ADMIN = 12


def unavailable_reason() -> str | None:
    """Why networking cannot run on this host (missing tool or privilege), or None."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return "missing tools: " + ", ".join(missing)
    try:
        with open("/proc/self/status") as f:
            caps = next(line for line in f if line.startswith("CapEff:"))
        if not int(caps.split()[1], 16) >> _CAP_NET_ADMIN & 1:
            return "needs root or CAP_NET_ADMIN"
    except (OSError, StopIteration, ValueError):
        return "cannot read process capabilities"
    return None


class NetworkManager:
    """Basalt's virtual networks, kept under `state_dir`, inside `netns` if given."""

    def __init__(self, state_dir: str, netns: str | None = None):
        reason = unavailable_reason()
        if reason is not None:
            raise HostToolError(f"networking is unavailable: {reason}")
        self.state_dir = os.path.abspath(state_dir)
        self.namespace = Namespace(netns)
        os.makedirs(self.state_dir, exist_ok=True)
        self.dhcp_dir = os.path.join(self.state_dir, "dnsmasq")
        os.makedirs(self.dhcp_dir, mode=0o755, exist_ok=True)
        self._lock_path = os.path.join(self.state_dir, "lock")
        self._held = threading.local()
        self.store = Store(os.path.join(self.state_dir, "ipam"))

    def close(self) -> None:
        """Release the records handle; kernel state stays as it is."""
        self.store.close()

    def __enter__(self) -> NetworkManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Re-entrant per thread: flock locks conflict between two open files
        # even inside one process, so nested calls must not open another.
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(f, fcntl.LOCK_UN)

    def _dhcp(self, name: str) -> DhcpServer:
        return DhcpServer(self.namespace, self.dhcp_dir, name)

    # -- networks -----------------------------------------------------------

    def create(self, name: str, subnet: str, nat: bool = False) -> Network:
        """Create network `name` on IPv4 `subnet`: bridge, gateway, DHCP, firewall."""
        validate_name(name)
        layout = parse_subnet(subnet)
        record = Network(
            name=name,
            subnet=str(layout.subnet),
            bridge=bridge_name(name),
            gateway=str(layout.gateway),
            dhcp_start=str(layout.first),
            dhcp_end=str(layout.last),
            nat=bool(nat),
            created_at=time.time(),
        )
        with self._locked():
            self._refuse_host_overlap(record)
            self.store.add_network(record)
            try:
                with self.namespace.iproute() as ipr:
                    self._realize(ipr, record)
                self._sync_firewall()
            except BaseException:
                # A failed create leaves nothing behind, record included.
                self._unrealize(name, record.bridge, [])
                self.store.remove_network(name)
                self._sync_firewall()
                raise
        return record

    def _refuse_host_overlap(self, record: Network) -> None:
        subnet = record.layout.subnet
        ours = {n.bridge for n in self.store.networks()} | {record.bridge}
        with self.namespace.iproute() as ipr:
            for ifname, other in links.ipv4_networks(ipr, exclude=ours):
                if subnet.overlaps(other):
                    raise NetworkConflictError(
                        f"subnet {record.subnet} overlaps {other} on interface {ifname}"
                    )

    def get(self, name: str) -> Network:
        """The network called `name`; raises NetworkNotFoundError."""
        record = self.store.get_network(validate_name(name))
        if record is None:
            raise NetworkNotFoundError(f"no network named {name!r}")
        return record

    def list(self) -> list[Network]:
        """All networks, sorted by name."""
        return self.store.networks()

    def delete(self, name: str, force: bool = False) -> bool:
        """Delete network `name` and everything it owns; returns False if it did not exist.

        Refuses while taps or other interfaces are on its bridge unless
        `force`. Safe to repeat, and cleans up leftovers of a half-done delete.
        """
        validate_name(name)
        with self._locked():
            record = self.store.get_network(name)
            bridge = record.bridge if record else bridge_name(name)
            taps = self.store.taps(name)
            with self.namespace.iproute() as ipr:
                ports = links.bridge_ports(ipr, bridge)
            owners = {t.name: t.owner for t in taps}
            busy = sorted(set(owners) | set(ports))
            if busy and not force:
                named = [f"{tap} ({owners[tap]})" if tap in owners else tap for tap in busy]
                raise NetworkConflictError(
                    f"network {name!r} still has taps: {', '.join(named)}"
                    " (delete their VMs first, or force)"
                )
            self._unrealize(name, bridge, taps)
            self.store.remove_network(name)
            self._sync_firewall()
        return record is not None

    def _realize(self, ipr, net: Network) -> list[str]:
        """Bring one network's kernel state in line with its records; returns what changed."""
        done = []
        if links.ensure_bridge(ipr, net):
            done.append(f"created bridge {net.bridge} for {net.name}")
            # dnsmasq's DHCP socket is bound to the old interface index.
            self._dhcp(net.name).stop()
        for tap in self.store.taps(net.name):
            if links.ensure_tap(ipr, tap.name, net.bridge):
                done.append(f"created tap {tap.name} for {tap.owner} on {net.name}")
        dhcp = self._dhcp(net.name)
        dhcp.write_hosts(self.store.reservations(net.name))
        if dhcp.start(net):
            done.append(f"started dnsmasq for {net.name}")
        return done

    def _unrealize(self, name: str, bridge: str, taps: list[Tap]) -> None:
        dhcp = self._dhcp(name)
        dhcp.stop()
        dhcp.remove_files()
        with self.namespace.iproute() as ipr:
            for tap in taps:
                links.remove_link(ipr, tap.name, "tun")
            links.remove_link(ipr, bridge, "bridge")

    def _sync_firewall(self) -> None:
        networks = self.store.networks()
        firewall.apply(self.namespace, networks)
        enabled = self.namespace.read_sysctl(_IP_FORWARD) == "1"
        if any(n.nat for n in networks):
            if not enabled:
                self.namespace.write_sysctl(_IP_FORWARD, "1")
                self.store.set_meta(_FORWARD_META, "1")
        elif enabled and self.store.get_meta(_FORWARD_META):
            self.namespace.write_sysctl(_IP_FORWARD, "0")
            self.store.set_meta(_FORWARD_META, None)

    # -- taps -----------------------------------------------------------------

    def create_tap(self, network: str, owner: str) -> str:
        """Create (or re-use) `owner`'s tap on `network`, attached and up; returns its name."""
        net = self.get(network)
        validate_owner(owner)
        with self._locked():
            known = {t.owner for t in self.store.taps(network)}
            tap = self.store.add_tap(network, owner)
            try:
                with self.namespace.iproute() as ipr:
                    if links.ensure_bridge(ipr, net):
                        self._dhcp(network).stop()
                        self._dhcp(network).start(net)
                    links.ensure_tap(ipr, tap.name, net.bridge)
            except BaseException:
                if owner not in known:
                    self.store.remove_tap(network, owner)
                raise
        return tap.name

    def delete_tap(self, network: str, owner: str) -> bool:
        """Remove `owner`'s tap from `network`; returns False if there was none."""
        validate_name(network)
        validate_owner(owner)
        with self._locked():
            with self.namespace.iproute() as ipr:
                removed = links.remove_link(ipr, tap_name(network, owner), "tun")
            return self.store.remove_tap(network, owner) is not None or removed

    def taps(self, network: str) -> list[Tap]:
        """Tap records of `network`."""
        self.get(network)
        return self.store.taps(network)

    # -- addresses ------------------------------------------------------------

    def allocate(
        self, network: str, owner: str, mac: str | None = None, ip: str | None = None
    ) -> tuple[str, str]:
        """Reserve a static (mac, ip) for `owner` on `network` and hand it to DHCP.

        A random 52:54:00 MAC and the lowest free address are chosen when not
        given. Idempotent for the same owner; never hands out an address twice.
        """
        self.get(network)
        leases = self._dhcp(network).leases()
        reservation = self.store.reserve(network, owner, mac=mac, ip=ip, leases=leases)
        self._publish_reservations(network)
        return reservation.mac, reservation.ip

    def release(self, network: str, owner: str) -> bool:
        """Drop `owner`'s reservation on `network`; returns False if it had none."""
        self.get(network)
        released = self.store.release(network, owner) is not None
        if released:
            self._publish_reservations(network)
        return released

    def reservations(self, network: str) -> list[Reservation]:
        """Static reservations of `network`."""
        self.get(network)
        return self.store.reservations(network)

    def _publish_reservations(self, network: str) -> None:
        # Under the lock and from a fresh read, so the last writer of the
        # hosts file always writes the latest committed reservations.
        with self._locked():
            if self.store.get_network(network) is None:
                return
            dhcp = self._dhcp(network)
            dhcp.write_hosts(self.store.reservations(network))
            dhcp.reload()

    # -- supervision ----------------------------------------------------------

    def ensure(self) -> list[str]:
        """Re-create missing kernel state from the records; returns what was repaired.

        Idempotent. Run at server start (after a reboot nothing exists) and
        periodically: it restarts a dnsmasq that died and reloads the firewall.
        Networks that cannot be restored are reported in one HostToolError
        after all the others have been.
        """
        done: list[str] = []
        failed: list[str] = []
        with self._locked():
            networks = self.store.networks()
            with self.namespace.iproute() as ipr:
                for net in networks:
                    # One broken network must not keep the others down.
                    try:
                        done += self._realize(ipr, net)
                    except Exception as exc:
                        failed.append(f"{net.name}: {exc}")
            known = {n.name for n in networks}
            for pid_file in glob.glob(os.path.join(self.dhcp_dir, "*.pid")):
                name = os.path.basename(pid_file)[: -len(".pid")]
                if name not in known:
                    dhcp = self._dhcp(name)
                    if dhcp.stop():
                        done.append(f"stopped orphan dnsmasq of {name}")
                    dhcp.remove_files()
            self._sync_firewall()
        if failed:
            raise HostToolError("could not restore " + "; ".join(failed))
        return done

    restore = ensure

    def check(self) -> dict[str, list[str]]:
        """Problems per network (empty list = healthy), without changing anything."""
        report: dict[str, list[str]] = {}
        networks = self.store.networks()
        table = firewall.current(self.namespace)
        with self.namespace.iproute() as ipr:
            for net in networks:
                problems = []
                if not links.link_exists(ipr, net.bridge):
                    problems.append(f"bridge {net.bridge} is missing")
                else:
                    ports = set(links.bridge_ports(ipr, net.bridge))
                    for tap in self.store.taps(net.name):
                        if tap.name not in ports:
                            problems.append(f"tap {tap.name} is missing or detached")
                if not self._dhcp(net.name).is_running():
                    problems.append("dnsmasq is not running")
                if table is None or f'"{net.bridge}"' not in table:
                    problems.append("firewall rules are missing")
                report[net.name] = problems
        return report

    def teardown(self) -> None:
        """Remove all kernel state (dnsmasq, taps, bridges, nft table) but keep records.

        `ensure()` brings it all back; leases are kept so guests keep their addresses.
        """
        with self._locked():
            with self.namespace.iproute() as ipr:
                for net in self.store.networks():
                    self._dhcp(net.name).stop()
                    for tap in self.store.taps(net.name):
                        links.remove_link(ipr, tap.name, "tun")
                    links.remove_link(ipr, net.bridge, "bridge")
            firewall.remove(self.namespace)
            if self.store.get_meta(_FORWARD_META):
                self.namespace.write_sysctl(_IP_FORWARD, "0")
                self.store.set_meta(_FORWARD_META, None)
