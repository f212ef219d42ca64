"""Executing OVS actions on frames: every output is parsed back with scapy (the oracle), compared
field by field with the packet scapy builds when asked for the same change, checksums included."""

from __future__ import annotations

import errno
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from ovsdp.flowtable.actions import (
    ActionProgram,
    PacketMeta,
    compile_actions,
    validate_actions,
)
from ovsdp.flowtable.checksum import crc32c, csum_adjust, internet_checksum, sctp_checksum
from ovsdp.flowtable.packet_headers import FRAG_FIRST, FRAG_LATER, flow_hash, parse_headers
from ovsdp.netlink.codec import CODECS
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.structs import (
    OvsActionHash,
    OvsActionPushMpls,
    OvsActionPushVlan,
    OvsKeyEthernet,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyPorts,
)

warnings.filterwarnings("ignore", module="scapy")
from scapy.contrib.mpls import MPLS  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether  # noqa: E402
from scapy.layers.sctp import SCTP, SCTPChunkData  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402

MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
PAYLOAD = bytes(range(64))
_E0 = Ether(src=MAC1, dst=MAC2)  # explicit addresses: scapy resolves nothing


class Sink:
    """A recording ActionSink with a scripted random source."""

    def __init__(self, randoms: list[int] | None = None) -> None:
        self.outputs: list[tuple[int, bytes, PacketMeta]] = []
        self.upcalls: list[tuple[bytes, PacketMeta, Any, Any, int | None]] = []
        self.recircs: list[tuple[bytes, PacketMeta]] = []
        self.events: list[str] = []
        self.randoms = list(randoms or [])

    def output(self, port_no: int, frame: bytes, meta: PacketMeta) -> None:
        assert type(frame) is bytes
        self.outputs.append((port_no, frame, meta))
        self.events.append(f"output:{port_no}")

    def userspace(self, frame: bytes, meta: PacketMeta, attrs: Any, actions: Any,
                  orig_len: int | None) -> None:  # fmt: skip
        assert type(frame) is bytes
        self.upcalls.append((frame, meta, attrs, actions, orig_len))
        self.events.append("userspace")

    def recirculate(self, frame: bytes, meta: PacketMeta) -> None:
        assert type(frame) is bytes
        self.recircs.append((frame, meta))
        self.events.append(f"recirc:{meta.recirc_id}")

    def random_u32(self) -> int:
        return self.randoms.pop(0) if self.randoms else 0x7FFFFFFF

    def frames(self, port: int | None = None) -> list[bytes]:
        return [f for p, f, _ in self.outputs if port is None or p == port]


def run(actions: list[Any], pkt: Packet | bytes, meta: PacketMeta | None = None,
        sink: Sink | None = None, key: dict[str, Any] | None = None) -> Sink:  # fmt: skip
    """Validate (against the packet's own exact key), compile, execute; return the sink."""
    frame = bytes(pkt)
    # the actions go through the netlink codec, as they would from a client
    actions = CODECS["ovs_action"].decode(CODECS["ovs_action"].encode(actions))
    validate_actions(actions, key if key is not None else key_of(frame))
    sink = sink or Sink()
    meta = meta or PacketMeta(1)
    before = (frame, repr(meta))
    assert compile_actions(actions).execute(frame, meta, sink) == 0
    assert (frame, repr(meta)) == before, "execute modified its inputs"
    return sink


def key_of(frame: bytes) -> dict[str, Any]:
    """A netlink flow key for a frame (enough for validation: headers, proto, frag)."""
    p = Ether(frame)
    key: dict[str, Any] = {
        "in_port": 1,
        "ethernet": OvsKeyEthernet(b"\0" * 6, b"\0" * 6),
        "ethertype": p.type,
    }
    cur = key
    layer = p.payload
    while isinstance(layer, Dot1Q | Dot1AD):
        cur["vlan"] = 0x1000 | (layer.prio << 13) | layer.vlan
        inner: dict[str, Any] = {"ethertype": layer.type}
        cur["encap"] = inner
        cur = inner
        layer = layer.payload
    if isinstance(layer, IP):
        frag = 2 if layer.frag else 1 if layer.flags.MF else 0
        cur["ipv4"] = OvsKeyIpv4(0, 0, layer.proto, layer.tos, layer.ttl, frag)
        if frag != 2 and layer.proto in (6, 17, 132):
            cur[{6: "tcp", 17: "udp", 132: "sctp"}[layer.proto]] = OvsKeyPorts(0, 0)
    elif isinstance(layer, IPv6):
        nh, frag, sub = layer.nh, 0, layer.payload
        if isinstance(sub, IPv6ExtHdrFragment):
            frag, nh = (2 if sub.offset else 1), sub.nh
        cur["ipv6"] = OvsKeyIpv6(b"\0" * 16, b"\0" * 16, 0, nh, 0, 0, frag)
        if frag != 2 and nh in (6, 17, 132):
            cur[{6: "tcp", 17: "udp", 132: "sctp"}[nh]] = OvsKeyPorts(0, 0)
    elif isinstance(layer, MPLS):
        lses = []
        while isinstance(layer, MPLS):
            lses.append(layer.label << 12 | layer.cos << 9 | layer.s << 8 | layer.ttl)
            layer = layer.payload
        cur["mpls"] = tuple(lses)
    return key


def expected(pkt: Packet, change: Any = None) -> bytes:
    """The bytes of ``pkt`` after ``change(copy)``, with scapy recomputing the checksums (a zero
    UDP checksum and the L4 checksum of IP fragments stay as they are)."""
    q = pkt.copy()
    if change is not None:
        change(q)
    _drop_checksums(q)
    return bytes(q)


def _drop_checksums(q: Packet) -> None:
    fragment = False
    layer: Packet | None = q
    while layer is not None and not isinstance(layer, Raw) and layer.name != "NoPayload":
        if isinstance(layer, IP):
            fragment = bool(layer.frag or layer.flags.MF)
            del layer.chksum
        elif isinstance(layer, IPv6ExtHdrFragment):
            fragment = True
        elif isinstance(layer, UDP):
            if layer.chksum != 0 and not fragment:
                del layer.chksum
        elif isinstance(layer, TCP | SCTP | ICMP) and not fragment:
            del layer.chksum
        elif "cksum" in layer.fields and not fragment:
            del layer.cksum
        layer = layer.payload if layer.payload else None


