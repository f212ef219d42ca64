"""VXLAN through the packet path (docs/tunnel.md): encapsulation out of the external port, the
neighbour table and ARP, outer fragmentation and DF, decapsulation of scapy-built packets with
the tunnel metadata in the flow key and in upcalls, bad VXLAN packets, packets that are not for
the VTEP, reassembly before decap (orders, duplicates, overlaps, a timeout with a fake clock),
and the completion invariant after every scenario (flow_env checks it).
"""

from __future__ import annotations

import ipaddress
import random
import struct
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from datapath_support import VXLAN
from flow_support import IPV4_ANY, MAC, Env, flow_env, l2_megaflow_text, udp_frame

from ovsdp.netlink.constants import FlowCmd, PacketCmd
from ovsdp.tunnel.vxlan import SPORT_MAX, SPORT_MIN

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP, UDP, fragment  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN as ScapyVXLAN  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import checksum as scapy_checksum  # noqa: E402

VTEP = "192.0.2.1"
PEER = "192.0.2.2"
PEER_MAC = "02:00:00:00:00:02"
GATEWAY = "192.0.2.254"
GATEWAY_MAC = "02:00:00:00:00:fe"
PORTS = ("vm1", "vm2", "vm3", "ext", "host")

CONFIG = f"""
[[port]]
name = "vm1"
type = "vm"
mac = "{MAC["vm1"]}"
[[port]]
name = "vm2"
type = "vm"
mac = "{MAC["vm2"]}"
[[port]]
name = "vm3"
type = "vm"
mac = "{MAC["vm3"]}"
[[port]]
name = "ext"
type = "external"
mac = "{MAC["ext"]}"
[[port]]
name = "host"
type = "internal"
mac = "{MAC["host"]}"
ipv4 = "{VTEP}/24"

[tunnel]
gateway = "{GATEWAY}"

[[neighbour]]
ip = "{PEER}"
mac = "{PEER_MAC}"
"""


