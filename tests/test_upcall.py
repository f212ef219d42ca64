"""Upcalls (docs/datapath.md section 4): MISS and ACTION messages, their content and order, where
they go (port PIDs, several PIDs, per-CPU PIDs, an action's PID), and what is lost (no PID, a full
socket queue) -- through real connections, the missed frame dropped, nothing left outstanding.
"""

from __future__ import annotations

import errno
import ipaddress
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import expect_errno
from flow_support import (
    MAC,
    Env,
    actions,
    flow_env,
    in_kernel_order,
    key,
    l2_megaflow_text,
    udp_frame,
    udp_key_text,
)

from ovsdp.flowtable.flow_key import attrs_to_key, extract_key, port_prefix
from ovsdp.netlink.constants import (
    OVS_PACKET_HASH_SW_BIT,
    DpFeature,
    FlowCmd,
    FragType,
    PacketCmd,
)
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import GenlMessage

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6  # noqa: E402
from scapy.layers.l2 import ARP, Dot1Q, Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

E12 = Ether(src=MAC["vm1"], dst=MAC["vm2"])


@pytest.fixture
def env() -> Iterator[Env]:
    with flow_env() as e:
        yield e


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def check_miss(env: Env, msg: GenlMessage, frame: bytes, in_port: int) -> dict[str, Any]:
    """A MISS as the kernel sends it; its KEY."""
    assert msg.cmd == PacketCmd.MISS
    assert msg.seq == 0 and msg.dp_ifindex == env.ifindex
    assert list(msg.attrs) == ["key", "hash", "packet"]  # the kernel's order
    assert msg.attrs["packet"] == frame
    assert msg.attrs["hash"] & OVS_PACKET_HASH_SW_BIT  # a software hash
    assert msg.attrs["hash"] >> 33 == 0
    k: dict[str, Any] = msg.attrs["key"]
    assert in_kernel_order(k)
    assert (k["recirc_id"], k["dp_hash"], k["priority"], k["skb_mark"]) == (0, 0, 0, 0)
    assert k["in_port"] == in_port
    # the KEY is the key of the frame as the datapath extracts it
    assert attrs_to_key(k, None)[0] == extract_key(frame, port_prefix(in_port))
    return k


# -- MISS content, compared with scapy's reading of the frame -----------------------------------


def test_miss_of_a_tcp_frame(env: Env) -> None:
    pkt = (
        E12
        / IP(src="10.1.2.3", dst="10.4.5.6", tos=0x2E, ttl=17)
        / TCP(sport=4321, dport=443, flags="SA")
    )
    frame = bytes(pkt)
    env.inject("vm1", [frame])
    (msg,) = env.upcalls(1)
    k = check_miss(env, msg, frame, 1)
    assert list(k)[5:] == ["ethernet", "ethertype", "ipv4", "tcp", "tcp_flags"]
    assert k["ethernet"].src == mac(pkt.src) and k["ethernet"].dst == mac(pkt.dst)
    assert k["ethertype"] == pkt.type
    ip = pkt[IP]
    assert k["ipv4"].src == ip4(ip.src) and k["ipv4"].dst == ip4(ip.dst)
    assert (k["ipv4"].proto, k["ipv4"].tos, k["ipv4"].ttl) == (ip.proto, ip.tos, ip.ttl)
    assert k["ipv4"].frag == FragType.NONE
    assert (k["tcp"].src, k["tcp"].dst) == (pkt[TCP].sport, pkt[TCP].dport)
    assert k["tcp_flags"] == int(pkt[TCP].flags)
    # nothing delivered anywhere: the missed frame is dropped once copied
    assert env.take_all() == {p: [] for p in ("vm1", "vm2", "vm3", "ext", "host")}


def test_miss_of_a_udp_fragment_and_an_icmp_frame(env: Env) -> None:
    first = E12 / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF", ttl=3) / UDP(sport=7, dport=9)
    later = E12 / IP(src="10.0.0.1", dst="10.0.0.2", frag=100, proto=17) / Raw(b"z" * 30)
    icmp = E12 / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, code=0)
    frames = [bytes(first), bytes(later), bytes(icmp)]
    env.inject("vm2", frames)
    msgs = env.upcalls(3)
    k1, k2, k3 = (check_miss(env, m, f, 2) for m, f in zip(msgs, frames, strict=True))
    assert k1["ipv4"].frag == FragType.FIRST and k1["ipv4"].ttl == 3
    assert (k1["udp"].src, k1["udp"].dst) == (7, 9)
    assert k2["ipv4"].frag == FragType.LATER and "udp" not in k2  # no L4 in a later fragment
    assert (k3["icmp"].type, k3["icmp"].code) == (8, 0)


