"""Random frames through the real packet path (docs/datapath.md section 1), with hypothesis.

A datapath with a few megaflows gets random bytes and scapy-built frames of every protocol with
random fields, truncated at random lengths, from two ports.  An independent oracle (a few lines
of the kernel's parsing: Ethernet, 802.3/SNAP, VLAN tags, the IPv4 header and UDP ports) says
what each frame must do; the test checks that nothing raises, that every frame is delivered,
upcalled or dropped as the flows say, that a miss's KEY is the frame's key (installed back as a
flow, the frame hits it), that the statistics add up, and that nothing stays outstanding.
"""

from __future__ import annotations

import struct
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

from flow_support import (
    IPV4_ANY,
    MAC,
    Env,
    actions,
    flow_env,
    key_mask,
    l2_megaflow_text,
)
from hypothesis import HealthCheck, given, settings, strategies as st

from ovsdp.flowtable.flow_key import attrs_to_key, extract_key, port_prefix
from ovsdp.netlink.constants import FlowCmd, PacketCmd

warnings.filterwarnings("ignore", module="scapy")
from scapy.contrib.mpls import MPLS  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, LLC, SNAP, Dot1AD, Dot1Q, Dot3, Ether  # noqa: E402
from scapy.layers.sctp import SCTP  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402

D_IP = MAC["vm2"]  # IPv4 -> 2, IPv6 -> 3, 802.2 -> userspace
D_ARP = MAC["vm3"]  # ARP -> drop
D_DNS = "02:00:00:00:00:53"  # IPv4 UDP to port 53, not a fragment -> 3 and 2
DSTS = [D_IP, D_ARP, D_DNS, "ff:ff:ff:ff:ff:ff", "02:11:22:33:44:55"]
ZERO_MAC = "00:00:00:00:00:00/00:00:00:00:00:00"


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def install(env: Env) -> dict[str, bytes]:
    """The megaflows; their actions by name."""
    flows = {
        "ip": (l2_megaflow_text(dst=D_IP), "2"),
        "ip6": (
            l2_megaflow_text(dst=D_IP, eth_type=0x86DD)
            + ",ipv6(src=::/::,dst=::/::,label=0/0,proto=0/0,tclass=0/0,hlimit=0/0)",
            "3",
        ),
        "arp": (
            l2_megaflow_text(dst=D_ARP, eth_type=0x0806)
            + f",arp(sip=0.0.0.0/0.0.0.0,tip=0.0.0.0/0.0.0.0,op=0/0,sha={ZERO_MAC},tha={ZERO_MAC})",
            "",
        ),
        "dns": (
            f"recirc_id(0),in_port(1),eth(src={ZERO_MAC},dst={D_DNS}),eth_type(0x0800),"
            "ipv4(src=0.0.0.0/0.0.0.0,dst=0.0.0.0/0.0.0.0,proto=17,tos=0/0,ttl=0/0,frag=no),"
            "udp(src=0/0,dst=53)",
            "3,2",
        ),
    }
    ufids = {}
    for name, (text, acts) in flows.items():
        ufids[name] = name.encode().ljust(16, b"\0")
        env.put(text, acts, ufid=ufids[name])
    # 802.2 frames (no EtherType): the key has no ETHERTYPE, the mask matches it exactly
    k, m = key_mask(f"recirc_id(0),in_port(1),eth(src={ZERO_MAC},dst={D_IP})")
    m["ethertype"] = 0xFFFF
    ufid = b"llc".ljust(16, b"\0")
    pid = env.handler.pid
    userspace = actions(f"userspace(pid={pid},userdata(0102030405060708))")
    env.flow(FlowCmd.NEW, {"key": k, "mask": m, "actions": userspace, "ufid": ufid})
    ufids["llc"] = ufid
    return ufids


# -- the oracle ------------------------------------------------------------------------------------


def eth_type_of(frame: bytes) -> tuple[int, int, bool]:
    """(EtherType as the kernel's key has it, offset of the L3 header, tagged)."""
    (etype,) = struct.unpack_from("!H", frame, 12)
    if etype in (0x8100, 0x88A8):
        return etype, 14, True
    if etype >= 0x0600:
        return etype, 14, False
    n = len(frame)
    if n - 14 < 8:
        return 0x0004, 14, False
    if frame[14] != 0xAA or frame[15] != 0xAA or frame[17:20] != bytes(3):
        return 0x0004, 14, False
    (inner,) = struct.unpack_from("!H", frame, 20)
    return (inner if inner >= 0x0600 else 0x0004), 22, False