def checksums_ok(frame: bytes) -> bool:
    """Whether scapy, recomputing every checksum of the parsed frame, gets the same bytes."""
    return expected(Ether(frame)) == frame


def tcp4(**ip: Any) -> Packet:
    ip.setdefault("ttl", 64)
    return (
        Ether(src=MAC1, dst=MAC2)
        / IP(src="10.0.0.1", dst="10.0.0.2", **ip)
        / TCP(sport=1234, dport=80, flags="S", seq=7)
        / PAYLOAD
    )


def udp4(chksum: int | None = None) -> Packet:
    return (
        Ether(src=MAC1, dst=MAC2)
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=5000, dport=53, chksum=chksum)
        / PAYLOAD
    )


def ip4(src: str) -> int:
    a, b, c, d = (int(x) for x in src.split("."))
    return a << 24 | b << 16 | c << 8 | d


def v6(addr: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(addr).packed


def norm(pkt: Packet) -> Packet:
    """``pkt`` as bytes parsed back (fills in every computed field)."""
    return Ether(bytes(pkt))


def set_ipv4(src: int = 0, dst: int = 0, tos: int = 0, ttl: int = 0, *, ms: int = 0, md: int = 0,
             mtos: int = 0, mttl: int = 0) -> tuple[str, Any]:  # fmt: skip
    return ("set_masked", {"ipv4": (OvsKeyIpv4(src & ms, dst & md, 0, tos & mtos, ttl & mttl, 0),
                                    OvsKeyIpv4(ms, md, 0, mtos, mttl, 0))})  # fmt: skip


# --- checksum.py ---


def test_crc32c_and_internet_checksum_vectors() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283
    ip = IP(src="1.2.3.4", dst="5.6.7.8")
    hdr = bytes(ip)
    assert internet_checksum(hdr[:10] + b"\0\0" + hdr[12:]) == norm(_E0 / ip)[IP].chksum
    assert internet_checksum(b"\0\0") == 0xFFFF
    assert internet_checksum(b"\x01") == 0xFEFF
    # an incremental update equals recomputing
    new = hdr[:12] + bytes([9, 9, 9, 9]) + hdr[16:]
    check = int.from_bytes(hdr[10:12], "big")
    got = csum_adjust(check, int.from_bytes(hdr[12:16], "big"), 0x09090909)
    assert got == internet_checksum(new[:10] + b"\0\0" + new[12:])


def test_sctp_checksum_matches_scapy() -> None:
    raw = bytes(_E0 / IP() / SCTP(sport=1, dport=2) / SCTPChunkData(data=b"abc"))
    assert sctp_checksum(raw[34:]) == int.from_bytes(raw[42:46], "little")


# --- output and snapshots ---


def test_single_output_program_and_drops() -> None:
    p = compile_actions([("output", 3)])
    assert p.single_output == 3 and not p.drops
    assert compile_actions([]).drops and compile_actions([]).single_output is None
    assert compile_actions([("drop", 0)]).drops
    assert compile_actions([("set", {"priority": 3})]).drops
    assert not compile_actions([("output", 1), ("output", 2)]).drops
    assert compile_actions([("output", 1), ("output", 2)]).single_output is None
    assert not compile_actions([("clone", [("output", 1)])]).drops
    assert compile_actions([("clone", [("set", {"skb_mark": 1})])]).drops
    assert not compile_actions([("userspace", {"pid": 1})]).drops
    assert not compile_actions([("recirc", 1)]).drops
    with pytest.raises(AttributeError):
        p.single_output = 4
    assert isinstance(p, ActionProgram)


def test_output_passes_frame_and_meta_through() -> None:
    pkt = tcp4()
    meta = PacketMeta(7, priority=3)
    sink = run([("output", 3)], pkt, meta)
    assert sink.outputs == [(3, bytes(pkt), meta)]


def test_output_before_modify_sends_snapshots() -> None:
    pkt = tcp4()
    sink = run(
        [
            ("output", 1),
            set_ipv4(dst=ip4("10.9.9.9"), md=0xFFFFFFFF),
            ("output", 2),
            ("set", {"tcp": OvsKeyPorts(1234, 8080)}),
            ("output", 3),
        ],
        pkt,
    )
    assert sink.events == ["output:1", "output:2", "output:3"]
    assert sink.frames(1) == [bytes(pkt)]
    step2 = expected(pkt, lambda q: setattr(q[IP], "dst", "10.9.9.9"))
    assert sink.frames(2) == [step2]

    def both(q: Packet) -> None:
        q[IP].dst = "10.9.9.9"
        q[TCP].dport = 8080

    assert sink.frames(3) == [expected(pkt, both)]


def test_meta_snapshots_per_output() -> None:
    meta = PacketMeta(1, priority=1)
    sink = run([("output", 1), ("set", {"priority": 9}), ("set", {"skb_mark": 5}),
                ("output", 2), ("set_masked", {"skb_mark": (0x10, 0xF0)}), ("output", 3)],
               tcp4(), meta)  # fmt: skip
    m1, m2, m3 = (m for _, _, m in sink.outputs)
    assert (m1.priority, m1.skb_mark) == (1, 0)
    assert m1 is meta
    assert (m2.priority, m2.skb_mark) == (9, 5)
    assert (m3.priority, m3.skb_mark) == (9, 0x15)
    assert meta.priority == 1 and meta.skb_mark == 0


# --- set(ipv4) ---


@pytest.mark.parametrize("make", [tcp4, udp4, lambda: udp4(chksum=0)], ids=["tcp", "udp", "udp0"])
def test_set_ipv4_addresses_fix_ip_and_l4_checksums(make: Any) -> None:
    pkt = make()
    sink = run([set_ipv4(ip4("192.168.1.1"), ip4("172.16.0.9"), ms=0xFFFFFFFF, md=0xFFFFFFFF),
                ("output", 1)], pkt)  # fmt: skip

    def change(q: Packet) -> None:
        q[IP].src, q[IP].dst = "192.168.1.1", "172.16.0.9"

    out = sink.frames()[0]
    assert out == expected(pkt, change)
    assert checksums_ok(out)
    if UDP in pkt and pkt[UDP].chksum == 0:
        assert Ether(out)[UDP].chksum == 0


def test_set_ipv4_unmasked_rewrites_src_dst_tos_ttl() -> None:
    pkt = norm(tcp4(tos=0x10))
    sink = run([("set", {"ipv4": OvsKeyIpv4(ip4("1.1.1.1"), ip4("2.2.2.2"), 6, 0xB8, 9, 0)}),
                ("output", 1)], pkt)  # fmt: skip

    def change(q: Packet) -> None:
        q[IP].src, q[IP].dst, q[IP].tos, q[IP].ttl = "1.1.1.1", "2.2.2.2", 0xB8, 9

    assert sink.frames()[0] == expected(pkt, change)


def test_set_masked_ipv4_partial_masks() -> None:
    pkt = norm(tcp4(tos=0x03))
    action = set_ipv4(ip4("192.168.0.0"), 0, 0xB8, 0x20, ms=0xFFFF0000, mtos=0xFC, mttl=0xF0)
    sink = run([action, ("output", 1)], pkt)

    def change(q: Packet) -> None:
        q[IP].src = "192.168.0.1"  # only the upper half of 10.0.0.1 replaced
        q[IP].tos = 0xB8 | 0x03  # DSCP replaced, ECN kept
        q[IP].ttl = 0x20 | (64 & 0x0F)

    assert sink.frames()[0] == expected(pkt, change)


def test_set_ipv4_icmp_checksum_untouched_ip_checksum_fixed() -> None:
    pkt = norm(_E0 / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=5) / PAYLOAD)
    sink = run([set_ipv4(dst=ip4("10.0.0.3"), md=0xFFFFFFFF), ("output", 1)], pkt)
    out = Ether(sink.frames()[0])
    assert out[ICMP].chksum == pkt[ICMP].chksum
    assert sink.frames()[0] == expected(pkt, lambda q: setattr(q[IP], "dst", "10.0.0.3"))


