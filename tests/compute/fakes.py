"""Stand-ins for the unit tests: a network manager without a kernel, and volumes.

`FakeNetworks` has NetworkManager's interface as the compute package uses it
(networks, reservations, taps) and raises the network package's real errors,
so the compute code under test cannot tell the difference.
"""

from __future__ import annotations

import ipaddress
import time

from compute.volumes import ExportInfo
from network import Network, NetworkConflictError, NetworkNotFoundError, Reservation, Tap
from network.addressing import bridge_name, parse_subnet, tap_name, validate_name


class FakeNetworks:
    def __init__(self) -> None:
        self.networks: dict[str, Network] = {}
        self.reserved: dict[tuple[str, str], Reservation] = {}
        self.tap_records: dict[tuple[str, str], Tap] = {}
        self.calls: list[tuple[str, ...]] = []

    def create(self, name: str, subnet: str, nat: bool = False) -> Network:
        validate_name(name)
        layout = parse_subnet(subnet)
        if name in self.networks:
            raise NetworkConflictError(f"network {name!r} already exists")
        net = Network(name, str(layout.subnet), bridge_name(name), str(layout.gateway),
                      str(layout.first), str(layout.last), bool(nat), time.time())
        self.networks[name] = net
        return net

    def get(self, name: str) -> Network:
        validate_name(name)
        if name not in self.networks:
            raise NetworkNotFoundError(f"no network named {name!r}")
        return self.networks[name]

    def list(self) -> list[Network]:
        return sorted(self.networks.values(), key=lambda n: n.name)

    def delete(self, name: str, force: bool = False) -> bool:
        validate_name(name)
        if any(k[0] == name for k in self.tap_records) and not force:
            raise NetworkConflictError(f"network {name!r} still has taps")
        for key in [k for k in self.reserved if k[0] == name]:
            del self.reserved[key]
        for key in [k for k in self.tap_records if k[0] == name]:
            del self.tap_records[key]
        return self.networks.pop(name, None) is not None

    def allocate(self, network: str, owner: str, mac=None, ip=None) -> tuple[str, str]:
        net = self.get(network)
        self.calls.append(("allocate", network, owner))
        key = (network, owner)
        if key not in self.reserved:
            used = {r.ip for r in self.reserved.values() if r.network == network}
            layout = net.layout
            address = next(str(a) for a in ipaddress.IPv4Network(net.subnet).hosts()
                           if layout.first <= a <= layout.last and str(a) not in used)
            n = len(self.reserved) + 1
            self.reserved[key] = Reservation(network, owner, f"52:54:00:00:{n >> 8:02x}:{n & 255:02x}",
                                             address)
        r = self.reserved[key]
        return r.mac, r.ip

    def release(self, network: str, owner: str) -> bool:
        self.get(network)
        self.calls.append(("release", network, owner))
        return self.reserved.pop((network, owner), None) is not None

    def reservations(self, network: str) -> list[Reservation]:
        self.get(network)
        return [r for r in self.reserved.values() if r.network == network]

    def create_tap(self, network: str, owner: str) -> str:
        self.get(network)
        self.calls.append(("create_tap", network, owner))
        tap = Tap(network, owner, tap_name(network, owner))
        self.tap_records[(network, owner)] = tap
        return tap.name

    def delete_tap(self, network: str, owner: str) -> bool:
        validate_name(network)
        self.calls.append(("delete_tap", network, owner))
        return self.tap_records.pop((network, owner), None) is not None

    def taps(self, network: str) -> list[Tap]:
        self.get(network)
        return [t for t in self.tap_records.values() if t.network == network]


class FakeVolumes:
    """`volume_lookup` for ComputeManager: a dict of name -> (size, read_only)."""

    def __init__(self, **volumes: tuple[int, bool]) -> None:
        self.volumes = dict(volumes)

    def __call__(self, name: str) -> ExportInfo | None:
        if name not in self.volumes:
            return None
        size, read_only = self.volumes[name]
        return ExportInfo(name, size, read_only)



class FakeConsoleSocket:
    """QEMU's end of a ``<serial type='unix'>`` console: listens on `path`, serves one
    connection at a time, prints `greeting` to each, and records what each one typed.

    With ``reads=False`` it accepts but never reads (a guest that ignores its
    serial port). `close()` stops it and removes the socket.
    """

    def __init__(self, path: str, *, reads: bool = True, greeting: bytes = b"login: ") -> None:
        import socket
        import threading

        self.path, self.reads, self.greeting = path, reads, greeting
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(1)
        self._server.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(self.greeting)
                got = bytearray()
                conn.settimeout(0.05)
                while not self._stop.is_set():
                    if not self.reads:
                        self._stop.wait(0.05)
                        continue
                    try:
                        chunk = conn.recv(7)  # a few bytes at a time, as a 16550's FIFO takes them
                    except TimeoutError:
                        continue
                    except ConnectionResetError:
                        break
                    if not chunk:
                        break
                    got += chunk
                self.received.append(bytes(got))

    def close(self) -> None:
        import os

        self._stop.set()
        self._thread.join(5)
        self._server.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
