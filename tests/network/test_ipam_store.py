"""The LMDB records and IPAM: uniqueness, persistence, concurrency. No kernel."""

import multiprocessing

import pytest

from network.addressing import bridge_name, parse_subnet
from network.errors import (
    AddressPoolExhaustedError,
    InvalidNetworkError,
    NetworkConflictError,
    NetworkNotFoundError,
)
from network.records import Network
from network.store import Store


def make_network(name: str, cidr: str, nat: bool = False) -> Network:
    layout = parse_subnet(cidr)
    return Network(
        name=name, subnet=cidr, bridge=bridge_name(name), gateway=str(layout.gateway),
        dhcp_start=str(layout.first), dhcp_end=str(layout.last), nat=nat, created_at=0.0,
    )


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "ipam"))
    s.add_network(make_network("prod", "10.30.0.0/24"))
    yield s
    s.close()


def test_networks_are_listed_sorted_and_found(store):
    store.add_network(make_network("alpha", "10.31.0.0/24"))
    assert [n.name for n in store.networks()] == ["alpha", "prod"]
    assert store.get_network("alpha").subnet == "10.31.0.0/24"
    assert store.get_network("nope") is None


def test_duplicate_name_and_overlapping_subnet_are_refused(store):
    with pytest.raises(NetworkConflictError, match="already exists"):
        store.add_network(make_network("prod", "10.99.0.0/24"))
    with pytest.raises(NetworkConflictError, match="overlaps 10.30.0.0/24"):
        store.add_network(make_network("wide", "10.30.0.0/16"))
    with pytest.raises(NetworkConflictError, match="overlaps"):
        store.add_network(make_network("inner", "10.30.0.128/25"))


def test_reservations_take_the_lowest_free_address_and_never_repeat(store):
    got = [store.reserve("prod", f"vm{i}") for i in range(10)]
    assert [r.ip for r in got] == [f"10.30.0.{i}" for i in range(2, 12)]
    assert len({r.mac for r in got}) == 10
    store.release("prod", "vm3")
    assert store.reserve("prod", "late").ip == "10.30.0.5"  # the gap is reused
    assert len({r.ip for r in store.reservations("prod")}) == 10


def test_reserve_is_idempotent_per_owner(store):
    first = store.reserve("prod", "vm1", mac="52:54:00:00:00:01", ip="10.30.0.50")
    assert store.reserve("prod", "vm1") == first
    assert store.reserve("prod", "vm1", mac="52:54:00:00:00:01") == first
    with pytest.raises(NetworkConflictError, match="already holds 10.30.0.50"):
        store.reserve("prod", "vm1", ip="10.30.0.51")


def test_explicit_address_and_mac_conflicts(store):
    store.reserve("prod", "vm1", mac="52:54:00:00:00:01", ip="10.30.0.50")
    with pytest.raises(NetworkConflictError, match="reserved by 'vm1'"):
        store.reserve("prod", "vm2", ip="10.30.0.50")
    with pytest.raises(NetworkConflictError, match="MAC 52:54:00:00:00:01"):
        store.reserve("prod", "vm2", mac="52:54:00:00:00:01")
    with pytest.raises(InvalidNetworkError):
        store.reserve("prod", "vm2", ip="10.30.0.1")  # the gateway
    with pytest.raises(NetworkNotFoundError):
        store.reserve("nope", "vm2")
    # A failed reservation leaves nothing behind: the MAC is still free.
    assert store.reserve("prod", "vm2", mac="52:54:00:00:00:02").ip == "10.30.0.2"


def test_addresses_leased_to_other_macs_are_skipped(store):
    leases = {"10.30.0.2": "52:54:00:99:99:99", "10.30.0.3": "52:54:00:00:00:07"}
    assert store.reserve("prod", "vm1", mac="52:54:00:00:00:01", leases=leases).ip == "10.30.0.4"
    own = store.reserve("prod", "vm2", mac="52:54:00:00:00:08",
                        leases={"10.30.0.2": "52:54:00:00:00:08"})
    assert own.ip == "10.30.0.2"  # its own lease is fine
    with pytest.raises(NetworkConflictError, match="leased"):
        store.reserve("prod", "vm3", ip="10.30.0.40", leases={"10.30.0.40": "52:54:00:12:34:56"})


def test_pool_exhaustion_is_a_clear_error(store):
    store.add_network(make_network("tiny", "10.40.0.0/30"))
    assert store.reserve("tiny", "vm1").ip == "10.40.0.2"
    with pytest.raises(AddressPoolExhaustedError, match="no free address"):
        store.reserve("tiny", "vm2")


def test_removing_a_network_drops_its_reservations_and_taps(store):
    r = store.reserve("prod", "vm1")
    store.add_tap("prod", "vm1")
    assert store.remove_network("prod")
    assert not store.remove_network("prod")
    store.add_network(make_network("prod", "10.30.0.0/24"))
    assert store.reservations("prod") == [] and store.taps("prod") == []
    assert store.reserve("prod", "other", mac=r.mac).ip == r.ip  # MAC and address free again


def test_taps_are_recorded_once(store):
    tap = store.add_tap("prod", "vm1")
    assert store.add_tap("prod", "vm1") == tap
    assert store.taps("prod") == [tap]
    assert store.remove_tap("prod", "vm1") == tap
    assert store.remove_tap("prod", "vm1") is None


def test_records_survive_a_restart(tmp_path):
    path = str(tmp_path / "ipam")
    s = Store(path)
    s.add_network(make_network("prod", "10.30.0.0/24", nat=True))
    before = [s.reserve("prod", f"vm{i}") for i in range(5)]
    s.close()
    s = Store(path)
    try:
        assert s.get_network("prod").nat is True
        assert s.reservations("prod") == sorted(before, key=lambda r: r.owner)
        assert s.reserve("prod", "vm-new").ip == "10.30.0.7"
    finally:
        s.close()


def _allocate_many(path: str, tag: str, count: int, start) -> list[str]:
    start.wait()
    store = Store(path)
    try:
        return [store.reserve("prod", f"{tag}-{i}").ip for i in range(count)]
    finally:
        store.close()


def test_two_processes_never_get_the_same_address(tmp_path):
    path = str(tmp_path / "ipam")
    s = Store(path)
    s.add_network(make_network("prod", "10.30.0.0/23"))
    s.close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as sync, ctx.Pool(2) as pool:
        start = sync.Event()
        jobs = [pool.apply_async(_allocate_many, (path, tag, 150, start)) for tag in "ab"]
        start.set()
        results = [job.get(timeout=120) for job in jobs]
    everything = results[0] + results[1]
    assert len(everything) == 300 and len(set(everything)) == 300