def udp_dst_53(frame: bytes, off: int) -> bool:
    """An IPv4 header the kernel accepts, UDP, not a fragment, a whole UDP header, port 53."""
    n = len(frame)
    if n < off + 20:
        return False
    ihl = (frame[off] & 0x0F) * 4
    if ihl < 20 or n < off + ihl:
        return False
    proto = frame[off + 9]
    (frag,) = struct.unpack_from("!H", frame, off + 6)
    if proto != 17 or frag & 0x3FFF:
        return False
    l4 = off + ihl
    return n >= l4 + 8 and struct.unpack_from("!H", frame, l4 + 2)[0] == 53


def oracle(in_port: int, frame: bytes) -> str | None:
    """The flow a frame hits (None: a miss)."""
    if in_port != 1:
        return None
    etype, off, tagged = eth_type_of(frame)
    if tagged:
        return None  # every flow wants no VLAN (the TCI is always matched)
    dst = frame[:6]
    if dst == mac_bytes(D_IP):
        return {0x0800: "ip", 0x86DD: "ip6", 0x0004: "llc"}.get(etype)
    if dst == mac_bytes(D_ARP):
        return "arp" if etype == 0x0806 else None
    if dst == mac_bytes(D_DNS):
        return "dns" if etype == 0x0800 and udp_dst_53(frame, off) else None
    return None


OUTPUTS = {"ip": ["vm2"], "ip6": ["vm3"], "arp": [], "dns": ["vm3", "vm2"], "llc": []}


# -- frames ------------------------------------------------------------------------------------

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
ip4 = st.builds(lambda a: f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}", st.integers(0, 1 << 24))
ip6 = st.builds(lambda a: f"2001:db8::{a:x}", st.integers(0, 0xFFFF))
macs = st.sampled_from([D_IP, D_IP, D_ARP, D_DNS, D_DNS, *DSTS[3:]])


@st.composite
def l4_v4(draw: Callable[..., Any]) -> Packet:
    kind = draw(st.sampled_from(["tcp", "udp", "dns", "dns", "icmp", "sctp", "raw"]))
    if kind == "tcp":
        return TCP(sport=draw(u16), dport=draw(u16), flags=draw(st.integers(0, 0xFFF)))
    if kind in ("udp", "dns"):
        return UDP(sport=draw(u16), dport=53 if kind == "dns" else draw(u16))
    if kind == "icmp":
        return ICMP(type=draw(u8), code=draw(u8))
    if kind == "sctp":
        return SCTP(sport=draw(u16), dport=draw(u16))
    return Raw(draw(st.binary(max_size=16)))


@st.composite
def ipv4(draw: Callable[..., Any]) -> Packet:
    frag = draw(st.sampled_from([0, 0, 0, 1, 100]))
    flags = draw(st.sampled_from(["", "DF", "MF"]))
    options = [IPOption_RR()] if draw(st.booleans()) else []
    ip = IP(
        src=draw(ip4), dst=draw(ip4), tos=draw(u8), ttl=draw(u8), frag=frag, flags=flags,
        options=options,
    )  # fmt: skip
    return ip / draw(l4_v4()) / Raw(draw(st.binary(max_size=8)))


@st.composite
def ipv6(draw: Callable[..., Any]) -> Packet:
    kind = draw(st.sampled_from(["tcp", "udp", "echo", "ns", "na", "frag", "hbh"]))
    hdr = IPv6(src=draw(ip6), dst=draw(ip6), tc=draw(u8), fl=draw(st.integers(0, 0xFFFFF)))
    if kind == "tcp":
        return hdr / TCP(sport=draw(u16), dport=draw(u16), flags=draw(st.integers(0, 0xFF)))
    if kind == "udp":
        return hdr / UDP(sport=draw(u16), dport=draw(u16))
    if kind == "echo":
        return hdr / ICMPv6EchoRequest()
    if kind == "ns":
        return hdr / ICMPv6ND_NS(tgt=draw(ip6)) / ICMPv6NDOptSrcLLAddr(lladdr=MAC["vm1"])
    if kind == "na":
        return hdr / ICMPv6ND_NA(tgt=draw(ip6)) / ICMPv6NDOptDstLLAddr(lladdr=MAC["vm2"])
    if kind == "frag":
        offset = draw(st.sampled_from([0, 0, 5]))
        return hdr / IPv6ExtHdrFragment(offset=offset, m=draw(st.booleans())) / UDP(dport=53)
    return hdr / IPv6ExtHdrHopByHop() / UDP(dport=draw(u16))