def test_miss_of_ipv6_arp_and_vlan_frames(env: Env) -> None:
    ns = (
        Ether(src=MAC["vm1"], dst="33:33:ff:00:00:02")
        / IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255, tc=0x20, fl=0x12345)
        / ICMPv6ND_NS(tgt="fe80::2")
    )
    echo6 = E12 / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest()
    arp = E12 / ARP(op=2, psrc="10.0.0.1", pdst="10.0.0.2", hwsrc=MAC["vm1"], hwdst=MAC["vm2"])
    tagged = E12 / Dot1Q(vlan=42, prio=5) / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(dport=53)
    frames = [bytes(p) for p in (ns, echo6, arp, tagged)]
    env.inject("vm3", frames)
    msgs = env.upcalls(4)
    keys = [check_miss(env, m, f, 3) for m, f in zip(msgs, frames, strict=True)]
    k = keys[0]
    assert k["ipv6"].src == ipaddress.IPv6Address("fe80::1").packed
    assert (k["ipv6"].label, k["ipv6"].tclass, k["ipv6"].hlimit) == (0x12345, 0x20, 255)
    assert (k["icmpv6"].type, k["icmpv6"].code) == (135, 0)
    assert k["nd"].target == ipaddress.IPv6Address("fe80::2").packed
    assert list(k)[-3:] == ["ipv6", "icmpv6", "nd"]
    assert (keys[1]["icmpv6"].type, keys[1]["ethertype"]) == (128, 0x86DD)
    a = keys[2]["arp"]
    assert (a.sip, a.tip, a.op) == (ip4("10.0.0.1"), ip4("10.0.0.2"), 2)
    assert (a.sha, a.tha) == (mac(MAC["vm1"]), mac(MAC["vm2"]))
    # a VLAN: ETHERTYPE is the TPID, then VLAN, then ENCAP with the rest (the kernel's shape)
    v = keys[3]
    assert list(v)[5:] == ["ethernet", "ethertype", "vlan", "encap"]
    assert v["ethertype"] == 0x8100 and v["vlan"] == 0x1000 | (5 << 13) | 42
    assert list(v["encap"]) == ["ethertype", "ipv4", "udp"]
    assert v["encap"]["udp"].dst == 53


def test_the_hash_is_the_packets(env: Env) -> None:
    a, b = udp_frame(1), udp_frame(2)
    env.inject("vm1", [a, b, a])
    m1, m2, m3 = env.upcalls(3)
    assert m1.attrs["hash"] == m3.attrs["hash"] != m2.attrs["hash"]
    assert all(m.attrs["hash"] & 0xFFFFFFFF for m in (m1, m2, m3))


# -- where misses go -----------------------------------------------------------------------------


def test_a_miss_goes_to_its_in_ports_pid(env: Env) -> None:
    other = env.h.client()
    env.c.vport_set(env.ifindex, "vm2", upcall_pid=[other.pid])
    env.inject("vm1", [udp_frame(src="vm1")])
    env.inject("vm2", [udp_frame(src="vm2"), udp_frame(5, src="vm2")])
    assert [m.attrs["key"]["in_port"] for m in env.upcalls(1)] == [1]
    assert [m.attrs["key"]["in_port"] for m in env.upcalls(2, client=other)] == [2, 2]
    vm2 = env.vport("vm2")["upcall_stats"]
    assert (vm2["success"], vm2["fail"]) == (2, 0)


def test_several_pids_are_picked_by_the_hash(env: Env) -> None:
    handlers = [env.h.client() for _ in range(3)]
    env.c.vport_set(env.ifindex, "vm1", upcall_pid=[h.pid for h in handlers])
    frames = [udp_frame(sport) for sport in range(60)]
    env.inject("vm1", frames + frames[:10])
    got: dict[bytes, set[int]] = {}
    counts: Counter[int] = Counter()
    for h in handlers:
        for m in h.events():  # everything queued before the inject returned
            got.setdefault(m.attrs["packet"], set()).add(h.pid)
            counts[h.pid] += 1
    assert sum(counts.values()) == 70
    assert all(counts[h.pid] > 0 for h in handlers)  # spread over all of them
    assert all(len(pids) == 1 for pids in got.values())  # a flow's misses: always one PID
    assert set(got) == set(frames)
    env.no_upcalls()


