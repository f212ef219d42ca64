"""Two datapaths joined by their external ports, in one process (each service in its thread): a
VM on each side, flows that set(tunnel) and output to VXLAN on one side and match tunnel(...) on
the other.  Side A resolves side B's VTEP by ARP (B's flows carry the request to B's host port,
where the test plays the host stack and answers); side B has A as a static neighbour, added
through the ovsdp_tunnel family.  Frames cross in both directions, a large one in fragments
that B reassembles, and both sides end with nothing outstanding.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Iterator

import pytest
from datapath_support import INTERNAL, VXLAN
from flow_support import IPV4_ANY, Env, flow_env, l2_megaflow_text, udp_frame

from ovsdp.vswitch.family import TUNNEL_FAMILY, TunnelCmd
from userspace import vswitchctl

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402

A_VTEP, B_VTEP = "192.0.2.1", "192.0.2.2"
A = {"vm": "00:15:5d:0a:00:01", "ext": "00:15:5d:0a:00:10", "host": "00:15:5d:0a:00:20"}
B = {"vm": "00:15:5d:0b:00:01", "ext": "00:15:5d:0b:00:10", "host": "00:15:5d:0b:00:20"}


def config(macs: dict[str, str], vtep: str) -> str:
    return f"""
[[port]]
name = "vm1"
type = "vm"
mac = "{macs["vm"]}"
[[port]]
name = "ext"
type = "external"
mac = "{macs["ext"]}"
[[port]]
name = "host"
type = "internal"
mac = "{macs["host"]}"
ipv4 = "{vtep}/24"
"""


class Wire:
    """The cable between the two external ports: what one side's ext transmitted is received
    by the other's (pumped until both are quiet, each side in its own service thread)."""

    def __init__(self, a: Env, b: Env) -> None:
        self.a = a
        self.b = b
        self.carried = 0

    def pump(self) -> None:
        for _ in range(10):
            moved = 0
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                frames = src.take("ext")
                if frames:
                    dst.inject("ext", frames)
                    moved += len(frames)
            self.carried += moved
            if not moved:
                return
        raise AssertionError("the wire never went quiet")


def frame(src: dict[str, str], dst: dict[str, str], size: int = 18, sport: int = 1000) -> bytes:
    return udp_frame(
        sport, 2000, src=src["vm"], dst=dst["vm"], ip_src="10.1.0.1", ip_dst="10.1.0.2",
        payload=b"r" * size,
    )  # fmt: skip


def tunnel_match(vx: int, src: str, dst: str, mac: str) -> str:
    return (
        f"recirc_id(0),tunnel(tun_id=0x64,src={src},dst={dst},tos=0/0,ttl=0/0,tp_src=0/0,"
        f"tp_dst=4789,flags(+key)),in_port({vx}),"
        f"eth(src=00:00:00:00:00:00/00:00:00:00:00:00,dst={mac}),eth_type(0x0800),{IPV4_ANY}"
    )


def arp_flow(in_port: int) -> str:
    return (
        f"recirc_id(0),in_port({in_port}),eth(src=00:00:00:00:00:00/00:00:00:00:00:00,"
        "dst=00:00:00:00:00:00/00:00:00:00:00:00),eth_type(0x0806),"
        "arp(sip=0.0.0.0/0.0.0.0,tip=0.0.0.0/0.0.0.0,op=0/0,"
        "sha=00:00:00:00:00:00/00:00:00:00:00:00,tha=00:00:00:00:00:00/00:00:00:00:00:00)"
    )