@st.composite
def scapy_frame(draw: Callable[..., Any]) -> bytes:
    dst = draw(macs)
    src = MAC["vm1"]
    kind = draw(
        st.sampled_from(
            ["ip", "ip", "dns", "dns", "ip6", "arp", "vlan", "qinq", "mpls", "snap", "llc"]
        )
    )
    pkt: Packet
    if kind == "dns":
        options = [IPOption_RR()] if draw(st.booleans()) else []
        ip = IP(src=draw(ip4), dst=draw(ip4), ttl=draw(u8), options=options)
        pkt = Ether(src=src, dst=D_DNS) / ip / UDP(sport=draw(u16), dport=53)
    elif kind == "ip":
        pkt = Ether(src=src, dst=dst) / draw(ipv4())
    elif kind == "ip6":
        pkt = Ether(src=src, dst=dst) / draw(ipv6())
    elif kind == "arp":
        pkt = Ether(src=src, dst=dst) / ARP(
            op=draw(st.integers(1, 4)), psrc=draw(ip4), pdst=draw(ip4), hwsrc=src
        )
    elif kind == "vlan":
        pkt = Ether(src=src, dst=dst) / Dot1Q(vlan=draw(st.integers(0, 4095))) / draw(ipv4())
    elif kind == "qinq":
        pkt = Ether(src=src, dst=dst) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / draw(ipv6())
    elif kind == "mpls":
        label = draw(st.integers(0, 0xFFFFF))
        pkt = Ether(src=src, dst=dst) / MPLS(label=label, s=1) / draw(ipv4())
    elif kind == "snap":
        pkt = Dot3(src=src, dst=dst) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(code=0x0800)
        pkt = pkt / draw(ipv4())
    else:
        pkt = Dot3(src=src, dst=dst) / LLC(dsap=draw(u8), ssap=draw(u8)) / Raw(b"x" * 20)
    frame = bytes(pkt)
    if draw(st.booleans()):
        return frame  # whole
    return frame[: draw(st.integers(14, len(frame)))]  # truncated


@st.composite
def random_frame(draw: Callable[..., Any]) -> bytes:
    dst = mac_bytes(draw(macs))
    types = ["0800", "86dd", "0806", "8100", "88a8", "8847", "0040", "05ff"]
    etype = draw(
        st.sampled_from([bytes.fromhex(t) for t in types]) | st.binary(min_size=2, max_size=2)
    )
    return dst + draw(st.binary(min_size=6, max_size=6)) + etype + draw(st.binary(max_size=90))


ports = st.sampled_from(["vm1", "vm1", "vm1", "vm2"])
runts = st.binary(max_size=13)  # dropped and counted: no netdev passes them on
frames = scapy_frame() | random_frame() | runts
batches = st.lists(st.tuples(ports, frames), min_size=1, max_size=8)


# -- the run -------------------------------------------------------------------------------------


def check_key(msg: Any, in_port: int, frame: bytes) -> None:
    k = msg.attrs["key"]
    assert k["in_port"] == in_port
    assert k["ethernet"].dst == frame[:6] and k["ethernet"].src == frame[6:12]
    # the KEY is the frame's key, exactly (it converts back to the same flat key)
    if parsable(k):
        assert attrs_to_key(k, {})[0] == extract_key(frame, port_prefix(in_port))
    etype, _off, tagged = eth_type_of(frame)
    if tagged and len(frame) < 18:
        # a truncated tag, as the kernel reports it: the TPID it never read, TCI 0, empty ENCAP
        assert (k["ethertype"], k["vlan"], k["encap"]) == (0, 0, {})
    elif tagged:
        assert k["ethertype"] == etype and k["vlan"] & 0x1000
    elif etype == 0x0004:
        assert "ethertype" not in k
    else:
        assert k["ethertype"] == etype


def parsable(k: dict[str, Any]) -> bool:
    """Whether the kernel takes a key it reported back: not a truncated VLAN tag's (ETHERTYPE 0,
    TCI 0) nor a label-less MPLS packet's (no label stack entry)."""
    if "vlan" in k and not k["vlan"]:
        return False
    if "mpls" in k and not k["mpls"]:
        return False
    return "encap" not in k or parsable(k["encap"])


def installable(k: dict[str, Any]) -> bool:
    """Whether the kernel installs a key it reported as an exact flow (no MASK): also not with
    an empty ENCAP (a tag before an 802.2 frame), which leaves the exact mask without ENCAP."""
    if not parsable(k):
        return False
    return "encap" not in k or (bool(k["encap"]) and installable(k["encap"]))


