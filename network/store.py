"""LMDB-backed records and IPAM: networks, address reservations and taps.

Every check-then-write (duplicate name, overlapping subnet, address or MAC
already taken) runs inside one LMDB write transaction. LMDB serialises write
transactions across threads and processes, so two servers allocating at the
same moment can never hand out the same address, and a committed reservation
survives restarts.

Layout (one environment, several named databases; keys are bytes):
  networks      name                     -> Network JSON
  reservations  network \\0 owner          -> Reservation JSON
  addresses     network \\0 <4-byte IPv4>  -> owner   (big-endian: scans in address order)
  macs          mac                      -> network \\0 owner   (MACs unique across networks)
  taps          network \\0 owner          -> Tap JSON
  meta          key                      -> value
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import lmdb

from . import lmdb_envs
from .addressing import (
    guest_address,
    normalize_mac,
    random_guest_mac,
    tap_name,
    validate_owner,
)
from .errors import (
    AddressPoolExhaustedError,
    NetworkConflictError,
    NetworkNotFoundError,
)
from .records import Network, Reservation, Tap

_DBS = (b"networks", b"reservations", b"addresses", b"macs", b"taps", b"meta")
# Records are tiny; the map is sparse, so this only caps the file's growth.
_MAP_SIZE = 256 << 20

def _key(*parts: str) -> bytes:
    return "\0".join(parts).encode()


def _addr_key(network: str, address: ipaddress.IPv4Address) -> bytes:
    return network.encode() + b"\0" + address.packed


class Store:
    """Records and address allocation for all Basalt networks of one state dir."""

    def __init__(self, path: str):
        self.path = path
        self._env = lmdb_envs.acquire(path, len(_DBS), _MAP_SIZE)
        self._db = {name: self._env.open_db(name) for name in _DBS}
        self._closed = False

    def close(self) -> None:
        """Release the LMDB handle (shared with other Stores on the same path)."""
        if not self._closed:
            self._closed = True
            lmdb_envs.release(self.path)

    @contextmanager
    def _txn(self, write: bool = False) -> Iterator[lmdb.Transaction]:
        with self._env.begin(write=write) as txn:
            yield txn

    # -- networks -----------------------------------------------------------

    def add_network(self, network: Network) -> None:
        """Insert a new network; refuses duplicate names, bridges and overlapping subnets."""
        subnet = ipaddress.ip_network(network.subnet)
        with self._txn(write=True) as txn:
            for other in self._iter_networks(txn):
                if other.name == network.name:
                    raise NetworkConflictError(f"network {network.name!r} already exists")
                if other.bridge == network.bridge:
                    raise NetworkConflictError(
                        f"bridge name {network.bridge} of {network.name!r} is already"
                        f" used by network {other.name!r}; choose another name"
                    )
                if subnet.overlaps(ipaddress.ip_network(other.subnet)):
                    raise NetworkConflictError(
                        f"subnet {network.subnet} overlaps {other.subnet}"
                        f" of network {other.name!r}"
                    )
            txn.put(network.name.encode(), network.dumps(), db=self._db[b"networks"])

    def get_network(self, name: str) -> Network | None:
        """The network called `name`, or None."""
        with self._txn() as txn:
            raw = txn.get(name.encode(), db=self._db[b"networks"])
        return Network.loads(raw) if raw is not None else None

    def networks(self) -> list[Network]:
        """All networks, sorted by name."""
        with self._txn() as txn:
            return list(self._iter_networks(txn))

    def remove_network(self, name: str) -> bool:
        """Drop a network and every reservation and tap record it holds."""
        with self._txn(write=True) as txn:
            if not txn.delete(name.encode(), db=self._db[b"networks"]):
                return False
            for reservation in list(self._iter_prefix(txn, b"reservations", name)):
                self._drop_reservation(txn, Reservation.loads(reservation))
            for key, _ in list(self._iter_prefix(txn, b"taps", name, keys=True)):
                txn.delete(key, db=self._db[b"taps"])
            return True

    def _iter_networks(self, txn: lmdb.Transaction) -> Iterator[Network]:
        for _, raw in txn.cursor(db=self._db[b"networks"]):
            yield Network.loads(raw)

    def _iter_prefix(self, txn, db: bytes, network: str, keys: bool = False):
        prefix = network.encode() + b"\0"
        cursor = txn.cursor(db=self._db[db])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield (key, value) if keys else value

    def _require_network(self, txn: lmdb.Transaction, name: str) -> Network:
        raw = txn.get(name.encode(), db=self._db[b"networks"])
        if raw is None:
            raise NetworkNotFoundError(f"no network named {name!r}")
        return Network.loads(raw)

    # -- reservations (IPAM) ------------------------------------------------

    def reserve(
        self,
        network: str,
        owner: str,
        mac: str | None = None,
        ip: str | None = None,
        leases: Mapping[str, str] | None = None,
    ) -> Reservation:
        """Reserve a (MAC, IPv4) pair for `owner` on `network`, atomically.

        `leases` maps addresses currently leased by dnsmasq to their MACs: an
        address leased to a different MAC is skipped (or refused when asked
        for explicitly) so a dynamic client and a reservation never share it.
        Calling again with the same or no mac/ip returns the existing reservation.
        """
        validate_owner(owner)
        wanted_mac = normalize_mac(mac) if mac is not None else None
        leases = leases or {}
        with self._txn(write=True) as txn:
            net = self._require_network(txn, network)
            layout = net.layout
            wanted_ip = guest_address(layout, ip) if ip is not None else None
            raw = txn.get(_key(network, owner), db=self._db[b"reservations"])
            if raw is not None:
                existing = Reservation.loads(raw)
                if (wanted_mac in (None, existing.mac)) and (
                    wanted_ip is None or str(wanted_ip) == existing.ip
                ):
                    return existing
                raise NetworkConflictError(
                    f"{owner!r} already holds {existing.ip} ({existing.mac}) on"
                    f" {network!r}; release it first"
                )
            chosen_mac = self._claim_mac(txn, network, owner, wanted_mac)

            def leased_to_other(address: ipaddress.IPv4Address) -> bool:
                holder = leases.get(str(address))
                return holder is not None and holder != chosen_mac

            if wanted_ip is not None:
                holder = txn.get(_addr_key(network, wanted_ip), db=self._db[b"addresses"])
                if holder is not None:
                    raise NetworkConflictError(
                        f"address {wanted_ip} on {network!r} is reserved by {holder.decode()!r}"
                    )
                if leased_to_other(wanted_ip):
                    raise NetworkConflictError(
                        f"address {wanted_ip} on {network!r} is leased to"
                        f" {leases[str(wanted_ip)]} by DHCP"
                    )
                chosen_ip = wanted_ip
            else:
                chosen_ip = self._first_free(
                    txn, network, layout.first, layout.last, leased_to_other
                )
            reservation = Reservation(network, owner, chosen_mac, str(chosen_ip))
            txn.put(_addr_key(network, chosen_ip), owner.encode(), db=self._db[b"addresses"])
            txn.put(_key(network, owner), reservation.dumps(), db=self._db[b"reservations"])
            return reservation

    def _claim_mac(self, txn, network: str, owner: str, mac: str | None) -> str:
        macs = self._db[b"macs"]
        if mac is not None:
            holder = txn.get(mac.encode(), db=macs)
            if holder is not None:
                other_net, other_owner = holder.decode().split("\0", 1)
                raise NetworkConflictError(
                    f"MAC {mac} is already reserved by {other_owner!r} on {other_net!r}"
                )
        else:
            # 24 random bits: collisions are rare, and checked here anyway.
            for _ in range(64):
                mac = random_guest_mac()
                if txn.get(mac.encode(), db=macs) is None:
                    break
            else:
                raise AddressPoolExhaustedError("could not find an unused MAC address")
        txn.put(mac.encode(), _key(network, owner), db=macs)
        return mac

    def _first_free(self, txn, network, first, last, skip) -> ipaddress.IPv4Address:
        # Walk the reserved addresses in order and take the first gap: the
        # cost grows with the number of reservations, not the subnet size.
        candidate = int(first)
        cursor = txn.cursor(db=self._db[b"addresses"])
        prefix = network.encode() + b"\0"
        taken: Iterator[int] = iter(())
        if cursor.set_range(_addr_key(network, first)):
            taken = (
                int.from_bytes(key[len(prefix):], "big")
                for key in itertools.takewhile(
                    lambda k: k.startswith(prefix), cursor.iternext(values=False)
                )
            )
        next_taken = next(taken, None)
        while candidate <= int(last):
            if candidate == next_taken:
                next_taken = next(taken, None)
            elif not skip(ipaddress.IPv4Address(candidate)):
                return ipaddress.IPv4Address(candidate)
            candidate += 1
        raise AddressPoolExhaustedError(f"no free address left on network {network!r}")

    def release(self, network: str, owner: str) -> Reservation | None:
        """Drop `owner`'s reservation on `network`; returns it, or None if there was none."""
        with self._txn(write=True) as txn:
            raw = txn.get(_key(network, owner), db=self._db[b"reservations"])
            if raw is None:
                return None
            reservation = Reservation.loads(raw)
            self._drop_reservation(txn, reservation)
            return reservation

    def _drop_reservation(self, txn, reservation: Reservation) -> None:
        address = ipaddress.IPv4Address(reservation.ip)
        txn.delete(_addr_key(reservation.network, address), db=self._db[b"addresses"])
        txn.delete(reservation.mac.encode(), db=self._db[b"macs"])
        txn.delete(_key(reservation.network, reservation.owner), db=self._db[b"reservations"])

    def reservations(self, network: str) -> list[Reservation]:
        """All reservations on `network`, sorted by owner."""
        with self._txn() as txn:
            rows = self._iter_prefix(txn, b"reservations", network)
            return [Reservation.loads(raw) for raw in rows]

    # -- taps -----------------------------------------------------------------

    def add_tap(self, network: str, owner: str) -> Tap:
        """Record a tap for (network, owner); returns the existing one if present."""
        validate_owner(owner)
        key = _key(network, owner)
        with self._txn(write=True) as txn:
            self._require_network(txn, network)
            raw = txn.get(key, db=self._db[b"taps"])
            if raw is not None:
                return Tap.loads(raw)
            tap = Tap(network, owner, tap_name(network, owner))
            for _, other in txn.cursor(db=self._db[b"taps"]):
                if Tap.loads(other).name == tap.name:
                    raise NetworkConflictError(f"tap name {tap.name} is already in use")
            txn.put(key, tap.dumps(), db=self._db[b"taps"])
            return tap

    def remove_tap(self, network: str, owner: str) -> Tap | None:
        """Forget the tap of (network, owner); returns it, or None if unknown."""
        with self._txn(write=True) as txn:
            key = _key(network, owner)
            raw = txn.get(key, db=self._db[b"taps"])
            if raw is None:
                return None
            txn.delete(key, db=self._db[b"taps"])
            return Tap.loads(raw)

    def taps(self, network: str) -> list[Tap]:
        """All tap records of `network`, sorted by owner."""
        with self._txn() as txn:
            return [Tap.loads(raw) for raw in self._iter_prefix(txn, b"taps", network)]

    # -- meta -----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._txn() as txn:
            raw = txn.get(key.encode(), db=self._db[b"meta"])
        return raw.decode() if raw is not None else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._txn(write=True) as txn:
            if value is None:
                txn.delete(key.encode(), db=self._db[b"meta"])
            else:
                txn.put(key.encode(), value.encode(), db=self._db[b"meta"])