def test_set_ipv4_fragments() -> None:
    # first fragment: the L4 checksum is updated (it covers the whole datagram)
    whole = tcp4()
    first = norm(whole.copy())
    first[IP].flags = "MF"
    del first[IP].chksum
    first = norm(first)
    assert checksums_ok(bytes(first))
    sink = run([set_ipv4(ip4("10.0.0.99"), ms=0xFFFFFFFF), ("output", 1)], first)
    out = Ether(sink.frames()[0])
    assert out[IP].src == "10.0.0.99" and checksums_ok(bytes(out))
    ref = norm(whole.copy())
    ref[IP].src = "10.0.0.99"
    del ref[TCP].chksum
    assert out[TCP].chksum == norm(ref)[TCP].chksum
    # later fragment: nothing past the IP header changes
    later = norm(_E0 / IP(src="10.0.0.1", dst="10.0.0.2", frag=8, proto=6) / PAYLOAD)
    assert parse_headers(bytes(later)).frag == FRAG_LATER
    sink = run([set_ipv4(ip4("10.0.0.99"), ms=0xFFFFFFFF), ("set", {"tcp": OvsKeyPorts(1, 2)}),
                ("output", 1)], later)  # fmt: skip
    out_raw = sink.frames()[0]
    assert out_raw[34:] == bytes(later)[34:]
    assert out_raw == expected(later, lambda q: setattr(q[IP], "src", "10.0.0.99"))


def test_set_ipv4_with_options() -> None:
    from scapy.layers.inet import IPOption_RR

    pkt = norm(_E0 / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR()]) / TCP()
               / PAYLOAD)  # fmt: skip
    assert pkt[IP].ihl > 5
    sink = run([set_ipv4(ip4("10.1.1.1"), ms=0xFFFFFFFF), ("output", 1)], pkt)
    assert sink.frames()[0] == expected(pkt, lambda q: setattr(q[IP], "src", "10.1.1.1"))


def test_set_ipv4_on_vlan_tagged_packet() -> None:
    pkt = norm(_E0 / Dot1Q(vlan=10) / IP(src="10.0.0.1") / UDP(sport=1, dport=2) / PAYLOAD)
    sink = run([set_ipv4(ip4("10.0.0.2"), ms=0xFFFFFFFF), ("output", 1)], pkt)
    assert sink.frames()[0] == expected(pkt, lambda q: setattr(q[IP], "src", "10.0.0.2"))


# --- set(ipv6) ---


def _v6(l4: Packet, **kw: Any) -> Packet:
    return norm(Ether(src=MAC1, dst=MAC2) / IPv6(src="2001:db8::1", dst="2001:db8::2", **kw) / l4
                / PAYLOAD)  # fmt: skip


@pytest.mark.parametrize(
    "l4", [TCP(sport=1, dport=2), UDP(sport=3, dport=4), ICMPv6EchoRequest(id=9)],
    ids=["tcp", "udp", "icmpv6"],
)  # fmt: skip
def test_set_ipv6_addresses_fix_l4_checksums(l4: Packet) -> None:
    pkt = _v6(l4)
    nh = pkt[IPv6].nh
    sink = run([("set", {"ipv6": OvsKeyIpv6(v6("2001:db8:1::5"), v6("fe80::1"), 0, nh, 0, 64, 0)}),
                ("output", 1)], pkt)  # fmt: skip

    def change(q: Packet) -> None:
        q[IPv6].src, q[IPv6].dst, q[IPv6].hlim = "2001:db8:1::5", "fe80::1", 64

    out = sink.frames()[0]
    assert out == expected(pkt, change)
    assert checksums_ok(out)


def test_set_masked_ipv6_label_tclass_hlimit_partial() -> None:
    pkt = _v6(TCP(), tc=0x21, fl=0xABCDE, hlim=200)
    value = OvsKeyIpv6(v6("::ff00:0"), b"\0" * 16, 0x00012, 0, 0x80, 0, 0)
    mask = OvsKeyIpv6(v6("::ffff:0"), b"\0" * 16, 0x000FF, 0, 0xC0, 0, 0)
    sink = run([("set_masked", {"ipv6": (value, mask)}), ("output", 1)], pkt)

    def change(q: Packet) -> None:
        q[IPv6].src = "2001:db8::ff00:1"
        q[IPv6].fl = 0xABC12
        q[IPv6].tc = 0x80 | 0x21

    assert sink.frames()[0] == expected(pkt, change)
    value = OvsKeyIpv6(b"\0" * 16, b"\0" * 16, 0, 0, 0, 17, 0)
    mask = OvsKeyIpv6(b"\0" * 16, b"\0" * 16, 0, 0, 0, 0xFF, 0)
    sink = run([("set_masked", {"ipv6": (value, mask)}), ("output", 1)], pkt)
    assert sink.frames()[0] == expected(pkt, lambda q: setattr(q[IPv6], "hlim", 17))