class TunnelEnv(Env):
    """An Env whose datapath also holds ext (port 4) and a VXLAN vport vx (port 5)."""

    vx: int

    def tunnel(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(endpoint)`` in the service's thread."""
        return self.h.call(lambda: fn(self.pipeline.tunnel))

    def stats(self) -> Any:
        return self.tunnel(lambda t: t.stats())

    def nonzero(self) -> dict[str, int]:
        """The endpoint's counters that are not zero."""
        return {k: v for k, v in self.stats().items() if v}

    def fake_clock(self, start: float = 1000.0) -> list[float]:
        """Give the endpoint a clock the test moves (``clock[0] = t``)."""
        now = [start]
        self.tunnel(lambda t: setattr(t, "clock", lambda: now[0]))
        return now

    def encap_flow(self, tunnel_args: str, in_port: int = 1, dst: str = "vm2") -> None:
        self.put(l2_megaflow_text(in_port, dst), f"set(tunnel({tunnel_args})),{self.vx}")


@pytest.fixture
def env() -> Iterator[TunnelEnv]:
    with flow_env(("vm1", "vm2", "vm3", "ext"), config=CONFIG) as e:
        e.__class__ = TunnelEnv
        te: TunnelEnv = e  # type: ignore[assignment]
        te.vx = te.add_port("vx", vport_type=VXLAN, options={"dst_port": 4789})
        yield te


def nothing_else(env: Env, **expected: list[bytes]) -> None:
    got = env.take_all(PORTS)
    assert got == {p: expected.get(p, []) for p in PORTS}


KEY5 = f"tun_id=0x5,dst={PEER},ttl=64,flags(key)"


def ip_checksum_ok(pkt: Ether) -> bool:
    copy = pkt.copy()
    del copy[IP].chksum
    return Ether(bytes(copy))[IP].chksum == pkt[IP].chksum


def udp_checksum_ok(frame: bytes) -> bool:
    udp = bytes(Ether(frame)[UDP])[: Ether(frame)[UDP].len]
    pseudo = frame[26:34] + b"\x00\x11" + struct.pack("!H", len(udp))
    return scapy_checksum(pseudo + udp) in (0, 0xFFFF)


def vxlan_in(
    inner: bytes,
    *,
    vni: int = 5,
    src: str = PEER,
    dst: str = VTEP,
    sport: int = 50000,
    dport: int = 4789,
    chksum: int | None = 0,
    flags: int = 0x08,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 1,
) -> Ether:
    """A VXLAN packet from the peer for the VTEP, as scapy builds it (RFC 7348 flags: scapy's
    default for an Ethernet payload is VXLAN-GPE's 0x0C)."""
    udp = (
        UDP(sport=sport, dport=dport)
        if chksum is None
        else UDP(sport=sport, dport=dport, chksum=chksum)
    )
    return (
        Ether(src=PEER_MAC, dst=MAC["host"])
        / IP(src=src, dst=dst, ttl=ttl, tos=tos, id=ident)
        / udp
        / ScapyVXLAN(flags=flags, vni=vni)
        / Ether(inner)
    )


def decap_flow_text(vx: int, dst: str = "vm2", extra: str = "") -> str:
    """A megaflow on the tunnel (id 5 from the peer to the VTEP), in_port vx, the inner
    Ethernet destination."""
    return (
        f"recirc_id(0),tunnel(tun_id=0x5,src={PEER},dst={VTEP},tos=0/0,ttl=0/0,tp_src=0/0,"
        f"tp_dst=4789{extra},flags(+key)),in_port({vx}),"
        f"eth(src=00:00:00:00:00:00/00:00:00:00:00:00,dst={MAC[dst]}),eth_type(0x0800),{IPV4_ANY}"
    )


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


# -- encapsulation ----------------------------------------------------------------------------


def test_encapsulation_outer_headers(env: TunnelEnv) -> None:
    env.encap_flow(KEY5)
    frames = [udp_frame(sport=1000 + i) for i in range(3)]
    env.inject("vm1", frames)
    outs = env.take("ext")
    assert len(outs) == 3
    for out, inner in zip(outs, frames, strict=True):
        pkt = Ether(out)
        assert (pkt.src, pkt.dst, pkt.type) == (MAC["host"], PEER_MAC, 0x0800)
        ip = pkt[IP]
        assert (ip.src, ip.dst, ip.proto, ip.ttl, ip.tos, ip.flags) == (VTEP, PEER, 17, 64, 0, 0)
        assert ip.len == len(out) - 14 and ip_checksum_ok(pkt)
        udp = pkt[UDP]
        assert udp.dport == 4789 and SPORT_MIN <= udp.sport < SPORT_MAX and udp.chksum == 0
        assert udp.len == len(out) - 34
        vx = pkt[ScapyVXLAN]
        assert (vx.flags, vx.vni, vx.reserved1, vx.reserved2) == (0x08, 5, 0, 0)
        assert bytes(vx.payload) == inner
    assert len({Ether(o)[IP].id for o in outs}) == 3  # an IP id per packet
    nothing_else(env)
    stats = env.vport("vx")["stats"]
    assert (stats.tx_packets, stats.tx_bytes) == (3, sum(map(len, frames)))
    assert env.nonzero() == {"encap_packets": 3}


def test_the_key_sets_tos_ttl_df_csum_source_and_port(env: TunnelEnv) -> None:
    env.encap_flow(
        f"tun_id=0xabcdef,src=192.0.2.9,dst={PEER},tos=0x28,ttl=9,tp_dst=8472,flags(df|csum|key)"
    )
    inner = udp_frame(payload=b"odd length!")
    env.inject("vm1", [inner])
    (out,) = env.take("ext")
    pkt = Ether(out)
    assert (pkt[IP].src, pkt[IP].tos, pkt[IP].ttl, pkt[IP].flags) == ("192.0.2.9", 0x28, 9, "DF")
    assert pkt[UDP].dport == 8472 and pkt[UDP].chksum != 0 and udp_checksum_ok(out)
    assert pkt[ScapyVXLAN].vni == 0xABCDEF
    assert bytes(pkt[ScapyVXLAN].payload) == inner


def test_the_udp_source_port_follows_the_inner_flow(env: TunnelEnv) -> None:
    env.encap_flow(KEY5)
    frames = [udp_frame(sport=2000 + i) for i in range(200)]
    env.inject("vm1", frames)
    env.inject("vm1", frames[:10])  # the same flows again
    ports = [Ether(o)[UDP].sport for o in env.take("ext")]
    assert all(SPORT_MIN <= p < SPORT_MAX for p in ports)
    assert len(set(ports[:200])) >= 190  # spread: ECMP sees different flows (not a constant)
    assert ports[200:] == ports[:10]  # the same flow, the same port
    assert max(ports) - min(ports) > 20000


def test_copies_and_encapsulation_reach_every_port(env: TunnelEnv) -> None:
    # outputs around the tunnel output: the action program runs per packet (copies)
    env.put(l2_megaflow_text(1, "vm2"), f"2,set(tunnel({KEY5})),{env.vx},3")
    frame = udp_frame()
    env.inject("vm1", [frame, frame])
    got = env.take_all(PORTS)
    assert got["vm2"] == [frame] * 2 and got["vm3"] == [frame] * 2
    assert len(got["ext"]) == 2
    assert all(bytes(Ether(o)[ScapyVXLAN].payload) == frame for o in got["ext"])
    assert env.nonzero() == {"encap_packets": 2}
    counters = env.counters()
    assert counters["created"] == counters["released"] == 6


def test_output_to_vxlan_without_a_tunnel_key_is_dropped(env: TunnelEnv) -> None:
    env.put(l2_megaflow_text(1, "vm2"), f"{env.vx}")
    env.put(l2_megaflow_text(1, "vm3"), f"set(ipv4(ttl=9)),{env.vx}")
    env.inject("vm1", [udp_frame(), udp_frame(dst="vm3")])
    nothing_else(env)
    assert env.vport("vx")["stats"].tx_dropped == 2
    assert env.nonzero() == {"no_tunnel_key": 2}


def test_neighbour_miss_sends_arp_drops_and_learns_the_reply(env: TunnelEnv) -> None:
    clock = env.fake_clock()
    env.encap_flow("tun_id=0x7,dst=198.51.100.7,ttl=64,flags(key)")  # off-link: the gateway
    frame = udp_frame()
    env.inject("vm1", [frame])
    (request,) = env.take("ext")
    arp = Ether(request)
    assert (arp.dst, arp.src, arp.type) == ("ff:ff:ff:ff:ff:ff", MAC["host"], 0x0806)
    assert (arp[ARP].op, arp[ARP].psrc, arp[ARP].hwsrc, arp[ARP].pdst) == (
        1,
        VTEP,
        MAC["host"],
        GATEWAY,
    )
    env.inject("vm1", [frame] * 3)  # within a second: dropped, no new request
    nothing_else(env)
    assert env.nonzero() == {"neighbour_miss": 4, "arp_requests": 1}
    assert env.vport("vx")["stats"].tx_dropped == 4
    clock[0] += 1.5
    env.inject("vm1", [frame])
    assert len(env.take("ext")) == 1  # asked again
    # an unsolicited reply for another address is not learned; the gateway's reply is
    reply = Ether(src=GATEWAY_MAC, dst=MAC["host"]) / ARP(
        op=2, hwsrc=GATEWAY_MAC, psrc=GATEWAY, hwdst=MAC["host"], pdst=VTEP
    )
    stranger = Ether(src="02:00:00:00:00:99", dst=MAC["host"]) / ARP(
        op=2, hwsrc="02:00:00:00:00:99", psrc="192.0.2.99", hwdst=MAC["host"], pdst=VTEP
    )
    env.inject("ext", [bytes(stranger), bytes(reply)])
    assert len(env.upcalls(2)) == 2  # the replies went on their way (ext's misses)
    stats = env.nonzero()
    assert stats["arp_learned"] == 1 and stats["arp_ignored"] == 1
    env.inject("vm1", [frame])
    (out,) = env.take("ext")
    pkt = Ether(out)
    assert pkt.dst == GATEWAY_MAC and pkt[IP].dst == "198.51.100.7"
    assert bytes(pkt[ScapyVXLAN].payload) == frame


def test_learned_neighbours_are_refreshed_and_expire(env: TunnelEnv) -> None:
    clock = env.fake_clock()
    env.encap_flow("tun_id=0x7,dst=198.51.100.7,ttl=64,flags(key)")
    env.inject("vm1", [udp_frame()])
    env.take("ext")
    reply = Ether(src=GATEWAY_MAC, dst=MAC["host"]) / ARP(
        op=2, hwsrc=GATEWAY_MAC, psrc=GATEWAY, hwdst=MAC["host"], pdst=VTEP
    )
    env.inject("ext", [bytes(reply)])
    env.upcalls(1)
    env.inject("vm1", [udp_frame()])
    assert Ether(env.take("ext")[0]).dst == GATEWAY_MAC
    # near the end of its lifetime the VTEP asks again (the packets still go out)
    clock[0] += 300 - 20
    env.inject("vm1", [udp_frame()])
    got = [Ether(f) for f in env.take("ext")]
    assert sorted(p.type for p in got) == [0x0800, 0x0806]
    # nobody answers: the entry expires, packets are dropped while asking again
    clock[0] += 30
    env.inject("vm1", [udp_frame()])
    (request,) = env.take("ext")
    assert Ether(request)[ARP].pdst == GATEWAY
    stats = env.nonzero()
    assert stats["neighbour_expired"] == 1 and stats["neighbour_miss"] == 2


def test_no_route_without_a_gateway(env: TunnelEnv) -> None:
    env.tunnel(lambda t: t.set_gateway(0))
    env.encap_flow("tun_id=0x7,dst=198.51.100.7,ttl=64,flags(key)")
    env.inject("vm1", [udp_frame()])
    nothing_else(env)
    assert env.nonzero() == {"no_route": 1}


def test_no_vtep_address_no_tunnel() -> None:
    config = CONFIG.replace(f'ipv4 = "{VTEP}/24"', "")
    with flow_env(("vm1", "vm2", "ext"), config=config) as env:
        vx = env.add_port("vx", vport_type=VXLAN, options={"dst_port": 4789})
        env.put(l2_megaflow_text(1, "vm2"), f"set(tunnel({KEY5})),{vx}")
        env.inject("vm1", [udp_frame()])
        assert env.h.call(lambda: env.pipeline.tunnel.counters.no_vtep) == 1
        # and nothing is decapsulated: a VXLAN packet is an ordinary frame of ext
        env.inject("ext", [bytes(vxlan_in(udp_frame()))])
        (miss,) = env.upcalls(1)
        assert "tunnel" not in miss.attrs["key"] and miss.attrs["key"]["in_port"] == 3


def test_uplink_down_drops(env: TunnelEnv) -> None:
    env.encap_flow(KEY5)
    env.h.call(env.switch.set_link, "ext", False)
    env.inject("vm1", [udp_frame()] * 2)
    env.h.call(env.switch.set_link, "ext", True)
    nothing_else(env)
    assert env.nonzero() == {"no_uplink": 2}
    assert env.vport("vx")["stats"].tx_dropped == 2


def big_frame(size: int = 1480) -> bytes:
    return udp_frame(payload=b"b" * (size - 42))


def test_over_the_mtu_with_df_is_dropped(env: TunnelEnv) -> None:
    env.encap_flow(f"tun_id=0x5,dst={PEER},ttl=64,flags(df|key)")
    env.inject("vm1", [big_frame(), big_frame(1464)])  # 1530 and 1500 bytes of outer IP
    (out,) = env.take("ext")
    assert len(out) == 1514 and Ether(out)[IP].flags == "DF"
    assert env.nonzero() == {"too_big": 1, "encap_packets": 1}
    assert env.vport("vx")["stats"].tx_dropped == 1


@pytest.mark.parametrize("csum", [False, True])
def test_over_the_mtu_without_df_is_fragmented(env: TunnelEnv, csum: bool) -> None:
    from scapy.layers.inet import defragment

    env.encap_flow(f"tun_id=0x5,dst={PEER},ttl=64,flags({'csum|' if csum else ''}key)")
    frame = big_frame(3000)
    env.inject("vm1", [frame, udp_frame()])
    outs = env.take("ext")
    assert len(outs) == 4  # three fragments and a small packet
    pieces = [Ether(o) for o in outs if Ether(o)[IP].flags.MF or Ether(o)[IP].frag]
    assert len(pieces) == 3
    for p in pieces:
        assert p[IP].len <= 1500 and ip_checksum_ok(p) and p.dst == PEER_MAC
    (joined,) = defragment(pieces)
    datagram = bytes(joined[IP].payload)  # UDP, VXLAN, the inner frame
    assert datagram[16:] == frame
    assert datagram[8:12] == b"\x08\x00\x00\x00"
    assert env.nonzero() == {"encap_packets": 2, "encap_fragmented": 1, "encap_fragments": 3}
    assert env.vport("vx")["stats"].tx_packets == 2


# -- decapsulation ----------------------------------------------------------------------------


def test_decapsulation_into_the_flow_table(env: TunnelEnv) -> None:
    env.put(decap_flow_text(env.vx), "2")
    frames = [udp_frame(sport=7000 + i) for i in range(4)]
    env.inject("ext", [bytes(vxlan_in(f, sport=40000 + i)) for i, f in enumerate(frames)])
    nothing_else(env, vm2=frames)
    stats = env.vport("vx")["stats"]
    assert (stats.rx_packets, stats.rx_bytes) == (4, sum(map(len, frames)))
    assert env.vport("ext")["stats"].rx_packets == 0  # the outer packets were the VTEP's
    assert env.nonzero() == {"decap_packets": 4}


def test_a_miss_carries_the_tunnel_key(env: TunnelEnv) -> None:
    inner = udp_frame()
    env.inject(
        "ext",
        [
            bytes(vxlan_in(inner, tos=0x10, ttl=33, sport=45678)),
            bytes(vxlan_in(inner, vni=9, chksum=None)),  # with a UDP checksum: csum flag
        ],
    )
    first, second = env.upcalls(2)
    assert first.cmd == PacketCmd.MISS and first.attrs["packet"] == inner
    key = first.attrs["key"]
    assert key["in_port"] == env.vx
    assert key["tunnel"] == {
        "id": 5,
        "ipv4_src": ip4(PEER),
        "ipv4_dst": ip4(VTEP),
        "tos": 0x10,
        "ttl": 33,
        "tp_src": 45678,
        "tp_dst": 4789,
    }
    assert list(key)[:5] == ["recirc_id", "dp_hash", "priority", "tunnel", "in_port"]
    tunnel2 = second.attrs["key"]["tunnel"]
    assert tunnel2["id"] == 9 and tunnel2["csum"] is True and second.attrs["packet"] == inner
    # the miss installs back as a flow (exact: no mask), and the next packet matches it
    env.flow(FlowCmd.NEW, {"key": key, "actions": [("output", 2)]})
    env.inject("ext", [bytes(vxlan_in(inner, tos=0x10, ttl=33, sport=45678))])
    nothing_else(env, vm2=[inner])


def test_actions_see_the_tunnel_metadata(env: TunnelEnv) -> None:
    # recirculation keeps the tunnel key; a userspace action reports it
    env.put(decap_flow_text(env.vx), "recirc(7)")
    env.put(
        decap_flow_text(env.vx).replace("recirc_id(0)", "recirc_id(7)"),
        f"set(ipv4(ttl=9)),userspace(pid={env.handler.pid}),2",
    )
    inner = udp_frame()
    env.inject("ext", [bytes(vxlan_in(inner))])
    (action,) = env.upcalls(1)
    assert action.cmd == PacketCmd.ACTION
    assert action.attrs["key"]["tunnel"]["id"] == 5 and action.attrs["key"]["recirc_id"] == 7
    (out,) = env.take("vm2")
    assert Ether(out)[IP].ttl == 9


@pytest.mark.parametrize(
    ("mangle", "counter"),
    [
        (lambda p: bytes(vxlan_in(udp_frame(), flags=0x00)), "bad_vxlan"),  # I flag clear
        (lambda p: bytes(vxlan_in(udp_frame(), flags=0x0C)), "bad_vxlan"),  # scapy's GPE flags
        (lambda p: p[:43] + b"\x01" + p[44:], "bad_vxlan"),  # a reserved bit
        (lambda p: p[:49] + b"\x01" + p[50:], "bad_vxlan"),  # the reserved byte after the VNI
        (lambda p: p[:45], "truncated"),
        (lambda p: p[:60], "truncated"),
        (lambda p: p[:24] + bytes([p[24] ^ 0xFF]) + p[25:], "bad_ip_csum"),
        (lambda p: bytes(vxlan_in(udp_frame(), chksum=0x1234)), "bad_udp_csum"),
        (lambda p: p[:38] + b"\x00\x09" + p[40:], "bad_udp"),
    ],
)
def test_bad_vxlan_packets_are_dropped_and_counted(
    env: TunnelEnv, mangle: Callable[[bytes], bytes], counter: str
) -> None:
    env.put(decap_flow_text(env.vx), "2")
    good = bytes(vxlan_in(udp_frame()))
    env.inject("ext", [mangle(good), good])
    nothing_else(env, vm2=[udp_frame()])
    assert env.nonzero() == {counter: 1, "decap_packets": 1}
    env.no_upcalls()


def test_what_is_not_for_the_vtep_goes_its_ordinary_way(env: TunnelEnv) -> None:
    inner = udp_frame()
    others = [
        bytes(vxlan_in(inner, dst="192.0.2.77")),  # another address: not ours
        bytes(vxlan_in(inner, dport=9999)),  # UDP to the VTEP, not a tunnel port
        bytes(Ether(src=PEER_MAC, dst=MAC["host"]) / IP(src=PEER, dst=VTEP) / Raw(b"x" * 30)),
        b"\x01" * 13,  # a runt
    ]
    env.inject("ext", others)
    misses = env.upcalls(3)
    assert [m.attrs["packet"] for m in misses] == others[:3]
    assert all(m.attrs["key"]["in_port"] == env.port_no["ext"] for m in misses)
    assert env.nonzero() == {}
    assert env.counters()["short_frames"] == 1


# -- reassembly before decap ------------------------------------------------------------------


def fragments(pkt: Ether, size: int = 400) -> list[bytes]:
    return [
        bytes(Ether(src=PEER_MAC, dst=MAC["host"]) / f) for f in fragment(pkt[IP], fragsize=size)
    ]


@pytest.mark.parametrize("order", ["in order", "reversed", "shuffled", "duplicated", "pairs"])
def test_fragmented_vxlan_is_reassembled_then_decapsulated(env: TunnelEnv, order: str) -> None:
    env.put(decap_flow_text(env.vx), "2")
    inner = big_frame(1400)
    pieces = fragments(vxlan_in(inner, ident=77), size=400 if order != "pairs" else 720)
    if order == "reversed":
        pieces.reverse()
    elif order == "shuffled":
        random.Random(5).shuffle(pieces)
    elif order == "duplicated":
        pieces = [pieces[0], pieces[1], pieces[0], pieces[2], pieces[1], *pieces[3:]]
    env.inject("ext", pieces)
    nothing_else(env, vm2=[inner])
    stats = env.nonzero()
    assert stats["reasm_reassembled"] == 1 and stats["decap_packets"] == 1
    assert stats.get("reasm_entries", 0) == 0 and stats.get("reasm_memory", 0) == 0
    if order == "duplicated":
        assert stats["reasm_duplicates"] == 2


def test_fragments_in_several_batches_and_interleaved(env: TunnelEnv) -> None:
    env.put(decap_flow_text(env.vx), "2")
    a, b = big_frame(1400), udp_frame(sport=9, payload=b"c" * 1300)
    pa, pb = fragments(vxlan_in(a, ident=1)), fragments(vxlan_in(b, ident=2))
    for x, y in zip(pa, pb, strict=False):
        env.inject("ext", [x])
        env.inject("ext", [y])
    env.inject("ext", pa[len(pb) :] + pb[len(pa) :])
    assert sorted(env.take("vm2")) == sorted([a, b])
    assert env.nonzero()["reasm_reassembled"] == 2


def test_overlapping_fragments_discard_the_datagram(env: TunnelEnv) -> None:
    env.put(decap_flow_text(env.vx), "2")
    pkt = vxlan_in(big_frame(1400))
    pieces = fragments(pkt, size=400)
    overlap = fragments(pkt, size=304)[1]  # 304..608: across the first two fragments
    env.inject("ext", [pieces[0], overlap, *pieces[1:]])
    nothing_else(env)
    stats = env.nonzero()
    assert stats["reasm_overlapped"] == 1 and "reasm_reassembled" not in stats


def test_missing_fragment_expires(env: TunnelEnv) -> None:
    clock = env.fake_clock()
    env.put(decap_flow_text(env.vx), "2")
    pieces = fragments(vxlan_in(big_frame(1400)))
    env.inject("ext", pieces[:1] + pieces[2:])
    nothing_else(env)
    assert env.nonzero()["reasm_entries"] == 1
    clock[0] += 29
    env.inject("ext", [b"\x01" * 60])  # traffic on ext runs the housekeeping
    assert env.nonzero()["reasm_entries"] == 1
    env.upcalls(1)
    clock[0] += 2
    env.inject("ext", [b"\x01" * 60])
    env.upcalls(1)
    stats = env.nonzero()
    assert stats["reasm_expired"] == 1 and "reasm_entries" not in stats
    assert "reasm_memory" not in stats
    env.inject("ext", pieces[1:2])  # too late: it starts a datagram that never completes
    nothing_else(env)


def test_a_tiny_first_fragment_is_refused(env: TunnelEnv) -> None:
    env.put(decap_flow_text(env.vx), "2")
    pieces = fragments(vxlan_in(udp_frame()), size=8)
    env.inject("ext", pieces)
    nothing_else(env)
    assert env.nonzero()["reasm_tiny"] >= 1


def test_a_reassembled_datagram_that_is_not_vxlan_goes_on_whole(env: TunnelEnv) -> None:
    pkt = (
        Ether(src=PEER_MAC, dst=MAC["host"])
        / IP(src=PEER, dst=VTEP, id=3)
        / UDP(sport=53, dport=5353)
        / Raw(b"d" * 2000)
    )
    env.put(
        f"recirc_id(0),in_port({env.port_no['ext']}),eth(src=00:00:00:00:00:00/00:00:00:00:00:00,"
        f"dst={MAC['host']}),eth_type(0x0800),{IPV4_ANY}",
        "3",
    )
    env.inject("ext", fragments(pkt, size=800))
    (whole,) = env.take("vm3")
    assert (
        Ether(whole)[IP].len == len(bytes(pkt)) - 14
        and bytes(Ether(whole)[UDP].payload) == b"d" * 2000
    )
    assert ip_checksum_ok(Ether(whole))


def test_a_flood_of_incomplete_datagrams_through_the_packet_path() -> None:
    config = CONFIG.replace(
        f'gateway = "{GATEWAY}"', f'gateway = "{GATEWAY}"\nreassembly_memory = 65536'
    )
    with flow_env(("vm1", "vm2", "ext"), config=config) as env:
        vx = env.add_port("vx", vport_type=VXLAN, options={"dst_port": 4789})
        env.put(decap_flow_text(vx), "2")
        inner = big_frame(1200)
        first = fragments(vxlan_in(inner, ident=1), size=600)[0]
        delivered = 0
        peak = 0
        for batch in range(40):
            flood = [
                first[:18] + (1000 + batch * 100 + i).to_bytes(2, "big") + first[20:]
                for i in range(100)
            ]  # first fragments, never completed (the header checksum is not checked)
            good = fragments(vxlan_in(inner, ident=batch + 2), size=600)
            env.inject("ext", flood[:50] + good[:1] + flood[50:] + good[1:])
            delivered += len(env.take("vm2"))
            peak = max(peak, env.h.call(lambda: env.pipeline.tunnel.reassembly.memory))
        assert delivered == 40
        assert peak <= 65536
        evicted = env.h.call(lambda: env.pipeline.tunnel.reassembly.stats.evicted)
        assert evicted > 3000


def test_execute_can_encapsulate(env: TunnelEnv) -> None:
    frame = udp_frame()
    env.execute(frame, "in_port(1)", f"set(tunnel({KEY5})),{env.vx}")
    (out,) = env.take("ext")
    assert bytes(Ether(out)[ScapyVXLAN].payload) == frame
    nothing_else(env)
    counters = env.counters()
    assert counters["created"] == counters["released"] == 1


def test_decapsulation_needs_no_datapath_port_for_the_uplink() -> None:
    with flow_env(("vm1", "vm2"), config=CONFIG) as env:
        vx = env.add_port("vx", vport_type=VXLAN, options={"dst_port": 4789})
        env.put(decap_flow_text(vx), "2")
        inner = udp_frame()
        env.inject("ext", [bytes(vxlan_in(inner)), bytes(vxlan_in(inner, dst="192.0.2.9"))])
        assert env.take("vm2") == [inner]
        assert env.counters()["unbound_rx"] == 1  # the other packet: ext is in no datapath