def test_per_cpu_mode_uses_per_cpu_pids_by_hash(env: Env) -> None:
    handlers = [env.h.client() for _ in range(2)]
    pids = [h.pid for h in handlers]
    env.c.dp_set("dp0", user_features=int(DpFeature.DISPATCH_UPCALL_PER_CPU), per_cpu_pids=pids)
    frames = [udp_frame(sport) for sport in range(30)]
    env.inject("vm1", frames)
    seen = 0
    for h in handlers:
        for m in h.events():
            assert pids[(m.attrs["hash"] & 0xFFFFFFFF) % len(pids)] == h.pid
            seen += 1
    assert seen == 30
    env.no_upcalls()  # the port's own PID is not used in per-CPU mode
    # per-CPU mode without PIDs: lost
    env.c.dp_set("dp0", user_features=int(DpFeature.DISPATCH_UPCALL_PER_CPU), per_cpu_pids=[])
    before = env.stats()
    env.inject("vm1", [udp_frame(99)])
    after = env.stats()
    assert (after.n_missed - before.n_missed, after.n_lost - before.n_lost) == (1, 1)
    for h in handlers:
        assert h.events() == []


def test_a_port_without_pid_loses_its_misses(env: Env) -> None:
    env.c.vport_set(env.ifindex, "vm1", upcall_pid=[0])
    env.inject("vm1", [udp_frame(1), udp_frame(2)])
    stats = env.stats()
    assert (stats.n_missed, stats.n_lost) == (2, 2)
    assert env.vport("vm1")["upcall_stats"] == {"success": 0, "fail": 2}
    env.no_upcalls()
    assert env.take_all()["vm2"] == []


def test_a_pid_nobody_holds_loses_its_misses(env: Env) -> None:
    env.c.vport_set(env.ifindex, "vm1", upcall_pid=[env.closed_pid()])
    env.inject("vm1", [udp_frame(1)])
    assert env.stats().n_lost == 1
    assert env.vport("vm1")["upcall_stats"] == {"success": 0, "fail": 1}


def test_a_full_socket_queue_loses_upcalls_and_tells_the_client(env: Env) -> None:
    env.handler.properties(rxq_limit=4096)
    frames = [udp_frame(sport, payload=bytes(200)) for sport in range(100)]
    env.inject("vm1", frames)
    received: list[bytes] = []
    overrun = False
    while True:
        try:
            batch = env.handler.recv(timeout=0.5)
        except NetlinkError as exc:
            assert exc.errno == errno.ENOBUFS
            overrun = True
            continue
        if not batch:
            break
        received += [m.attrs["packet"] for m in batch if isinstance(m, GenlMessage)]
    assert overrun
    assert 0 < len(received) < 100
    assert received == frames[: len(received)]  # what fitted, in order
    stats = env.stats()
    assert (stats.n_missed, stats.n_lost) == (100, 100 - len(received))
    upcall_stats = env.vport("vm1")["upcall_stats"]
    assert upcall_stats == {"success": len(received), "fail": 100 - len(received)}
    # the queue drained, upcalls flow again
    env.inject("vm1", [udp_frame(500)])
    assert len(env.upcalls(1)) == 1


# -- ACTION upcalls ---------------------------------------------------------------------------


def test_userspace_action_with_userdata(env: Env) -> None:
    env.put(udp_key_text(), f"userspace(pid={env.handler.pid},userdata(0102030405060708)),2")
    frame = udp_frame()
    env.inject("vm1", [frame])
    (msg,) = env.upcalls(1)
    assert msg.cmd == PacketCmd.ACTION and msg.seq == 0 and msg.dp_ifindex == env.ifindex
    assert list(msg.attrs) == ["key", "userdata", "hash", "packet"]
    assert msg.attrs["userdata"] == bytes.fromhex("0102030405060708")
    assert msg.attrs["packet"] == frame
    assert msg.attrs["hash"] & OVS_PACKET_HASH_SW_BIT
    assert attrs_to_key(msg.attrs["key"], None)[0] == extract_key(frame, port_prefix(1))
    assert in_kernel_order(msg.attrs["key"])
    assert env.take("vm2") == [frame]  # the upcall is a copy: the output still happens
    assert env.stats().n_missed == 0


def test_action_upcalls_carry_the_packets_hash_and_count_on_the_in_port(env: Env) -> None:
    """Like MISS upcalls, ACTION upcalls carry the packet's own hash (one per flow of traffic,
    not a constant) and count in the in-port's upcall stats, as the kernel counts every upcall."""
    env.put(l2_megaflow_text(), f"userspace(pid={env.handler.pid},userdata(0102030405060708)),2")
    a, b = udp_frame(1), udp_frame(2)
    before = env.vport("vm1")["upcall_stats"]["success"]
    env.inject("vm1", [a, b, a])
    m1, m2, m3 = env.upcalls(3)
    assert all(m.cmd == PacketCmd.ACTION for m in (m1, m2, m3))
    assert m1.attrs["hash"] == m3.attrs["hash"] != m2.attrs["hash"]
    assert env.vport("vm1")["upcall_stats"]["success"] == before + 3
    env.take("vm2")


