"""One packet's way through the switch (docs/datapath.md sections 1 and 5): frames a NIC received,
the flow table, actions end to end (the delivered frames parsed with scapy), recirculation and
its limit, outputs with no place to go, and the completion invariant after every scenario.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from flow_support import (
    MAC,
    Env,
    flow_env,
    l2_megaflow_text,
    tcp_frame,
    udp_frame,
    udp_key_text,
)

from ovsdp.datapath.pipeline import MAX_RECIRCULATIONS
from ovsdp.netlink.constants import PacketCmd
from ovsdp.vswitch.switch import PortType

warnings.filterwarnings("ignore", module="scapy")
from scapy.contrib.mpls import MPLS  # noqa: E402
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether  # noqa: E402

PORTS = ("vm1", "vm2", "vm3", "ext", "host")
K1 = udp_key_text()
F1 = udp_frame()


@pytest.fixture
def env() -> Iterator[Env]:
    with flow_env() as e:
        yield e


def nothing_else(env: Env, **expected: list[bytes]) -> None:
    """Every port received exactly what ``expected`` says (nothing for the others)."""
    got = env.take_all(PORTS)
    assert got == {p: expected.get(p, []) for p in PORTS}


def checksums_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    copy = pkt.copy()
    for layer in (IP, UDP, TCP):
        if layer in copy:
            del copy[layer].chksum
    return bytes(Ether(bytes(copy))) == frame


# -- actions end to end, parsed with scapy ------------------------------------------------------


def test_single_output_forwards_the_frame_unchanged(env: Env) -> None:
    env.put(K1, "2")
    env.inject("vm1", [F1] * 5)
    nothing_else(env, vm2=[F1] * 5)
    assert env.counters()["created"] == 0  # forwarded as they are: no copies
    assert env.vport("vm2")["stats"].tx_packets == 5
    assert env.vport("vm1")["stats"].rx_packets == 5


def test_set_fields_end_to_end(env: Env) -> None:
    env.put(
        K1,
        "set(eth(src=02:00:00:00:00:aa,dst=02:00:00:00:00:bb)),"
        "set(ipv4(src=192.168.1.1,dst=192.168.1.2,tos=0x10,ttl=9)),set(udp(src=5,dst=6)),2",
    )
    env.inject("vm1", [F1])
    (out,) = env.take("vm2")
    pkt = Ether(out)
    assert (pkt.src, pkt.dst) == ("02:00:00:00:00:aa", "02:00:00:00:00:bb")
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].tos, pkt[IP].ttl) == (
        "192.168.1.1", "192.168.1.2", 0x10, 9,
    )  # fmt: skip
    assert (pkt[UDP].sport, pkt[UDP].dport) == (5, 6)
    assert bytes(pkt[UDP].payload) == bytes(Ether(F1)[UDP].payload)
    assert checksums_ok(out)
    nothing_else(env)


def test_vlan_and_mpls_push_pop_end_to_end(env: Env) -> None:
    env.put(K1, "push_vlan(vid=10,pcp=2),2,push_vlan(tpid=0x88a8,vid=20,pcp=0),3")
    env.inject("vm1", [F1])
    (one,) = env.take("vm2")
    (two,) = env.take("vm3")
    p1 = Ether(one)
    assert p1.type == 0x8100 and p1[Dot1Q].vlan == 10 and p1[Dot1Q].prio == 2
    assert bytes(p1[IP]) == bytes(Ether(F1)[IP])
    p2 = Ether(two)
    assert p2.type == 0x88A8 and p2[Dot1AD].vlan == 20 and p2[Dot1Q].vlan == 10
    tagged = bytes(Ether(src=MAC["vm1"], dst=MAC["vm2"]) / Dot1Q(vlan=10) / Ether(F1)[IP])
    env.put(
        f"in_port(1),eth(src={MAC['vm1']},dst={MAC['vm2']}),eth_type(0x8100),vlan(vid=10,pcp=0),"
        "encap(eth_type(0x0800),ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),"
        "udp(src=1000,dst=2000))",
        "pop_vlan,push_mpls(label=100,tc=1,ttl=8,bos=1,eth_type=0x8847),2",
    )
    env.inject("vm1", [tagged])
    (mpls,) = env.take("vm2")
    pm = Ether(mpls)
    assert pm.type == 0x8847 and Dot1Q not in pm
    assert (pm[MPLS].label, pm[MPLS].cos, pm[MPLS].ttl, pm[MPLS].s) == (100, 1, 8, 1)
    nothing_else(env)


def test_an_output_before_a_change_sends_the_packet_as_it_was(env: Env) -> None:
    env.put(K1, "2,set(ipv4(ttl=9)),3,dec_ttl(le_1(drop)),1")
    env.inject("vm1", [F1])
    (a,) = env.take("vm2")
    (b,) = env.take("vm3")
    (c,) = env.take("vm1")
    assert a == F1
    assert Ether(b)[IP].ttl == 9 and Ether(c)[IP].ttl == 8
    assert checksums_ok(b) and checksums_ok(c)


def test_trunc_clone_sample_check_pkt_len(env: Env) -> None:
    big = udp_frame(payload=bytes(500))
    env.put(
        udp_key_text(),
        "trunc(64),2,clone(set(udp(dst=7)),3),sample(sample=0%,actions(1)),"
        "check_pkt_len(size=200,gt(3),le(1))",
    )
    env.inject("vm1", [big, F1])
    assert env.take("vm2") == [big[:64], F1]
    vm3 = env.take("vm3")
    # per frame: the clone's copy, then check_pkt_len's (the big frame, the clone's change is its
    # own, trunc was used up by the first output)
    assert [Ether(f)[UDP].dport for f in vm3] == [7, 2000, 7]
    assert vm3[1] == big
    assert env.take("vm1") == [F1]  # le: the small one; sample 0% never runs
    nothing_else(env)


def test_hash_then_recirc_carries_dp_hash(env: Env) -> None:
    megaflow = l2_megaflow_text()
    env.put(megaflow, "hash(l4(0)),recirc(4)")
    env.put(l2_megaflow_text(meta="recirc_id(4),dp_hash(0/1)"), "2")
    env.put(l2_megaflow_text(meta="recirc_id(4),dp_hash(1/1)"), "3")
    frames = [udp_frame(sport) for sport in range(20)]
    env.inject("vm1", frames + frames)
    vm2, vm3 = env.take("vm2"), env.take("vm3")
    assert sorted(vm2 + vm3) == sorted(frames + frames)
    assert vm2 and vm3  # spread by the hash's low bit
    assert all(vm2.count(f) in (0, 2) for f in frames)  # one flow: one hash, one way
    stats = env.stats()
    assert (stats.n_hit, stats.n_missed) == (80, 0)


# -- recirculation -------------------------------------------------------------------------------


def test_recirculation_to_a_second_flow(env: Env) -> None:
    env.put(K1, "set(ipv4(ttl=20)),recirc(5)")
    second = udp_key_text(ttl=20, recirc_id=5)
    env.put(second, "2")
    env.inject("vm1", [F1, F1])
    out = env.take("vm2")
    assert len(out) == 2 and all(Ether(f)[IP].ttl == 20 for f in out)
    stats = env.stats()
    assert (stats.n_hit, stats.n_missed) == (4, 0)  # every lookup counts, recirculated too
    assert env.get(K1)["stats"].n_packets == 2
    assert env.get(second)["stats"].n_packets == 2
    nothing_else(env)


def test_recirculation_without_a_flow_is_a_miss_with_recirc_id(env: Env) -> None:
    env.put(K1, "recirc(77)")
    env.inject("vm1", [F1])
    (msg,) = env.upcalls(1)
    assert msg.cmd == PacketCmd.MISS and msg.attrs["packet"] == F1
    assert msg.attrs["key"]["recirc_id"] == 77 and msg.attrs["key"]["in_port"] == 1
    stats = env.stats()
    assert (stats.n_hit, stats.n_missed) == (1, 1)
    nothing_else(env)


def test_the_recirculation_limit_drops_a_loop(env: Env) -> None:
    env.put(K1, "recirc(1)")
    env.put(udp_key_text(recirc_id=1), "2,recirc(1)")
    env.inject("vm1", [F1])
    # each pass outputs once, then recirculates again, until the limit drops it
    assert env.take("vm2") == [F1] * MAX_RECIRCULATIONS
    loop = env.get(udp_key_text(recirc_id=1))["stats"].n_packets
    assert loop == MAX_RECIRCULATIONS
    # counted by the pipeline, not as lost (n_lost is for upcalls that could not be queued)
    assert env.counters()["recirc_limit_drops"] == 1
    stats = env.stats()
    assert stats.n_lost == 0 and stats.n_missed == 0
    nothing_else(env)
    # an execute's loop is dropped and counted the same way
    env.execute(F1, "in_port(1)", "recirc(1)")
    assert env.take("vm2") == [F1] * MAX_RECIRCULATIONS
    assert env.counters()["recirc_limit_drops"] == 2 and env.stats().n_lost == 0
    env.no_upcalls()


# -- outputs with no place to go, and the invariant -------------------------------------------


@pytest.mark.parametrize(
    "acts",
    [
        "2",
        "2,3",
        "2,2,2",
        "set(ipv4(ttl=3)),2",
        "clone(2),clone(clone(3)),1",
        "sample(sample=100%,actions(2)),sample(sample=0%,actions(3))",
        "",
        "recirc(1)",
        "0",
        "0,2",
        "99",
        "2,99,3",
        "userspace(pid=1),2",
    ],
)
def test_every_frame_completes(env: Env, acts: str) -> None:
    env.put(K1, acts.replace("pid=1", f"pid={env.handler.pid}"))
    env.put(udp_key_text(recirc_id=1), "3")
    env.inject("vm1", [F1] * 3 + [udp_frame(5)])  # three hits and a miss
    env.check_idle()
    env.take_all()
    env.handler.events()


def test_output_to_a_down_port_is_dropped_and_counted(env: Env) -> None:
    env.put(K1, "3")  # the forward path (one output)
    env.put(udp_key_text(sport=7), "set(udp(src=8)),3")  # a copy
    env.c.link("vm3", False)
    env.inject("vm1", [F1, F1, udp_frame(7)])
    env.c.disconnect("vm3")
    env.inject("vm1", [F1])
    nothing_else(env)
    stats = env.vport("vm3")["stats"]
    assert (stats.tx_packets, stats.tx_dropped) == (0, 4)
    env.c.connect("vm3")
    env.inject("vm1", [F1])
    nothing_else(env, vm3=[F1])


def test_output_to_an_absent_port_is_dropped_and_counted(env: Env) -> None:
    env.put(K1, "3")
    env.put(udp_key_text(sport=7), "2,3")
    env.c.del_port("vm3")  # the switch port goes: the vport stays, ABSENT
    env.inject("vm1", [F1, udp_frame(7)])
    nothing_else(env, vm2=[udp_frame(7)])
    assert env.vport("vm3")["stats"].tx_dropped == 2
    env.c.add_port("vm3", PortType.VM_SYNTHETIC, mac=bytes.fromhex("00155d000003"))
    env.inject("vm1", [F1])  # bound again in place
    nothing_else(env, vm3=[F1])


def test_output_to_the_local_port_and_to_no_port(env: Env) -> None:
    env.put(K1, "0")
    env.put(udp_key_text(sport=7), "99")
    env.put(udp_key_text(sport=8), "set(ipv4(ttl=1)),0,98")
    env.inject("vm1", [F1, F1, udp_frame(7), udp_frame(8)])
    nothing_else(env)
    local = env.c.vport_get(env.ifindex, "dp0").attrs["stats"]
    assert local.tx_packets == 3
    assert env.counters()["output_no_port"] == 2


def test_a_deleted_vports_number_is_no_port(env: Env) -> None:
    env.put(K1, "3")
    env.c.vport_del(env.ifindex, "vm3")
    env.inject("vm1", [F1])
    nothing_else(env)
    assert env.counters()["output_no_port"] == 1


def test_frames_from_a_port_no_datapath_holds_are_dropped(env: Env) -> None:
    env.inject("ext", [F1, F1])
    nothing_else(env)
    assert env.counters()["unbound_rx"] == 2
    env.no_upcalls()
    assert env.stats().n_missed == 0


def test_runts_are_dropped_and_counted(env: Env) -> None:
    env.put(l2_megaflow_text(), "2")
    env.inject("vm1", [b"", F1[:6], F1[:13], F1[:14], F1])
    assert env.counters()["short_frames"] == 3
    # the 14-byte frame (an Ethernet header, eth_type 0x0800, no IPv4 header) matches
    nothing_else(env, vm2=[F1[:14], F1])
    env.no_upcalls()


def test_a_batch_with_many_flows(env: Env) -> None:
    env.put(l2_megaflow_text(dst="vm2"), "2")
    env.put(l2_megaflow_text(dst="vm3"), "set(ipv4(ttl=7)),3")
    env.put(l2_megaflow_text(dst="vm1"), "")
    frames = []
    for i in range(60):
        dst = ("vm2", "vm3", "vm1", "02:00:00:00:00:99")[i % 4]
        frames.append(udp_frame(i, dst=dst) if i % 3 else tcp_frame(i, dst=dst))
    env.inject("vm1", frames)
    vm2 = env.take("vm2")
    vm3 = env.take("vm3")
    assert vm2 == frames[0::4]
    assert [Ether(f)[IP].ttl for f in vm3] == [7] * 15
    assert len(env.upcalls(15)) == 15
    flows = {f["actions"][-1][1] if f["actions"] else None: f for f in env.dump()}
    assert flows[2]["stats"].n_packets == 15 and flows[3]["stats"].n_packets == 15
    assert flows[None]["stats"].n_packets == 15
    stats = env.stats()
    assert (stats.n_hit, stats.n_missed) == (45, 15)
    nothing_else(env)


def test_a_flow_changing_between_batches_takes_effect(env: Env) -> None:
    env.put(K1, "2")
    env.inject("vm1", [F1])
    env.set(K1, actions=[("output", 3)])
    env.inject("vm1", [F1])  # the exact-match cache must not keep the old actions
    env.delete(K1)
    env.inject("vm1", [F1])
    nothing_else(env, vm2=[F1], vm3=[F1])
    assert len(env.upcalls(1)) == 1