def run_batch(env: Env, ufids: dict[str, bytes], batch: list[tuple[str, bytes]]) -> None:
    port_no = {"vm1": 1, "vm2": 2}
    before_flows = {f["ufid"]: f.get("stats") for f in env.dump(ufid_flags=7)}
    before = env.stats()
    short_before = env.counters()["short_frames"]
    runt_count = sum(1 for _p, f in batch if len(f) < 14)
    expected_out: Counter[tuple[str, bytes]] = Counter()
    expected_up: Counter[tuple[int, bytes]] = Counter()
    expected_hits: Counter[str] = Counter()
    for port, frame in batch:
        if len(frame) < 14:
            continue
        flow = oracle(port_no[port], frame)
        if flow is None:
            expected_up[(PacketCmd.MISS, frame)] += 1
            continue
        expected_hits[flow] += 1
        for out in OUTPUTS[flow]:
            expected_out[(out, frame)] += 1
        if flow == "llc":
            expected_up[(PacketCmd.ACTION, frame)] += 1
    for port in ("vm1", "vm2"):
        frames = [f for p, f in batch if p == port]
        if frames:
            env.inject(port, frames)
    delivered = Counter((p, f) for p, frames in env.take_all().items() for f in frames)
    assert delivered == expected_out
    msgs = env.upcalls(sum(expected_up.values()))
    assert Counter((m.cmd, m.attrs["packet"]) for m in msgs) == expected_up
    sent_from: dict[bytes, set[int]] = {}
    for p, f in batch:
        sent_from.setdefault(f, set()).add(port_no[p])
    first_miss = None
    for msg in msgs:
        frame = msg.attrs["packet"]
        if msg.cmd == PacketCmd.MISS:
            assert msg.attrs["key"]["in_port"] in sent_from[frame]
            check_key(msg, msg.attrs["key"]["in_port"], frame)
            if first_miss is None and installable(msg.attrs["key"]):
                first_miss = msg
        else:
            assert msg.attrs["userdata"] == bytes.fromhex("0102030405060708")
    after = env.stats()
    hits = after.n_hit - before.n_hit
    misses = after.n_missed - before.n_missed
    assert hits + misses == len(batch) - runt_count and after.n_lost == before.n_lost
    assert env.counters()["short_frames"] - short_before == runt_count
    assert hits == sum(expected_hits.values())
    for flow in env.dump(ufid_flags=7):
        name = next(n for n, u in ufids.items() if u == flow["ufid"])
        was = before_flows[flow["ufid"]]
        gained = (flow["stats"].n_packets if "stats" in flow else 0) - (was.n_packets if was else 0)
        assert gained == expected_hits[name], name
    env.check_idle()
    if first_miss is not None:
        # what ovs-vswitchd does with a miss: its KEY, exact, becomes a flow the frame then hits
        ufid = b"exact".ljust(16, b"\0")
        frame = first_miss.attrs["packet"]
        env.flow(FlowCmd.NEW, {"key": first_miss.attrs["key"], "actions": [], "ufid": ufid})
        env.inject("vm1" if first_miss.attrs["key"]["in_port"] == 1 else "vm2", [frame])
        reply = env.flow(FlowCmd.DEL, {"ufid": ufid})[0].attrs
        assert reply["stats"].n_packets == 1
        env.no_upcalls()
        env.check_idle()


def test_random_frames_follow_the_flows() -> None:
    with flow_env(ports=("vm1", "vm2", "vm3")) as env:
        ufids = install(env)
        assert set(ufids) == {"ip", "ip6", "arp", "dns", "llc"}

        @settings(
            max_examples=250,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(batch=batches)
        def run(batch: list[tuple[str, bytes]]) -> None:
            run_batch(env, ufids, batch)

        run()


def test_the_oracle_agrees_with_scapy_on_whole_frames() -> None:
    # the oracle's reading of whole frames is scapy's (it is used on truncated ones)
    udp = bytes(Ether(dst=D_DNS) / IP() / UDP(dport=53))
    assert oracle(1, udp) == "dns" and oracle(1, udp[:-1]) is None and oracle(2, udp) is None
    frag = bytes(Ether(dst=D_DNS) / IP(flags="MF") / UDP(dport=53))
    assert oracle(1, frag) is None
    snap = bytes(Dot3(dst=D_DNS) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(code=0x0800) / IP()
                 / UDP(dport=53))  # fmt: skip
    assert oracle(1, snap) == "dns"
    assert oracle(1, bytes(Dot3(dst=D_IP) / LLC() / Raw(b"x" * 10))) == "llc"
    assert oracle(1, bytes(Ether(dst=D_IP) / Dot1Q() / IP())) is None
    assert oracle(1, bytes(Ether(dst=D_ARP) / ARP())) == "arp"
    assert oracle(1, bytes(Ether(dst=D_IP) / IPv6())) == "ip6"
    opts = bytes(Ether(dst=D_DNS) / IP(options=[IPOption_RR()]) / UDP(dport=53))
    assert oracle(1, opts) == "dns" and oracle(1, opts[:40]) is None
    assert IPV4_ANY in l2_megaflow_text()