def test_set_ipv6_dst_with_routing_header_leaves_l4_checksum() -> None:
    from scapy.layers.inet6 import IPv6ExtHdrRouting

    routing = IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1)
    pkt = norm(Ether(src=MAC1, dst=MAC2) / IPv6(src="2001:db8::1", dst="2001:db8::2") / routing
               / UDP() / PAYLOAD)  # fmt: skip
    mask = OvsKeyIpv6(b"\0" * 16, b"\xff" * 16, 0, 0, 0, 0, 0)
    value = OvsKeyIpv6(b"\0" * 16, v6("2001:db8::3"), 0, 0, 0, 0, 0)
    key = key_of(bytes(pkt))
    key["encap" if "encap" in key else "ipv6"] = OvsKeyIpv6(b"\0" * 16, b"\0" * 16, 0, 17, 0, 0, 0)
    sink = run([("set_masked", {"ipv6": (value, mask)}), ("output", 1)], pkt, key=key)
    out = Ether(sink.frames()[0])
    assert out[IPv6].dst == "2001:db8::3"
    assert out[UDP].chksum == pkt[UDP].chksum


def test_set_ipv6_later_fragment_payload_untouched() -> None:
    pkt = norm(Ether(src=MAC1, dst=MAC2) / IPv6(src="2001:db8::1", dst="2001:db8::2")
               / IPv6ExtHdrFragment(offset=10, nh=6) / PAYLOAD)  # fmt: skip
    assert parse_headers(bytes(pkt)).frag == FRAG_LATER
    mask = OvsKeyIpv6(b"\xff" * 16, b"\0" * 16, 0, 0, 0, 0, 0)
    value = OvsKeyIpv6(v6("2001:db8::7"), b"\0" * 16, 0, 0, 0, 0, 0)
    sink = run([("set_masked", {"ipv6": (value, mask)}), ("output", 1)], pkt)
    out = sink.frames()[0]
    assert out == expected(pkt, lambda q: setattr(q[IPv6], "src", "2001:db8::7"))
    assert out[62:] == bytes(pkt)[62:]


# --- set(tcp/udp/sctp), set(ethernet) ---


def test_set_tcp_ports() -> None:
    pkt = norm(tcp4())
    sink = run([("set", {"tcp": OvsKeyPorts(4321, 443)}), ("output", 1)], pkt)

    def change(q: Packet) -> None:
        q[TCP].sport, q[TCP].dport = 4321, 443

    assert sink.frames()[0] == expected(pkt, change)


def test_set_masked_udp_partial_port_mask_and_zero_checksum() -> None:
    for pkt in (norm(udp4()), norm(udp4(chksum=0))):
        action = ("set_masked", {"udp": (OvsKeyPorts(0, 0x1200), OvsKeyPorts(0, 0xFF00))})
        sink = run([action, ("output", 1)], pkt)
        out = sink.frames()[0]
        assert out == expected(pkt, lambda q: setattr(q[UDP], "dport", 0x1200 | (53 & 0xFF)))
        assert (Ether(out)[UDP].chksum == 0) == (pkt[UDP].chksum == 0)


def test_set_tcp_ports_ipv6() -> None:
    pkt = _v6(TCP(sport=1, dport=2))
    sink = run([("set_masked", {"tcp": (OvsKeyPorts(77, 0), OvsKeyPorts(0xFFFF, 0))}),
                ("output", 1)], pkt)  # fmt: skip
    assert sink.frames()[0] == expected(pkt, lambda q: setattr(q[TCP], "sport", 77))


def test_set_sctp_ports_recomputes_crc32c_and_carries_errors() -> None:
    pkt = norm(_E0 / IP() / SCTP(sport=1, dport=2) / SCTPChunkData(data=b"hello"))
    sink = run([("set", {"sctp": OvsKeyPorts(1000, 2000)}), ("output", 1)], pkt)

    def change(q: Packet) -> None:
        q[SCTP].sport, q[SCTP].dport = 1000, 2000

    assert sink.frames()[0] == expected(pkt, change)
    broken = pkt.copy()
    broken[SCTP].chksum ^= 0x1234
    broken = norm(broken)
    assert not checksums_ok(bytes(broken))
    out = Ether(run([("set", {"sctp": OvsKeyPorts(1000, 2000)}), ("output", 1)],
                    broken).frames()[0])  # fmt: skip
    good = Ether(expected(pkt, change))
    assert out[SCTP].chksum == good[SCTP].chksum ^ 0x1234


def test_set_ethernet_masked_and_unmasked() -> None:
    pkt = norm(tcp4())
    sink = run([("set", {"ethernet": OvsKeyEthernet(bytes.fromhex("0a0b0c0d0e0f"),
                                                     bytes.fromhex("aabbccddeeff"))}),
                ("output", 1)], pkt)  # fmt: skip

    def change(q: Packet) -> None:
        q.src, q.dst = "0a:0b:0c:0d:0e:0f", "aa:bb:cc:dd:ee:ff"

    assert sink.frames()[0] == expected(pkt, change)
    value = OvsKeyEthernet(b"\0" * 6, bytes.fromhex("110000000000"))
    mask = OvsKeyEthernet(b"\0" * 6, bytes.fromhex("ff0000000000"))
    sink = run([("set_masked", {"ethernet": (value, mask)}), ("output", 1)], pkt)
    assert sink.frames()[0] == expected(pkt, lambda q: setattr(q, "dst", "11:00:00:00:00:02"))


def test_set_tunnel_sets_egress_metadata() -> None:
    tun = {"id": 5, "ipv4_dst": ip4("192.0.2.1"), "ttl": 64}
    sink = run([("output", 1), ("set", {"tunnel": tun}), ("output", 2)], tcp4())
    assert sink.outputs[0][2].egress_tunnel is None
    assert sink.outputs[1][2].egress_tunnel == tun


