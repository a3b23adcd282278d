"""The nftables ruleset: what it says, and that nft accepts it atomically."""

from network import firewall
from network.addressing import bridge_name, parse_subnet
from network.records import Network


def make_network(name: str, cidr: str, nat: bool = False) -> Network:
    layout = parse_subnet(cidr)
    return Network(
        name=name, subnet=cidr, bridge=bridge_name(name), gateway=str(layout.gateway),
        dhcp_start=str(layout.first), dhcp_end=str(layout.last), nat=nat, created_at=0.0,
    )


RED = make_network("red", "10.80.0.0/24", nat=True)
BLUE = make_network("blue", "10.81.0.0/24")


def test_script_replaces_the_whole_table_in_one_transaction():
    script = firewall.render([RED])
    lines = script.splitlines()
    assert lines[1:4] == [
        "add table inet basalt",
        "delete table inet basalt",
        "table inet basalt {",
    ]
    assert "flush ruleset" not in script  # other tables are never touched


def test_nat_networks_are_masqueraded_and_others_not():
    script = firewall.render([RED, BLUE])
    assert 'ip saddr 10.80.0.0/24 oifname != { "bsl-blue", "bsl-red" } masquerade' in script
    assert "10.81.0.0/24" not in script.split("chain postrouting")[1]
    assert "chain postrouting" not in firewall.render([BLUE])


def test_bridges_are_isolated_from_each_other():
    script = firewall.render([RED, BLUE])
    assert 'iifname { "bsl-blue", "bsl-red" } oifname { "bsl-blue", "bsl-red" } drop' in script
    assert 'iifname "bsl-red" ip daddr { 10.81.0.1 } drop' in script
    # Traffic inside one network stays allowed (seen here with br_netfilter).
    assert 'iifname "bsl-red" oifname "bsl-red" accept' in script


def test_nft_loads_replaces_and_removes_the_table(make_netns):
    from network.namespace import Namespace

    ns = Namespace(make_netns("host"))
    assert firewall.current(ns) is None
    firewall.apply(ns, [RED, BLUE])
    assert "masquerade" in firewall.current(ns)
    firewall.apply(ns, [BLUE])
    assert "masquerade" not in firewall.current(ns)
    firewall.apply(ns, [])
    assert firewall.current(ns) is None
    firewall.remove(ns)  # idempotent