@pytest.fixture
def sides() -> Iterator[tuple[Env, Env, Wire, int, int]]:
    with (
        flow_env(("vm1", "ext"), config=config(A, A_VTEP)) as a,
        flow_env(("vm1", "ext"), config=config(B, B_VTEP)) as b,
    ):
        vx_a = a.add_port("vx", vport_type=VXLAN, options={"dst_port": 4789})
        vx_b = b.add_port("vx", vport_type=VXLAN, options={"dst_port": 4789})
        host_b = b.add_port("host", vport_type=INTERNAL)
        ext_a, ext_b = a.port_no["ext"], b.port_no["ext"]
        # A: vm1 -> tunnel to B; tunnel from B -> vm1; ARP from the wire: dropped (learned)
        a.put(
            l2_megaflow_text(1, B["vm"]),
            f"set(tunnel(tun_id=0x64,dst={B_VTEP},ttl=64,flags(key))),{vx_a}",
        )
        a.put(tunnel_match(vx_a, B_VTEP, A_VTEP, A["vm"]), "1")
        a.put(arp_flow(ext_a), "")
        # B: the same, and ARP between the wire and its host stack
        b.put(
            l2_megaflow_text(1, A["vm"]),
            f"set(tunnel(tun_id=0x64,dst={A_VTEP},ttl=64,flags(key))),{vx_b}",
        )
        b.put(tunnel_match(vx_b, A_VTEP, B_VTEP, B["vm"]), "1")
        b.put(arp_flow(ext_b), f"{host_b}")
        b.put(arp_flow(host_b), f"{ext_b}")
        # B knows A statically, through the management family
        sock = b.c
        sock.family(TUNNEL_FAMILY, vswitchctl.TUNNEL_CODEC)
        mac_a = bytes.fromhex(A["host"].replace(":", ""))
        ip_a = int(ipaddress.IPv4Address(A_VTEP))
        sock.transact(TUNNEL_FAMILY, TunnelCmd.ADD_NEIGHBOUR, {"ipv4_address": ip_a, "mac": mac_a})
        yield a, b, Wire(a, b), vx_a, vx_b


def host_stack_answers_arp(side: Env, mac: str, ip: str) -> int:
    """Play side's host stack: answer the ARP requests for ``ip`` its host port received."""
    answered = 0
    for raw in side.take("host"):
        pkt = Ether(raw)
        if ARP in pkt and pkt[ARP].op == 1 and pkt[ARP].pdst == ip:
            reply = Ether(src=mac, dst=pkt.src) / ARP(
                op=2, hwsrc=mac, psrc=ip, hwdst=pkt[ARP].hwsrc, pdst=pkt[ARP].psrc
            )
            side.inject("host", [bytes(reply)])
            answered += 1
    return answered


def stats(side: Env) -> dict[str, int]:
    result: dict[str, int] = side.h.call(lambda: side.pipeline.tunnel.stats())
    return {k: v for k, v in result.items() if v}


def test_round_trip_through_two_datapaths(sides: tuple[Env, Env, Wire, int, int]) -> None:
    a, b, wire, _vx_a, vx_b = sides
    # A does not know B's MAC yet: the first packet is dropped while A asks
    a.inject("vm1", [frame(A, B)])
    wire.pump()
    assert stats(a) == {"neighbour_miss": 1, "arp_requests": 1}
    assert host_stack_answers_arp(b, B["host"], B_VTEP) == 1
    wire.pump()
    assert stats(a)["arp_learned"] == 1
    # now both ways
    there = [frame(A, B, sport=s) for s in range(3000, 3010)]
    a.inject("vm1", there)
    wire.pump()
    assert b.take("vm1") == there
    back = [frame(B, A, sport=s) for s in range(4000, 4010)]
    b.inject("vm1", back)
    wire.pump()
    assert a.take("vm1") == back
    assert stats(a)["encap_packets"] == 10 and stats(a)["decap_packets"] == 10
    assert stats(b)["encap_packets"] == 10 and stats(b)["decap_packets"] == 10
    assert a.vport("vx")["stats"].tx_packets == 10 and b.vport("vx")["stats"].rx_packets == 10
    # a frame too large for the wire's MTU crosses in fragments, reassembled by B
    big = frame(A, B, size=3000)
    a.inject("vm1", [big])
    carried = wire.carried
    wire.pump()
    assert wire.carried - carried == 3  # three outer fragments
    assert b.take("vm1") == [big]
    assert stats(b)["reasm_reassembled"] == 1
    # the same the other way with DF asked: dropped by B, counted
    b.put(
        l2_megaflow_text(1, A["vm"]),
        f"set(tunnel(tun_id=0x64,dst={A_VTEP},ttl=64,flags(df|key))),{vx_b}",
    )
    b.inject("vm1", [frame(B, A, size=3000)])
    wire.pump()
    assert a.take("vm1") == [] and stats(b)["too_big"] == 1
    assert a.take("host") == [] and b.take("host") == []


def test_the_outer_packets_on_the_wire(sides: tuple[Env, Env, Wire, int, int]) -> None:
    a, b, _wire, _vx_a, _vx_b = sides
    b.inject("vm1", [frame(B, A)])  # B knows A: straight out
    (outer,) = b.take("ext")
    pkt = Ether(outer)
    assert (pkt.src, pkt.dst) == (B["host"], A["host"])
    assert (pkt[IP].src, pkt[IP].dst) == (B_VTEP, A_VTEP)
    a.inject("ext", [outer])
    assert a.take("vm1") == [frame(B, A)]