# --- VLAN ---


def test_push_vlan_8021q() -> None:
    pkt = norm(tcp4())
    sink = run([("push_vlan", OvsActionPushVlan(0x8100, 0x1000 | 5 << 13 | 100)),
                ("output", 1)], pkt)  # fmt: skip
    out = Ether(sink.frames()[0])
    assert out.type == 0x8100
    assert (out[Dot1Q].prio, out[Dot1Q].dei, out[Dot1Q].vlan) == (5, 0, 100)
    inner = pkt.copy()
    assert bytes(out[Dot1Q].payload) == bytes(inner.payload)
    assert sink.frames()[0] == bytes(norm(Ether(src=MAC1, dst=MAC2) / Dot1Q(prio=5, vlan=100)
                                          / pkt.payload))  # fmt: skip


def test_push_vlan_qinq_outermost_and_pop() -> None:
    pkt = norm(Ether(src=MAC1, dst=MAC2) / Dot1Q(vlan=10) / IP() / UDP() / PAYLOAD)
    sink = run([("push_vlan", OvsActionPushVlan(0x88A8, 0x1000 | 200)), ("output", 1),
                ("pop_vlan", True), ("output", 2), ("pop_vlan", True), ("output", 3),
                ("pop_vlan", True), ("output", 4)], pkt)  # fmt: skip
    qinq = Ether(sink.frames(1)[0])
    assert qinq.type == 0x88A8
    assert qinq[Dot1AD].vlan == 200 and qinq[Dot1AD].type == 0x8100
    assert qinq[Dot1Q].vlan == 10 and qinq[Dot1Q].type == 0x0800
    assert sink.frames(2) == [bytes(pkt)]
    untagged = bytes(norm(Ether(src=MAC1, dst=MAC2) / IP() / UDP() / PAYLOAD))
    assert sink.frames(3) == [untagged]
    assert sink.frames(4) == [untagged]  # pop on an untagged frame does nothing


def test_vlan_push_then_set_ipv4_finds_the_header() -> None:
    pkt = norm(udp4())
    sink = run([("push_vlan", OvsActionPushVlan(0x8100, 0x1007)),
                set_ipv4(ip4("10.0.0.5"), ms=0xFFFFFFFF), ("output", 1)], pkt)  # fmt: skip
    out = Ether(sink.frames()[0])
    assert out[Dot1Q].vlan == 7 and out[IP].src == "10.0.0.5"
    assert checksums_ok(bytes(out))


# --- MPLS ---


def test_push_mpls_and_pop_mpls() -> None:
    pkt = norm(udp4())
    lse = 100 << 12 | 3 << 9 | 1 << 8 | 63
    sink = run([("push_mpls", OvsActionPushMpls(lse, 0x8847)), ("output", 1),
                ("pop_mpls", 0x0800), ("output", 2)], pkt)  # fmt: skip
    out = Ether(sink.frames(1)[0])
    assert out.type == 0x8847
    assert (out[MPLS].label, out[MPLS].cos, out[MPLS].s, out[MPLS].ttl) == (100, 3, 1, 63)
    assert bytes(out[MPLS].payload) == bytes(pkt.payload)
    assert sink.frames(2) == [bytes(pkt)]


def test_push_mpls_twice_and_set_mpls() -> None:
    pkt = norm(_E0 / MPLS(label=7, s=1, ttl=9) / IP() / UDP())
    top = 33 << 12 | 0 << 8 | 5
    sink = run([("push_mpls", OvsActionPushMpls(top, 0x8847)),
                ("set_masked", {"mpls": ((0x00000040,), (0x000000FF,))}),
                ("output", 1)], pkt)  # fmt: skip
    out = Ether(sink.frames()[0])
    assert (out[MPLS].label, out[MPLS].s, out[MPLS].ttl) == (33, 0, 0x40)
    second = out[MPLS].payload
    assert isinstance(second, MPLS) and (second.label, second.s, second.ttl) == (7, 1, 9)


def test_pop_mpls_on_non_mpls_is_a_noop_at_execution() -> None:
    pkt = norm(udp4())
    p = compile_actions([("pop_mpls", 0x0800), ("output", 1)])
    sink = Sink()
    assert p.execute(bytes(pkt), PacketMeta(1), sink) == 0
    assert sink.frames() == [bytes(pkt)]


# --- dec_ttl ---


def test_dec_ttl_decrements_with_checksum() -> None:
    pkt = norm(tcp4())
    sink = run([("dec_ttl", {"action": [("userspace", {"pid": 1})]}), ("output", 1)], pkt)
    assert sink.frames() == [expected(pkt, lambda q: setattr(q[IP], "ttl", 63))]
    assert sink.upcalls == []
    pkt6 = _v6(UDP(), hlim=2)
    sink = run([("dec_ttl", {"action": []}), ("output", 1)], pkt6)
    assert sink.frames() == [expected(pkt6, lambda q: setattr(q[IPv6], "hlim", 1))]


@pytest.mark.parametrize("ttl", [0, 1])
def test_dec_ttl_exception_runs_nested_actions_and_consumes(ttl: int) -> None:
    pkt = norm(tcp4(ttl=ttl))
    sink = run([("dec_ttl", {"action": [("userspace", {"pid": 9, "userdata": b"ttl"})]}),
                ("output", 1)], pkt)  # fmt: skip
    assert sink.outputs == []
    assert len(sink.upcalls) == 1 and sink.upcalls[0][0] == bytes(pkt)
    assert sink.upcalls[0][2]["userdata"] == b"ttl"
    sink = run([("dec_ttl", {"action": []}), ("output", 1)], _v6(UDP(), hlim=ttl))
    assert sink.outputs == [] and sink.upcalls == []


def test_dec_ttl_non_ip_does_nothing() -> None:
    pkt = norm(_E0 / ARP())
    sink = run([("dec_ttl", {"action": [("output", 9)]}), ("output", 1)], pkt)
    assert sink.frames() == [bytes(pkt)] and sink.events == ["output:1"]


# --- trunc, clone, sample, check_pkt_len ---