def test_userspace_action_flag_trunc_and_order(env: Env) -> None:
    acts = [("trunc", 60), ("userspace", {"pid": env.handler.pid, "actions": True}), ("output", 2)]
    env.flow(FlowCmd.NEW, {"key": key(udp_key_text()), "actions": acts})
    frame = udp_frame(payload=bytes(200))
    env.inject("vm1", [frame])
    (msg,) = env.upcalls(1)
    assert list(msg.attrs) == ["key", "actions", "len", "hash", "packet"]  # no USERDATA given
    assert msg.attrs["actions"] == acts  # the list the action belongs to
    assert msg.attrs["packet"] == frame[:60] and msg.attrs["len"] == len(frame)
    assert env.take("vm2") == [frame]  # the userspace action used the trunc up (the kernel's)


def test_userspace_action_pids(env: Env) -> None:
    other = env.h.client()
    per_cpu = env.h.client()
    gone_pid = env.closed_pid()
    expect_errno(errno.EINVAL, env.put, udp_key_text(sport=3), "userspace(pid=0)")
    env.c.dp_set(
        "dp0",
        user_features=int(DpFeature.DISPATCH_UPCALL_PER_CPU),
        per_cpu_pids=[per_cpu.pid],
    )
    env.put(udp_key_text(sport=1), f"userspace(pid={other.pid})")
    env.put(udp_key_text(sport=2), "userspace(pid=4294967295)")  # the per-CPU PID
    env.put(udp_key_text(sport=3), f"userspace(pid={gone_pid})")  # nobody there: lost
    env.inject("vm1", [udp_frame(1), udp_frame(2), udp_frame(3)])
    assert [m.attrs["packet"] for m in env.upcalls(1, client=other)] == [udp_frame(1)]
    assert [m.attrs["packet"] for m in env.upcalls(1, client=per_cpu)] == [udp_frame(2)]
    env.no_upcalls()
    stats = env.stats()
    assert (stats.n_hit, stats.n_missed, stats.n_lost) == (3, 0, 1)
    assert env.take_all()["vm2"] == []


def test_userspace_action_after_a_change_reports_the_changed_packet(env: Env) -> None:
    env.put(udp_key_text(), f"set(ipv4(ttl=9)),userspace(pid={env.handler.pid})")
    env.inject("vm1", [udp_frame()])
    (msg,) = env.upcalls(1)
    got = Ether(msg.attrs["packet"])
    assert got[IP].ttl == 9
    assert msg.attrs["key"]["ipv4"].ttl == 9  # the key follows the set, as the kernel's does
    env.no_upcalls()


def test_miss_and_action_upcalls_in_one_batch(env: Env) -> None:
    env.put(l2_megaflow_text(dst="vm3"), f"userspace(pid={env.handler.pid}),3")
    frames = [udp_frame(1), udp_frame(2, dst="vm3"), udp_frame(3)]
    env.inject("vm1", frames)
    msgs = env.upcalls(3)
    assert Counter(m.cmd for m in msgs) == {PacketCmd.MISS: 2, PacketCmd.ACTION: 1}
    assert sorted(m.attrs["packet"] for m in msgs) == sorted(frames)
    assert env.take("vm3") == [frames[1]]


def test_a_miss_installs_back_as_a_flow(env: Env) -> None:
    # what ovs-vswitchd does: the upcall's KEY (exact) becomes a flow, the packet is executed
    frame = bytes(E12 / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=5, dport=6, flags="S"))
    env.inject("vm1", [frame])
    (msg,) = env.upcalls(1)
    k = msg.attrs["key"]
    env.flow(FlowCmd.NEW, {"key": k, "actions": actions("2")})
    env.c.transact(
        "ovs_packet",
        PacketCmd.EXECUTE,
        {"packet": msg.attrs["packet"], "key": k, "actions": actions("2")},
        dp_ifindex=env.ifindex,
    )
    env.inject("vm1", [frame])
    assert env.take("vm2") == [frame, frame]
    env.no_upcalls()
    assert env.stats().n_hit == 1
    # the installed key is the flow's identity
    assert env.flow(FlowCmd.GET, {"key": k})[0].attrs["stats"].n_packets == 1
    expect_errno(errno.EEXIST, env.flow, FlowCmd.NEW, {"key": k, "actions": []}, flags=0x400)
