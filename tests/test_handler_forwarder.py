"""ovsdp-handler's decisions without sockets (userspace/handler/forwarder.py, config.py):
learning, moves, aging, flood sets, megaflow shapes, flow invalidation, expiry selection,
batch results, and the configuration file.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from ovsdp.netlink.errors import NetlinkError
from userspace.dpif import Execute, FlowDel, FlowPut, OpResult
from userspace.handler import DEFAULT_CONFIG, ConfigError, Forwarder, MacTable, PortSpec
from userspace.handler.config import TunnelConfig, parse_config
from userspace.handler.forwarder import (
    DROP,
    FLOOD,
    OUTPUT,
    Batch,
    Flow,
    l2_key,
    output_actions,
    ufid_of,
)
from userspace.odp import format_key, parse_key

MACS = {
    "A": "00:15:5d:00:00:01",
    "B": "00:15:5d:00:00:02",
    "C": "00:15:5d:00:00:03",
    "BCAST": "ff:ff:ff:ff:ff:ff",
    "MCAST": "01:00:5e:00:00:01",
    "STP": "01:80:c2:00:00:00",
}
PORTS = {1: "vm1", 2: "vm2", 3: "vm3", 4: "ext", 5: "host"}
FULL32 = 0xFFFFFFFF
ETH_ONES = b"\xff" * 6


def mac(name: str) -> bytes:
    return bytes.fromhex(MACS.get(name, name).replace(":", ""))


def upcall_key(in_port: int, src: str, dst: str, l3: str | None = None) -> dict[str, Any]:
    """A MISS key as the datapath sends it (metadata, Ethernet, IPv4/UDP by default)."""
    if l3 is None:
        l3 = (
            "eth_type(0x0800),ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),"
            "udp(src=1000,dst=2000)"
        )
    text = (
        f"recirc_id(0),dp_hash(0),skb_priority(0),in_port({in_port}),skb_mark(0),"
        f"eth(src={MACS.get(src, src)},dst={MACS.get(dst, dst)}),{l3}"
    )
    key: dict[str, Any] = parse_key(text)[0]
    return key


def forwarder(ports: dict[int, str] | None = None, **kwargs: Any) -> Forwarder:
    fw = Forwarder(**kwargs)
    for port_no, name in (ports or PORTS).items():
        fw.port_up(port_no, PortSpec.make(port_no, name))
    return fw


def outputs(actions: list[Any]) -> list[int]:
    return [value for name, value in actions if name == "output"]


def sent(fw: Forwarder) -> Batch:
    """Take the batch and report every operation a success."""
    batch = fw.take()
    assert fw.finish(batch, [OpResult() for _ in batch.ops]) == []
    return batch


def miss(fw: Forwarder, in_port: int, src: str, dst: str, now: int = 0, **kw: Any) -> Flow:
    flow = fw.miss(upcall_key(in_port, src, dst, **kw), b"frame", now)
    assert flow is not None
    return flow


def check_index(fw: Forwarder) -> None:
    """The indexes agree with each other and with the MAC table."""
    live = set(fw.by_ufid.values())
    assert live == set(fw.flows.values())
    assert all(f.alive for f in live)
    assert {f for flows in fw.by_port.values() for f in flows} == live
    assert {f for flows in fw.by_mac.values() for f in flows} <= live
    assert fw.flooding == {f for f in live if f.kind == FLOOD}
    for flow in live:
        in_port = flow.in_port
        assert in_port not in outputs(flow.actions), flow  # never back where it came from
        if flow.kind == OUTPUT:
            assert flow.dst is not None
            assert outputs(flow.actions) == [fw.macs.lookup(flow.dst)]
        if flow.kind == FLOOD:
            assert outputs(flow.actions) == sorted(p for p in fw.ports if p != in_port)
        if flow.src is not None:
            assert fw.macs.lookup(flow.src) == in_port


# -- decisions ---------------------------------------------------------------------------------


def test_unknown_destination_floods_to_every_other_port() -> None:
    fw = forwarder()
    flow = miss(fw, 1, "A", "B")
    assert flow.kind == FLOOD
    assert outputs(flow.actions) == [2, 3, 4, 5]
    assert fw.macs.lookup((0, mac("A"))) == 1
    batch = fw.take()
    assert batch.dels == []
    assert [p.ufid for p in batch.puts] == [flow.ufid]
    (ex,) = batch.execs
    assert ex.packet == b"frame" and ex.key == {"in_port": 1} and ex.actions == flow.actions
    check_index(fw)


def test_known_destination_is_unicast_and_replaces_the_flood_flow() -> None:
    fw = forwarder()
    flood = miss(fw, 1, "A", "B")
    sent(fw)
    reply = miss(fw, 2, "B", "A")
    assert reply.kind == OUTPUT and reply.actions == [("output", 1)]
    batch = fw.take()
    # B is learned: the flow that flooded towards B is deleted
    assert [d.ufid for d in batch.dels] == [flood.ufid]
    assert [p.ufid for p in batch.puts] == [reply.ufid]
    assert not flood.alive
    again = miss(fw, 1, "A", "B")
    assert again.kind == OUTPUT and again.actions == [("output", 2)]
    assert again.ufid == flood.ufid  # the same match: the same UFID
    check_index(fw)


def test_destination_on_the_in_port_is_dropped() -> None:
    fw = forwarder()
    miss(fw, 1, "B", "C")
    miss(fw, 1, "A", "C")
    sent(fw)
    flow = miss(fw, 1, "A", "B")
    assert flow.kind == DROP and flow.actions == []
    batch = fw.take()
    assert len(batch.puts) == 1 and batch.puts[0].actions == []
    assert batch.execs == []  # nothing to run the packet through
    check_index(fw)


@pytest.mark.parametrize(
    ("src", "dst", "kind", "learned"),
    [
        ("A", "BCAST", FLOOD, True),
        ("A", "MCAST", FLOOD, True),
        ("A", "STP", DROP, True),  # IEEE 802.1D reserved: not forwarded (forward-bpdu=false)
        ("MCAST", "B", DROP, False),  # a multicast source: dropped, never learned
    ],
)
def test_multicast(src: str, dst: str, kind: str, learned: bool) -> None:
    fw = forwarder()
    flow = miss(fw, 1, src, dst)
    assert flow.kind == kind
    assert (fw.macs.lookup((0, mac(src))) == 1) is learned
    check_index(fw)


def test_upcalls_of_a_flow_in_progress_share_it() -> None:
    fw = forwarder()
    first = miss(fw, 1, "A", "B")
    second = fw.miss(upcall_key(1, "A", "B", l3="eth_type(0x0806),arp(op=1)"), b"arp", 0)
    third = miss(fw, 1, "A", "B")
    assert third is first and second is not first  # the ethertype is part of the match
    batch = fw.take()
    assert len(batch.puts) == 2 and len(batch.execs) == 3
    assert fw.counters.queued == 1


def test_a_frame_that_is_not_ethernet_is_not_handled() -> None:
    fw = forwarder()
    assert fw.miss({"recirc_id": 0, "in_port": 1, "ethertype": 0x0800}, b"x", 0) is None
    assert fw.counters.unhandled == 1
    assert len(fw.take()) == 0


# -- megaflow shapes ---------------------------------------------------------------------------


def test_megaflow_matches_l2_only() -> None:
    fw = forwarder()
    flow = miss(fw, 3, "A", "B")
    assert flow.key == {
        "recirc_id": 0,
        "in_port": 3,
        "ethernet": (mac("A"), mac("B")),
        "ethertype": 0x0800,
        "ipv4": (0, 0, 0, 0, 0, 0),  # required by eth_type 0x0800; proto 0: no L4 expected
    }
    assert flow.mask == {
        "recirc_id": FULL32,
        "in_port": FULL32,
        "ethernet": (ETH_ONES, ETH_ONES),
        "ethertype": 0xFFFF,
    }
    assert format_key(flow.key, flow.mask) == (
        "recirc_id(0),in_port(3),eth(src=00:15:5d:00:00:01,dst=00:15:5d:00:00:02),eth_type(0x0800)"
    )


@pytest.mark.parametrize(
    ("l3", "attr"),
    [
        ("eth_type(0x0806),arp(sip=1.1.1.1,tip=1.1.1.2,op=1,sha=00:15:5d:00:00:01,"
         "tha=00:00:00:00:00:00)", "arp"),
        ("eth_type(0x86dd),ipv6(src=::1,dst=::2,label=0,proto=58,tclass=0,hlimit=255,frag=no),"
         "icmpv6(type=135,code=0),nd(target=::3)", "ipv6"),
        ("eth_type(0x8847),mpls(label=5,tc=0,ttl=64,bos=1)", "mpls"),
        ("eth_type(0x88cc)", None),
    ],
)  # fmt: skip
def test_megaflow_keeps_only_the_l3_attribute_the_ethertype_needs(
    l3: str, attr: str | None
) -> None:
    fw = forwarder()
    key = upcall_key(1, "A", "B", l3=l3)
    flow = fw.miss(key, b"x", 0)
    assert flow is not None
    extra = set(flow.key) - {"recirc_id", "in_port", "ethernet", "ethertype"}
    assert extra == ({attr} if attr else set())
    if attr:
        value = flow.key[attr]  # zeroed: the mask wildcards it
        assert all(not v or v == bytes(len(v)) for v in value), value
    assert set(flow.mask) == {"recirc_id", "in_port", "ethernet", "ethertype"}


def test_an_802_2_frame_has_no_ethertype_to_match() -> None:
    key = upcall_key(1, "A", "B", l3="eth_type(0x0800)")
    del key["ethertype"]
    fw = forwarder()
    flow = fw.miss(key, b"x", 0)
    assert flow is not None
    assert "ethertype" not in flow.key and "ethertype" not in flow.mask


def test_vlans_are_learned_per_vid_and_matched_without_pcp() -> None:
    fw = forwarder()
    tagged = (
        "eth_type(0x8100),vlan(vid=10,pcp=3),encap(eth_type(0x0800),"
        "ipv4(src=1.1.1.1,dst=2.2.2.2,proto=6,tos=0,ttl=64,frag=no),tcp(src=1,dst=2),tcp_flags(syn))"
    )
    flow = fw.miss(upcall_key(1, "A", "B", l3=tagged), b"x", 0)
    assert flow is not None and flow.kind == FLOOD
    assert fw.macs.lookup((10, mac("A"))) == 1 and fw.macs.lookup((0, mac("A"))) is None
    assert flow.mask["vlan"] == 0x1FFF and flow.mask["encap"] == {"ethertype": 0xFFFF}
    assert flow.key["vlan"] & 0x1FFF == 0x1000 | 10
    assert set(flow.key["encap"]) == {"ethertype", "ipv4"}
    # B answers in VLAN 10: unicast; B in VLAN 0 is still unknown
    reply = fw.miss(upcall_key(2, "B", "A", l3=tagged.replace("pcp=3", "pcp=0")), b"x", 0)
    assert reply is not None and reply.kind == OUTPUT
    assert miss(fw, 3, "C", "B").kind == FLOOD


def test_ufids_are_16_bytes_and_follow_the_match() -> None:
    fw = forwarder()
    flows = [miss(fw, 1, "A", "B"), miss(fw, 2, "A", "B"), miss(fw, 1, "C", "B")]
    assert all(len(f.ufid) == 16 for f in flows)
    assert len({f.ufid for f in flows}) == 3
    assert ufid_of(flows[0].match) == flows[0].ufid


def test_l2_key_drops_metadata_and_l4() -> None:
    key = upcall_key(7, "A", "B")
    assert list(l2_key(key)) == ["recirc_id", "in_port", "ethernet", "ethertype", "ipv4"]


# -- tunnels -----------------------------------------------------------------------------------

TUNNEL = TunnelConfig(remote_ip=0xC0000202, key=5)


def tunnel_key(remote: str = "192.0.2.2", vni: int = 5) -> dict[str, Any]:
    key: dict[str, Any] = parse_key(
        f"recirc_id(0),tunnel(tun_id={vni:#x},src={remote},dst=192.0.2.1,ttl=64,tp_dst=4789,"
        "flags(+key)),in_port(6),eth(src=00:15:5d:00:00:09,dst=00:15:5d:00:00:01),"
        "eth_type(0x0806),arp(op=1)"
    )[0]
    return key


def test_vxlan_outputs_set_the_tunnel_first() -> None:
    assert output_actions(6, TUNNEL) == [
        ("set", {"tunnel": {"id": 5, "ipv4_dst": 0xC0000202, "ttl": 64, "tp_dst": 4789,
                            "dont_fragment": True}}),
        ("output", 6),
    ]  # fmt: skip
    fw = forwarder({1: "vm1", 6: "vx"})
    fw.port_up(6, PortSpec.make(6, "vx", TUNNEL))
    flow = miss(fw, 1, "A", "B")
    assert flow.actions == output_actions(6, TUNNEL)


def test_tunnel_frames_match_vni_and_remote() -> None:
    fw = forwarder({1: "vm1"})
    fw.port_up(6, PortSpec.make(6, "vx", TUNNEL))
    flow = fw.miss(tunnel_key(), b"x", 0)
    assert flow is not None and flow.kind == FLOOD and outputs(flow.actions) == [1]
    assert flow.mask["tunnel"] == {"id": (1 << 64) - 1, "ipv4_src": FULL32}
    assert fw.macs.lookup((0, mac("00:15:5d:00:00:09"))) == 6
    for bad in (tunnel_key(vni=6), tunnel_key(remote="192.0.2.3")):
        other = fw.miss(bad, b"x", 0)
        assert other is not None and other.kind == DROP and other.ufid != flow.ufid


# -- MAC table ---------------------------------------------------------------------------------


def test_mac_table_ages_and_evicts_least_recently_seen() -> None:
    table = MacTable(size=2, aging_ms=1000)
    a, b, c = (0, mac("A")), (0, mac("B")), (0, mac("C"))
    assert table.learn(a, 1, 0) == [a]
    assert table.learn(b, 2, 100) == [b]
    assert table.learn(a, 1, 200) == []  # refreshed: now the most recent
    assert table.learn(c, 3, 300) == [c, b]  # full: B (least recently seen) makes room
    assert table.evicted == 1 and len(table) == 2
    assert table.learn(a, 3, 400) == [a] and table.moves == 1
    assert table.expire(1299) == [] and table.expire(1300) == [c]  # at the aging time
    table.refresh(a, 3, 2000)
    assert table.expire(2399) == []
    table.refresh(a, 1, 5000)  # another port: not a refresh
    assert table.expire(3000) == [a] and len(table) == 0
    assert table.expired == 2


def test_mac_move_deletes_flows_that_depended_on_the_old_place() -> None:
    fw = forwarder()
    from_a = miss(fw, 1, "A", "C")  # A on 1
    to_a = miss(fw, 2, "B", "A")  # towards A on 1
    other = miss(fw, 2, "B", "C")
    sent(fw)
    moved = miss(fw, 3, "A", "B")  # A now on 3
    assert fw.macs.lookup((0, mac("A"))) == 3 and fw.macs.moves == 1
    batch = fw.take()
    assert {d.ufid for d in batch.dels} == {from_a.ufid, to_a.ufid}
    assert other.alive and moved.kind == OUTPUT and moved.actions == [("output", 2)]
    assert miss(fw, 2, "B", "A").actions == [("output", 3)]
    check_index(fw)


def test_aged_addresses_take_their_flows_along() -> None:
    fw = forwarder(mac_aging_ms=1000)
    to_a = miss(fw, 2, "B", "A", now=500)
    from_a = miss(fw, 1, "A", "B", now=0)  # learns A at 0, deletes nothing sent yet
    sent(fw)
    assert to_a.alive is False  # A was learned in the same batch: its put was never sent
    fw.age(999)
    assert from_a.alive
    fw.age(1000)  # A (seen at 0) expires; B (seen at 500) stays
    assert not from_a.alive
    assert [d.ufid for d in fw.take().dels] == [from_a.ufid]
    assert fw.macs.lookup((0, mac("B"))) == 2


# -- ports -------------------------------------------------------------------------------------


def test_port_changes_invalidate_flood_flows_and_the_flood_cache() -> None:
    fw = forwarder({1: "vm1", 2: "vm2"})
    flood = miss(fw, 1, "A", "B")
    assert outputs(flood.actions) == [2]
    sent(fw)
    assert fw.port_up(3, PortSpec.make(3, "vm3"))
    assert not fw.port_up(3, PortSpec.make(3, "vm3"))  # no change: nothing happens
    assert [d.ufid for d in fw.take().dels] == [flood.ufid]
    assert outputs(miss(fw, 1, "A", "B").actions) == [2, 3]


def test_a_removed_port_takes_its_flows_and_addresses() -> None:
    fw = forwarder()
    flood = miss(fw, 1, "A", "BCAST")  # A on 1
    from_3 = miss(fw, 3, "C", "A")  # C on 3, unicast to 1
    to_3 = miss(fw, 1, "A", "C")  # unicast to 3
    unrelated = miss(fw, 2, "B", "A")  # unicast to 1
    sent(fw)
    assert fw.port_down(3)
    assert not fw.port_down(3)
    batch = fw.take()
    # from it, towards an address on it, and every flooding flow (the flood set changed)
    assert {d.ufid for d in batch.dels} == {from_3.ufid, to_3.ufid, flood.ufid}
    assert unrelated.alive
    assert fw.macs.lookup((0, mac("C"))) is None
    assert fw.flows_of_port(3) == []
    assert outputs(miss(fw, 1, "A", "BCAST").actions) == [2, 4, 5]
    check_index(fw)


def test_sync_ports_adds_and_removes() -> None:
    fw = forwarder({1: "vm1", 2: "vm2", 3: "vm3"})
    miss(fw, 3, "C", "A")
    fw.sync_ports(
        {1: PortSpec.make(1, "vm1"), 2: PortSpec.make(2, "vm2"), 4: PortSpec.make(4, "x")}
    )
    assert sorted(fw.ports) == [1, 2, 4]
    assert fw.flows_of_port(3) == [] and fw.macs.lookup((0, mac("C"))) is None


# -- batches and results -----------------------------------------------------------------------


def test_batch_order_is_deletes_puts_executes() -> None:
    fw = forwarder()
    miss(fw, 1, "A", "B")
    sent(fw)
    miss(fw, 2, "B", "A")
    batch = fw.take()
    assert [type(op) for op in batch.ops] == [FlowDel, FlowPut, Execute]
    assert batch.puts[0].create and not batch.puts[0].modify  # NEW + NLM_F_CREATE


def test_put_results() -> None:
    fw = forwarder()
    exists = miss(fw, 1, "A", "B")
    bad = miss(fw, 2, "C", "BCAST")
    batch = fw.take()
    results = [
        OpResult(NetlinkError(errno.EEXIST, "exists")),
        OpResult(NetlinkError(errno.EINVAL, "bad key")),
        OpResult(),
        OpResult(NetlinkError(errno.EINVAL, "bad actions")),
    ]
    failed = fw.finish(batch, results)
    assert [f for f, _e in failed] == [bad]
    assert exists.alive and exists.sent  # EEXIST: benign, the flow is there
    assert not bad.alive and bad.ufid not in fw.by_ufid
    c = fw.counters
    assert (c.put_exists, c.put_errors, c.execute_errors) == (1, 1, 1)
    fw.port_down(1)
    batch = fw.take()
    assert [d.ufid for d in batch.dels] == [exists.ufid]
    fw.finish(batch, [OpResult(NetlinkError(errno.ENOENT, "gone"))])
    assert fw.counters.del_missing == 1  # benign too


# -- revalidation --------------------------------------------------------------------------------


def test_idle_flows_are_selected_by_used_or_install_time() -> None:
    fw = forwarder(idle_timeout_ms=1000)
    never = miss(fw, 1, "A", "BCAST", now=0)
    used = miss(fw, 2, "B", "BCAST", now=0)
    sent(fw)
    fw.expired([(never.ufid, 0), (used.ufid, 600), (b"x" * 16, 0), (None, 0)], now=999)
    assert never.alive and used.alive and len(fw.take()) == 0
    fw.expired([(never.ufid, 0), (used.ufid, 600)], now=1000)
    assert not never.alive and used.alive  # never used: counts from its install time
    fw.expired([(used.ufid, 600)], now=1599)
    assert used.alive
    fw.expired([(used.ufid, 600)], now=1600)
    assert not used.alive
    assert [d.ufid for d in fw.take().dels] == [never.ufid, used.ufid]
    assert fw.counters.flows_expired == 2


def test_flows_missing_from_a_dump_are_forgotten_but_not_new_ones() -> None:
    fw = forwarder()
    old = miss(fw, 1, "A", "B")
    sent(fw)
    gen = fw.begin_revalidation()
    new = miss(fw, 2, "C", "BCAST")  # put while the dump runs: the dump may not show it
    sent(fw)
    fw.end_revalidation(gen, 0)
    assert not old.alive and new.alive
    assert fw.counters.flows_vanished == 1
    assert len(fw.take()) == 0  # someone else deleted it: nothing to delete


def test_flow_use_keeps_its_source_address_alive() -> None:
    fw = forwarder(idle_timeout_ms=10_000, mac_aging_ms=1000)
    flow = miss(fw, 1, "A", "B", now=0)
    sent(fw)
    fw.expired([(flow.ufid, 900)], now=950)
    fw.age(1500)
    assert fw.macs.lookup((0, mac("A"))) == 1 and flow.alive
    fw.age(1900)
    assert fw.macs.lookup((0, mac("A"))) is None and not flow.alive


def test_dumps_are_due_only_when_something_can_expire() -> None:
    fw = forwarder(idle_timeout_ms=1000, mac_aging_ms=5000)
    assert not fw.revalidation_due(10**9)  # nothing installed, nothing learned
    flow = miss(fw, 1, "A", "BCAST", now=100)
    assert not fw.revalidation_due(5099)  # not sent yet; A can age at 5100
    sent(fw)
    assert not fw.revalidation_due(1099) and fw.revalidation_due(1100)
    fw.expired([(flow.ufid, 900)], now=1100)  # used at 900: can idle out at 1900
    assert flow.alive and not fw.revalidation_due(1899) and fw.revalidation_due(1900)
    fw.expired([], now=1900)  # gone from the datapath: forgotten, nothing to expire
    assert not flow.alive and fw.n_flows == 0
    # A was learned at 100 and refreshed by the flow's use at 900: a dump at 5100 (the
    # conservative deadline) finds it alive until 5900
    assert fw.revalidation_due(5100) and not fw.revalidation_due(5099)
    fw.expired([], now=5100)
    assert len(fw.macs) == 1 and not fw.revalidation_due(5899)
    fw.expired([], now=5900)
    assert len(fw.macs) == 0 and not fw.revalidation_due(10**9)


def test_an_upcall_long_after_the_put_puts_the_flow_again() -> None:
    fw = forwarder()
    flow = miss(fw, 1, "A", "BCAST", now=0)
    sent(fw)
    assert miss(fw, 1, "A", "BCAST", now=999) is flow  # in flight when the put was sent
    batch = sent(fw)
    assert batch.puts == [] and len(batch.execs) == 1
    assert miss(fw, 1, "A", "BCAST", now=1000) is flow  # the datapath lost it (a flush)
    batch = sent(fw)
    assert [p.ufid for p in batch.puts] == [flow.ufid] and len(batch.execs) == 1
    assert flow.installed == 1000 and fw.counters.reinstalled == 1


# -- properties ----------------------------------------------------------------------------------

EVENT = st.one_of(
    st.tuples(
        st.just("miss"),
        st.integers(1, 4),
        st.sampled_from(["A", "B", "C", "BCAST", "MCAST"]),
        st.sampled_from(["A", "B", "C", "BCAST"]),
    ),
    st.tuples(st.just("down"), st.integers(1, 4), st.none(), st.none()),
    st.tuples(st.just("up"), st.integers(1, 4), st.none(), st.none()),
    st.tuples(st.just("take"), st.none(), st.none(), st.none()),
    st.tuples(st.just("age"), st.none(), st.none(), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(EVENT, max_size=40))
def test_indexes_stay_consistent(events: list[tuple[Any, ...]]) -> None:
    fw = forwarder({1: "p1", 2: "p2", 3: "p3", 4: "p4"}, mac_aging_ms=50)
    installed: set[bytes] = set()
    now = 0
    for kind, port, src, dst in events:
        now += 10
        if kind == "miss":
            miss(fw, port, src, dst, now=now)
        elif kind == "down":
            fw.port_down(port)
        elif kind == "up":
            fw.port_up(port, PortSpec.make(port, f"p{port}"))
        elif kind == "age":
            fw.age(now)
        batch = sent(fw) if kind == "take" else None
        if batch is not None:
            for d in batch.dels:
                assert d.ufid is not None
                installed.discard(d.ufid)
            for p in batch.puts:
                assert p.ufid is not None and p.ufid not in installed  # no put twice
                installed.add(p.ufid)
        check_index(fw)
    batch = sent(fw)
    for d in batch.dels:
        assert d.ufid is not None
        installed.discard(d.ufid)
    installed |= {p.ufid for p in batch.puts if p.ufid is not None}
    # what the datapath holds is exactly what the forwarder believes is installed
    assert installed == set(fw.by_ufid)


# -- configuration -------------------------------------------------------------------------------


def test_default_config_matches_the_default_switch() -> None:
    config = parse_config(DEFAULT_CONFIG)
    assert config.datapath == "ovs-system"
    assert [(p.name, p.type) for p in config.ports] == [
        ("vm1", "netdev"),
        ("vm2", "netdev"),
        ("vm3", "netdev"),
        ("ext", "netdev"),
        ("host", "internal"),
    ]
    assert (config.idle_timeout, config.mac_aging, config.mac_table_size) == (10.0, 300.0, 65536)


def test_default_config_has_the_default_switchs_ports() -> None:
    from ovsdp.vswitch import config as switch_config
    from ovsdp.vswitch.switch import PortType

    switch = switch_config.parse_config(switch_config.DEFAULT_CONFIG)
    ours = {p.name: p.type for p in parse_config(DEFAULT_CONFIG).ports}
    assert ours == {
        p.name: "internal" if p.type is PortType.INTERNAL else "netdev" for p in switch.ports
    }


def test_config_with_everything() -> None:
    config = parse_config(
        """
        [datapath]
        name = "dp1"
        [flows]
        idle_timeout = 2.5
        revalidate_interval = 0.25
        [mac]
        aging_time = 60
        table_size = 100
        [[port]]
        name = "vm1"
        type = "system"
        [[port]]
        name = "vx"
        type = "vxlan"
        options = { dst_port = 8472, remote_ip = "192.0.2.2", local_ip = "192.0.2.1", key = 7 }
        [[port]]
        name = "vx2"
        type = "vxlan"
        """
    )
    assert config.datapath == "dp1"
    assert (config.idle_timeout, config.revalidate_interval) == (2.5, 0.25)
    assert (config.mac_aging, config.mac_table_size) == (60.0, 100)
    vm1, vx, vx2 = config.ports
    assert vm1.type == "netdev" and vm1.dp_options is None
    assert vx.dp_options == {"dst_port": 8472}
    assert vx.tunnel == TunnelConfig(0xC0000202, 0xC0000201, 7, 64, 8472)
    assert vx2.dp_options == {"dst_port": 4789} and vx2.tunnel is None
    assert config.port("vx") is vx and config.port("nope") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[bridge]", "unknown sections"),
        ("[flows]\nidle = 1", "unknown keys"),
        ("[flows]\nidle_timeout = 0", "idle_timeout must be > 0"),
        ("[flows]\nidle_timeout = 'x'", "number of seconds"),
        ("[mac]\ntable_size = 0", "table_size"),
        ("[datapath]\nname = 'a-very-long-datapath-name'", "1-15 characters"),
        ("[[port]]\ntype = 'netdev'", "needs a name"),
        ("[[port]]\nname = 'x'\ntype = 'gre'", "type must be one of"),
        ("[[port]]\nname = 'x'\noptions = { key = 1 }", "only vxlan ports take options"),
        ("[[port]]\nname = 'x'\ntype = 'vxlan'\noptions = { key = 1 }", "need remote_ip"),
        ("[[port]]\nname = 'x'\ntype = 'vxlan'\noptions = { remote_ip = 'x' }", "not an IPv4"),
        ("[[port]]\nname = 'x'\ntype = 'vxlan'\noptions = { dst_port = 0 }", "dst_port"),
        ("[[port]]\nname = 'x'\ntype = 'vxlan'\noptions = { tos = 0 }", "unknown vxlan options"),
        ("[[port]]\nname = 'x'\n[[port]]\nname = 'x'", "duplicate port names"),
        ("[[port]]\nname = 'ovs-system'", "the datapath's name"),
        ("port = 1", "array of tables"),
        ("[[port", "<t>"),
    ],
)
def test_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "<t>")