def test_trunc_applies_to_next_output_and_upcall() -> None:
    pkt = norm(tcp4())
    full = bytes(pkt)
    sink = run([("trunc", 60), ("output", 1), ("output", 2), ("trunc", 20),
                ("userspace", {"pid": 4}), ("userspace", {"pid": 5}),
                ("trunc", 1000), ("output", 3)], pkt)  # fmt: skip
    assert sink.frames(1) == [full[:60]]
    assert sink.frames(2) == [full]
    (f1, _, _, _, len1), (f2, _, _, _, len2) = sink.upcalls
    assert (f1, len1) == (full[:20], len(full))
    assert (f2, len2) == (full, None)
    assert sink.frames(3) == [full]


def test_trunc_inside_clone_and_never_below_ethernet_header() -> None:
    pkt = norm(tcp4())
    sink = run([("trunc", 14), ("clone", [("output", 1)]), ("output", 2)], pkt)
    assert sink.frames(1) == [bytes(pkt)[:14]]
    assert sink.frames(2) == [bytes(pkt)[:14]]  # the clone did not use up the original's trunc


def test_clone_isolation() -> None:
    pkt = norm(tcp4())
    meta = PacketMeta(1)
    sink = run([("clone", [set_ipv4(ip4("9.9.9.9"), ms=0xFFFFFFFF), ("set", {"priority": 7}),
                           ("push_vlan", OvsActionPushVlan(0x8100, 0x1001)), ("output", 2)]),
                ("output", 3)], pkt, meta)  # fmt: skip
    assert sink.frames(3) == [bytes(pkt)]
    assert sink.outputs[1][2].priority == 0
    cloned = Ether(sink.frames(2)[0])
    assert cloned[IP].src == "9.9.9.9" and cloned[Dot1Q].vlan == 1
    assert sink.outputs[0][2].priority == 7


def test_clone_drop_inside_does_not_drop_outside() -> None:
    sink = run([("clone", [("output", 1), ("drop", 0)]), ("output", 2)], tcp4())
    assert sink.events == ["output:1", "output:2"]


@pytest.mark.parametrize(
    ("probability", "randoms", "taken"),
    [(0, [0], False), (0xFFFFFFFF, [0xFFFFFFFF], True), (1000, [999], True), (1000, [1000], True),
     (1000, [1001], False)],
)  # fmt: skip
def test_sample_probability(probability: int, randoms: list[int], taken: bool) -> None:
    pkt = norm(tcp4())
    sink = Sink(randoms)
    run([("sample", {"probability": probability,
                     "actions": [("set", {"skb_mark": 3}), ("output", 9)]}),
         ("output", 1)], pkt, sink=sink)  # fmt: skip
    assert sink.events == (["output:9", "output:1"] if taken else ["output:1"])
    assert sink.outputs[-1][2].skb_mark == 0


def test_sample_always_and_never_do_not_draw() -> None:
    sink = Sink([1, 2, 3])
    run([("sample", {"probability": 0, "actions": [("output", 1)]}),
         ("sample", {"probability": 0xFFFFFFFF, "actions": [("output", 2)]})], tcp4(),
        sink=sink)  # fmt: skip
    assert sink.randoms == [1, 2, 3] and sink.events == ["output:2"]


def test_check_pkt_len_both_branches() -> None:
    pkt = norm(tcp4())
    n = len(bytes(pkt))
    actions = lambda size: [  # noqa: E731
        ("check_pkt_len", {"pkt_len": size,
                           "actions_if_greater": [("push_vlan", OvsActionPushVlan(0x8100, 0x1002)),
                                                  ("output", 2)],
                           "actions_if_less_equal": [("output", 3)]}),
        ("output", 1),
    ]  # fmt: skip
    sink = run(actions(n), pkt)
    assert sink.events == ["output:3", "output:1"]
    sink = run(actions(n - 1), pkt)
    assert sink.events == ["output:2", "output:1"]
    assert sink.frames(1) == [bytes(pkt)]
    # a reassembled packet compares MRU + L2 header length
    sink = run(actions(100), pkt, PacketMeta(1, mru=86))
    assert sink.events == ["output:3", "output:1"]
    sink = run(actions(100), pkt, PacketMeta(1, mru=87))
    assert sink.events == ["output:2", "output:1"]


# --- userspace, recirc, hash, drop ---


def test_userspace_upcall_attrs_and_actions() -> None:
    pkt = norm(tcp4())
    acts = [("set", {"skb_mark": 4}),
            ("userspace", {"pid": 77, "userdata": b"cookie", "egress_tun_port": 5,
                           "actions": True}),
            ("output", 2)]  # fmt: skip
    sink = run(acts, pkt)
    frame, meta, attrs, listed, orig_len = sink.upcalls[0]
    assert frame == bytes(pkt) and orig_len is None and meta.skb_mark == 4
    assert attrs == {"pid": 77, "userdata": b"cookie", "egress_tun_port": 5, "actions": True}
    assert listed is not None and [a[0] for a in listed] == ["set", "userspace", "output"]
    sink = run([("userspace", {"pid": 77})], pkt)
    assert sink.upcalls[0][3] is None


def test_recirc_sets_id_on_a_copy_and_continues() -> None:
    pkt = norm(tcp4())
    meta = PacketMeta(3, recirc_id=0)
    sink = run([("hash", OvsActionHash(0, 11)), ("recirc", 0x42), ("output", 1)], pkt, meta)
    assert sink.events == ["recirc:66", "output:1"]
    frame, rmeta = sink.recircs[0]
    assert frame == bytes(pkt) and rmeta.recirc_id == 0x42 and rmeta.in_port == 3
    assert rmeta.dp_hash != 0
    assert sink.outputs[0][2].recirc_id == 0 and meta.recirc_id == 0


def test_hash_l4_and_sym_l4() -> None:
    a = norm(tcp4())
    b = norm(_E0 / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=1234))
    key = {"ethernet": OvsKeyEthernet(b"\0" * 6, b"\0" * 6), "ethertype": 0x0800}

    def dp_hash(pkt: Packet, alg: int, basis: int, meta: PacketMeta | None = None) -> int:
        sink = run([("hash", OvsActionHash(alg, basis)), ("output", 1)], pkt, meta, key=key)
        return sink.outputs[0][2].dp_hash

    assert dp_hash(a, 0, 1) == dp_hash(a, 0, 1) != 0
    assert dp_hash(a, 0, 1) != dp_hash(a, 0, 2)
    assert dp_hash(a, 1, 5) == dp_hash(b, 1, 5)
    assert dp_hash(a, 0, 5) != dp_hash(b, 0, 5)
    # the datapath's packet hash is used when it has one
    assert dp_hash(a, 0, 5, PacketMeta(1, hash=1234)) == dp_hash(b, 0, 5, PacketMeta(1, hash=1234))
    assert flow_hash(bytes(a)) != 0 and flow_hash(bytes(a), symmetric=True) == flow_hash(
        bytes(b), symmetric=True
    )


def test_rewrites_reset_the_packet_hash() -> None:
    sink = run([("output", 1), ("set", {"tcp": OvsKeyPorts(9, 9)}), ("output", 2)], tcp4(),
               PacketMeta(1, hash=55))  # fmt: skip
    assert [m.hash for _, _, m in sink.outputs] == [55, 0]


def test_drop_stops_execution_and_ct_clear_is_a_noop() -> None:
    sink = run([("ct_clear", True), ("output", 1), ("drop", 0)], tcp4())
    assert sink.events == ["output:1"]
    p = compile_actions([("output", 1), ("drop", 0), ("output", 2)])  # not validated: drop stops
    sink = Sink()
    p.execute(bytes(tcp4()), PacketMeta(1), sink)
    assert sink.events == ["output:1"]


def test_missing_header_drops_with_einval() -> None:
    frame = bytes(norm(tcp4()))[:30]  # truncated inside the IP header
    p = compile_actions([("output", 1), set_ipv4(ip4("1.2.3.4"), ms=0xFFFFFFFF), ("output", 2)])
    sink = Sink()
    assert p.execute(frame, PacketMeta(1), sink) == errno.EINVAL
    assert sink.events == ["output:1"]
    sink = Sink()
    p = compile_actions([("set", {"tcp": OvsKeyPorts(1, 2)}), ("output", 2)])
    assert p.execute(bytes(norm(udp4())), PacketMeta(1), sink) == errno.EINVAL
    assert sink.events == []


def test_compile_refuses_unsupported_actions() -> None:
    for actions in ([("ct", {"commit": True})], [("meter", 1)], [("add_mpls", None)]):
        with pytest.raises(NetlinkError) as exc:
            compile_actions(actions)
        assert exc.value.errno == errno.EOPNOTSUPP
    with pytest.raises(NetlinkError) as exc:
        compile_actions([("tunnel_pop", 1)])
    assert exc.value.errno == errno.EINVAL


# --- hypothesis ---

_ip_addr = st.integers(0, 0xFFFFFFFF)
_port = st.integers(0, 0xFFFF)


@st.composite
def _ip_packets(draw: Any) -> Packet:
    l4 = draw(st.sampled_from(["tcp", "udp", "udp0", "icmp"]))
    tagged = draw(st.booleans())
    ip = IP(src=_dotted(draw(_ip_addr)), dst=_dotted(draw(_ip_addr)), tos=draw(st.integers(0, 255)),
            ttl=draw(st.integers(0, 255)), id=draw(st.integers(0, 0xFFFF)))  # fmt: skip
    payload = draw(st.binary(max_size=40))
    layer: Packet
    if l4 == "tcp":
        layer = TCP(sport=draw(_port), dport=draw(_port), seq=draw(_ip_addr))
    elif l4 == "icmp":
        layer = ICMP(id=draw(_port))
    else:
        layer = UDP(sport=draw(_port), dport=draw(_port), chksum=0 if l4 == "udp0" else None)
    eth = Ether(src=MAC1, dst=MAC2)
    pkt = (eth / Dot1Q(vlan=3) / ip / layer / payload) if tagged else (eth / ip / layer / payload)
    return norm(pkt)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pkt=_ip_packets(), data=st.data())
def test_random_rewrites_keep_checksums_exact(pkt: Packet, data: Any) -> None:
    """Random masked rewrites of IPv4 and L4 fields give exactly the bytes scapy computes."""
    ms, md = data.draw(_ip_addr), data.draw(_ip_addr)
    mtos, mttl = data.draw(st.integers(0, 255)), data.draw(st.integers(0, 255))
    src, dst = data.draw(_ip_addr), data.draw(_ip_addr)
    tos, ttl = data.draw(st.integers(0, 255)), data.draw(st.integers(0, 255))
    actions = [set_ipv4(src, dst, tos, ttl, ms=ms, md=md, mtos=mtos, mttl=mttl)]
    l4 = "tcp" if TCP in pkt else "udp" if UDP in pkt else None
    psrc = pdst = psm = pdm = 0
    if l4:
        psrc, pdst, psm, pdm = (data.draw(_port) for _ in range(4))
        actions.append(("set_masked", {l4: (OvsKeyPorts(psrc & psm, pdst & pdm),
                                            OvsKeyPorts(psm, pdm))}))  # fmt: skip
    actions.append(("output", 1))
    sink = run(actions, pkt)

    def change(q: Packet) -> None:
        def mix(old: int, new: int, mask: int) -> int:
            return (old & ~mask) | (new & mask)

        q[IP].src = _dotted(mix(ip4(q[IP].src), src, ms))
        q[IP].dst = _dotted(mix(ip4(q[IP].dst), dst, md))
        q[IP].tos = mix(q[IP].tos, tos, mtos)
        q[IP].ttl = mix(q[IP].ttl, ttl, mttl)
        if l4:
            layer = q[TCP] if l4 == "tcp" else q[UDP]
            layer.sport = mix(layer.sport, psrc, psm)
            layer.dport = mix(layer.dport, pdst, pdm)

    assert sink.frames()[0] == expected(pkt, change)


def _dotted(value: int) -> str:
    return ".".join(str(value >> s & 0xFF) for s in (24, 16, 8, 0))


_KEY_TCP = {
    "ethernet": OvsKeyEthernet(b"\0" * 6, b"\0" * 6),
    "ethertype": 0x0800,
    "ipv4": OvsKeyIpv4(0, 0, 6, 0, 0, 0),
    "tcp": OvsKeyPorts(0, 0),
}


def _leaf_actions() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.just("output"), st.integers(0, 5)),
        st.builds(lambda p: ("userspace", {"pid": p, "actions": True}), st.integers(1, 9)),
        st.builds(lambda v: ("set", {"priority": v}), _ip_addr),
        st.builds(lambda v, m: ("set_masked", {"skb_mark": (v & m, m)}), _ip_addr, _ip_addr),
        st.builds(lambda a, b, m: set_ipv4(a, b, ms=m, md=m), _ip_addr, _ip_addr, _ip_addr),
        st.builds(lambda a, b: ("set", {"tcp": OvsKeyPorts(a, b)}), _port, _port),
        st.builds(lambda v, m: ("set_masked", {"ethernet": (
            OvsKeyEthernet(bytes(x & y for x, y in zip(v, m, strict=True)), b"\0" * 6),
            OvsKeyEthernet(m, b"\0" * 6))}),
            st.binary(min_size=6, max_size=6), st.binary(min_size=6, max_size=6)),
        st.builds(lambda t, tci: ("push_vlan", OvsActionPushVlan(t, tci | 0x1000)),
                  st.sampled_from([0x8100, 0x88A8]), st.integers(0, 0xFFFF)),
        st.just(("pop_vlan", True)),
        st.builds(lambda lse: ("push_mpls", OvsActionPushMpls(lse, 0x8847)), _ip_addr),
        st.builds(lambda n: ("trunc", n), st.integers(14, 200)),
        st.builds(lambda r: ("recirc", r), st.integers(0, 10)),
        st.builds(lambda a, b: ("hash", OvsActionHash(a, b)), st.integers(0, 1), _ip_addr),
        st.just(("ct_clear", True)),
    )  # fmt: skip


def _nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    lists = st.lists(children, max_size=4)
    return st.one_of(
        st.builds(lambda p, a: ("sample", {"probability": p, "actions": a}),
                  st.sampled_from([0, 1 << 31, 0xFFFFFFFF]), lists),
        st.builds(lambda a: ("clone", a), lists),
        st.builds(lambda n, g, le: ("check_pkt_len", {"pkt_len": n, "actions_if_greater": g,
                                                      "actions_if_less_equal": le}),
                  st.integers(1, 200), lists, lists),
        st.builds(lambda a: ("dec_ttl", {"action": a}), lists),
    )  # fmt: skip


_actions = st.lists(st.recursive(_leaf_actions(), _nested, max_leaves=12), max_size=8)


_E = Ether(src=MAC1, dst=MAC2)
_BASE_FRAMES = [
    bytes(p)
    for p in (
        tcp4(), udp4(), udp4(chksum=0),
        _E / Dot1Q(vlan=5) / IP() / TCP() / PAYLOAD,
        _E / IPv6() / TCP() / PAYLOAD,
        _E / IPv6() / IPv6ExtHdrFragment(offset=3, nh=6) / PAYLOAD,
        _E / IP(frag=5, proto=6) / PAYLOAD,
        _E / MPLS(s=1) / IP() / UDP(),
        _E / ARP(),
        _E / IP() / SCTP() / SCTPChunkData(data=b"x"),
    )
]  # fmt: skip


@st.composite
def _frames(draw: Any) -> bytes:
    base = draw(st.sampled_from(_BASE_FRAMES))
    frame = bytearray(base)
    for _ in range(draw(st.integers(0, 3))):  # random corruption
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(frame)))
    return bytes(frame[:cut] if draw(st.booleans()) else frame)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=_actions, frame=_frames(), randoms=st.lists(_ip_addr, max_size=5))
def test_random_action_lists_never_raise(actions: list[Any], frame: bytes,
                                         randoms: list[int]) -> None:  # fmt: skip
    if any(a[0] == "drop" for a in actions[:-1]):
        assume(False)
    try:
        validate_actions(actions, _KEY_TCP)
    except NetlinkError as exc:
        assert exc.errno in (errno.EINVAL, errno.EOVERFLOW)
    program = compile_actions(actions)
    sink = Sink(randoms)
    meta = PacketMeta(1)
    before = repr(meta)
    err = program.execute(frame, meta, sink)
    assert err in (0, errno.EINVAL)
    assert repr(meta) == before
    for _, out, m in sink.outputs:
        assert type(out) is bytes and isinstance(m, PacketMeta)
    for out, _m in sink.recircs:
        assert type(out) is bytes
    if program.drops:
        assert not sink.outputs and not sink.upcalls and not sink.recircs


def test_headers_of_short_and_odd_frames() -> None:
    assert parse_headers(b"").l4 == -1
    assert parse_headers(b"\0" * 13).eth_type == 0
    h = parse_headers(bytes(_E0 / Dot1Q() / Dot1Q() / IP() / UDP()))
    assert (h.type_off, h.eth_type, h.l3, h.proto, h.l4) == (20, 0x0800, 22, 17, 42)
    h = parse_headers(bytes(_E0 / IP(flags="MF") / UDP()))
    assert h.frag == FRAG_FIRST and h.l4 == 34
    h = parse_headers(bytes(_E0 / IPv6() / IPv6ExtHdrFragment(nh=17) / UDP()))
    assert h.frag == FRAG_FIRST and h.proto == 17 and h.l4 == 62


def test_odp_action_vectors_compile_or_are_refused_cleanly() -> None:
    """Every action list of OVS's odp.at vectors (parsed by ovsdp's ODP text parser) compiles
    and runs, or is refused with EINVAL / EOPNOTSUPP, never anything else."""
    from pathlib import Path

    from userspace.odp.actions import parse_actions

    lines = (Path(__file__).parent / "vectors" / "odp-actions.txt").read_text().splitlines()
    frame = bytes(norm(tcp4()))
    outcomes: dict[Any, int] = {}
    for line in filter(None, (raw.strip() for raw in lines)):
        actions = parse_actions(line)
        try:
            validate_actions(actions, _KEY_TCP)
        except NetlinkError as exc:
            assert exc.errno in (errno.EINVAL, errno.EOPNOTSUPP), (line, exc)
        try:
            program = compile_actions(actions)
        except NetlinkError as exc:
            assert exc.errno in (errno.EINVAL, errno.EOPNOTSUPP), (line, exc)
            outcomes[exc.errno] = outcomes.get(exc.errno, 0) + 1
            continue
        assert program.execute(frame, PacketMeta(1), Sink()) in (0, errno.EINVAL), line
        outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert outcomes["ok"] >= 60 and outcomes[errno.EOPNOTSUPP] > 0
