"""VXLAN headers (ovsdp/tunnel/vxlan.py) and outer fragmentation (fragment.py), checked against
scapy: templates build what scapy parses as valid outer Ethernet/IPv4/UDP/VXLAN, with the VNI,
TOS, TTL, DF and checksums asked for; parse() takes scapy-built packets apart and refuses broken
ones with a reason, never an exception; fragments are valid IPv4 fragments scapy reassembles.
"""

from __future__ import annotations

import struct
import warnings

import pytest
from hypothesis import given, settings, strategies as st

from ovsdp.tunnel.fragment import FragmentError, fragment_ipv4
from ovsdp.tunnel.vxlan import (
    OUTER_HLEN,
    SPORT_MAX,
    SPORT_MIN,
    OuterTemplate,
    inner_flow_hash,
    ipv4_checksum,
    parse,
    udp_source_port,
)

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402
from scapy.utils import checksum as scapy_checksum  # noqa: E402

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"
SRC_IP = "192.0.2.1"
DST_IP = "192.0.2.2"
A = 0xC0000201
B = 0xC0000202


def inner_frame(sport: int = 1000, size: int = 18) -> bytes:
    return bytes(
        Ether(src="00:15:5d:00:00:01", dst="00:15:5d:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=sport, dport=2000)
        / Raw(b"p" * size)
    )


def template(**kw: object) -> OuterTemplate:
    args: dict[str, object] = {"vni": 0x123456}
    args.update(kw)
    return OuterTemplate(
        bytes.fromhex(DST_MAC.replace(":", "")),
        bytes.fromhex(SRC_MAC.replace(":", "")),
        A,
        B,
        **args,  # type: ignore[arg-type]
    )


def udp_checksum_ok(frame: bytes) -> bool:
    """The UDP checksum over the whole UDP datagram with its pseudo-header (scapy's RFC 1071
    checksum on raw bytes: scapy's own UDP checksum leaves out an inner frame's padding)."""
    pkt = Ether(frame)
    udp = bytes(pkt[UDP])[: pkt[UDP].len]
    pseudo = frame[26:34] + b"\x00\x11" + struct.pack("!H", len(udp))
    return scapy_checksum(pseudo + udp) in (0, 0xFFFF)


def ip_checksum_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    copy = pkt.copy()
    del copy[IP].chksum
    return Ether(bytes(copy))[IP].chksum == pkt[IP].chksum


# -- encapsulation ----------------------------------------------------------------------------


def test_outer_headers_as_scapy_reads_them() -> None:
    inner = inner_frame()
    out = template(tos=0x28, ttl=17, df=True).build(inner, 0x1234, 40000)
    assert len(out) == OUTER_HLEN + len(inner)
    pkt = Ether(out)
    assert (pkt.src, pkt.dst, pkt.type) == (SRC_MAC, DST_MAC, 0x0800)
    ip = pkt[IP]
    assert (ip.src, ip.dst, ip.proto, ip.tos, ip.ttl, ip.id) == (
        SRC_IP,
        DST_IP,
        17,
        0x28,
        17,
        0x1234,
    )
    assert ip.flags == "DF" and ip.frag == 0 and ip.ihl == 5 and ip.len == len(out) - 14
    assert ip_checksum_ok(out)
    udp = pkt[UDP]
    assert (udp.sport, udp.dport, udp.len, udp.chksum) == (40000, 4789, len(out) - 34, 0)
    vx = pkt[VXLAN]
    assert vx.flags == 0x08 and vx.vni == 0x123456 and vx.reserved1 == 0 and vx.reserved2 == 0
    assert bytes(vx.payload) == inner


def test_defaults_ttl_64_tos_0_no_df_and_the_vports_port() -> None:
    out = template(ttl=0, dst_port=8472).build(inner_frame(), 1, 33000)
    ip = Ether(out)[IP]
    assert (ip.ttl, ip.tos, ip.flags) == (64, 0, 0)
    assert Ether(out)[UDP].dport == 8472


@pytest.mark.parametrize("size", [0, 1, 2, 17, 1000, 1001])
def test_udp_checksum_when_asked(size: int) -> None:
    inner = inner_frame(size=size) + b"\x01" * (size % 2)  # odd and even inner lengths
    out = template(csum=True).build(inner, 7, 50000)
    assert Ether(out)[UDP].chksum != 0
    assert udp_checksum_ok(out)
    assert ip_checksum_ok(out)
    off = template(csum=False).build(inner, 7, 50000)
    assert Ether(off)[UDP].chksum == 0


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=14, max_size=300),
    st.integers(0, 0xFFFF),
    st.integers(SPORT_MIN, SPORT_MAX - 1),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, (1 << 24) - 1),
)
def test_checksums_are_right_for_any_inner_frame(
    inner: bytes, ip_id: int, sport: int, tos: int, ttl: int, vni: int
) -> None:
    out = template(csum=True, tos=tos, ttl=ttl, vni=vni).build(inner, ip_id, sport)
    assert ip_checksum_ok(out)
    assert udp_checksum_ok(out)
    assert parse(out) == (inner, vni, A, B, tos, ttl or 64, True, sport, 4789)


def test_ipv4_checksum_matches_scapy() -> None:
    header = bytes(IP(src="1.2.3.4", dst="5.6.7.8", id=99, ttl=3))[:20]
    zeroed = header[:10] + b"\0\0" + header[12:]
    assert ipv4_checksum(zeroed) == struct.unpack("!H", header[10:12])[0]


def test_source_ports_spread_over_the_range_with_the_flow() -> None:
    ports = {udp_source_port(inner_flow_hash(inner_frame(sport=s))) for s in range(1000, 1256)}
    assert all(SPORT_MIN <= p < SPORT_MAX for p in ports)
    assert len(ports) > 240  # 256 flows: nearly all distinct (not a constant, as Windows had)
    assert min(ports) < 36000 and max(ports) > 58000
    # the same flow always gets the same port; the payload does not matter
    assert inner_flow_hash(inner_frame(sport=7, size=5)) == inner_flow_hash(inner_frame(7, 50))
    assert udp_source_port(0) == SPORT_MIN and udp_source_port(-1) == SPORT_MAX - 1


def test_flow_hash_of_tcp_ipv6_and_other_frames() -> None:
    tcp = [bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=s)) for s in (1, 2)]
    assert inner_flow_hash(tcp[0]) != inner_flow_hash(tcp[1])
    from scapy.layers.inet6 import IPv6

    v6 = [
        bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=s)) for s in (1, 2)
    ]
    assert inner_flow_hash(v6[0]) != inner_flow_hash(v6[1])
    assert inner_flow_hash(b"\x01" * 14) != inner_flow_hash(b"\x02" * 14)


def test_a_vni_must_fit_24_bits() -> None:
    with pytest.raises(ValueError):
        template(vni=1 << 24)


# -- decapsulation: parse -------------------------------------------------------------------


def vxlan_frame(
    inner: bytes | None = None,
    *,
    vni: int = 42,
    flags: int = 0x08,
    chksum: int | None = 0,
    **ip: object,
) -> Packet:
    fields: dict[str, object] = {"src": SRC_IP, "dst": DST_IP, "tos": 4, "ttl": 9}
    fields.update(ip)
    udp = (
        UDP(sport=50001, dport=4789)
        if chksum is None
        else UDP(sport=50001, dport=4789, chksum=chksum)
    )
    return (
        Ether(src=SRC_MAC, dst=DST_MAC)
        / IP(**fields)  # type: ignore[arg-type]
        / udp
        / VXLAN(flags=flags, vni=vni)
        / Ether(inner if inner is not None else inner_frame())
    )


def test_parse_a_scapy_vxlan_packet() -> None:
    inner = inner_frame()
    out = parse(bytes(vxlan_frame(inner)))
    assert out == (inner, 42, A, B, 4, 9, False, 50001, 4789)


def test_parse_with_udp_checksum_and_ethernet_padding() -> None:
    inner = inner_frame(size=0)
    frame = bytes(vxlan_frame(inner, chksum=None))
    assert Ether(frame)[UDP].chksum != 0
    out = parse(frame + b"\0" * 20)  # trailer after the IP datagram: ignored
    assert not isinstance(out, str)
    assert out[0] == inner and out[6] is True


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda f: f[:49], "truncated"),
        (lambda f: f[:60], "truncated"),  # IP total length past the frame's end
        (lambda f: f[:14] + b"\x65" + f[15:], "bad_ip"),  # version 6
        (lambda f: f[:14] + b"\x44" + f[15:], "bad_ip"),  # IHL 4
        (lambda f: f[:24] + bytes([f[24] ^ 1]) + f[25:], "bad_ip_csum"),
        (lambda f: f[:38] + b"\x00\x07" + f[40:], "bad_udp"),  # UDP length below 16
        (lambda f: f[:38] + b"\xff\xff" + f[40:], "bad_udp"),  # UDP length past IP's
        (lambda f: f[:40] + b"\x12\x34" + f[42:], "bad_udp_csum"),
    ],
)
def test_parse_refuses_broken_outer_headers(mangle: object, reason: str) -> None:
    frame = bytes(vxlan_frame())
    assert parse(mangle(frame)) == reason  # type: ignore[operator]


@pytest.mark.parametrize("flags", [0x00, 0x0C, 0x88, 0x09])
def test_parse_refuses_bad_vxlan_flags(flags: int) -> None:
    frame = bytearray(bytes(vxlan_frame()))
    frame[42] = flags  # I flag clear, or a reserved flag bit set
    assert parse(bytes(frame)) == "bad_vxlan"


def test_parse_refuses_reserved_bits() -> None:
    for offset in (43, 44, 45, 49):  # the reserved bytes of the first word, the last byte
        frame = bytearray(bytes(vxlan_frame()))
        frame[offset] = 1
        assert parse(bytes(frame)) == "bad_vxlan", offset


def test_parse_refuses_an_inner_frame_shorter_than_ethernet() -> None:
    pkt = (
        Ether(src=SRC_MAC, dst=DST_MAC)
        / IP(src=SRC_IP, dst=DST_IP)
        / UDP(sport=1, dport=4789, chksum=0)
        / VXLAN(vni=1)
        / Raw(b"x" * 13)
    )
    assert parse(bytes(pkt)) == "truncated"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 200))
def test_parse_never_raises(junk: bytes, cut: int) -> None:
    base = bytes(vxlan_frame())
    for frame in (junk, base[:cut] + junk, base[: 14 + (cut % 40)] + junk):
        result = parse(frame)
        assert isinstance(result, (str, tuple))


# -- outer fragmentation ----------------------------------------------------------------------


def outer(size: int, df: bool = False) -> bytes:
    return template(df=df).build(inner_frame(size=size), 0x4242, 40000)


@pytest.mark.parametrize("mtu", [576, 1280, 1500])
def test_fragments_are_valid_and_scapy_reassembles_them(mtu: int) -> None:
    from scapy.layers.inet import defragment

    whole = outer(4000)
    pieces = fragment_ipv4(whole, mtu)
    assert len(pieces) > 1
    offsets = []
    for piece in pieces:
        assert len(piece) - 14 <= mtu
        assert piece[:14] == whole[:14]
        pkt = Ether(piece)
        ip = pkt[IP]
        assert ip.id == 0x4242 and ip.len == len(piece) - 14 and ip_checksum_ok(piece)
        assert (ip.src, ip.dst, ip.ttl, ip.proto) == (SRC_IP, DST_IP, 64, 17)
        offsets.append((ip.frag * 8, ip.len - 20, bool(ip.flags.MF)))
        if ip.flags.MF:
            assert (ip.len - 20) % 8 == 0
    assert [o for o, _, _ in offsets] == sorted(o for o, _, _ in offsets)
    assert [mf for _, _, mf in offsets] == [True] * (len(pieces) - 1) + [False]
    assert sum(size for _, size, _ in offsets) == len(whole) - 34
    (joined,) = defragment([Ether(p) for p in pieces])
    assert bytes(joined[IP].payload) == whole[34:]


def test_a_packet_that_fits_is_not_fragmented() -> None:
    whole = outer(100)
    assert fragment_ipv4(whole, 1500) == [whole]


def test_no_fragmentation_with_df_or_options_or_a_tiny_mtu() -> None:
    with pytest.raises(FragmentError):
        fragment_ipv4(outer(3000, df=True), 1500)
    with_options = bytes(Ether() / IP(options=b"\x01\x01\x01\x00") / Raw(b"x" * 3000))
    with pytest.raises(FragmentError):
        fragment_ipv4(with_options, 1500)
    with pytest.raises(FragmentError):
        fragment_ipv4(outer(3000), 27)


def test_fragmenting_a_fragment_keeps_its_offset_and_mf() -> None:
    pieces = fragment_ipv4(outer(3000), 1500)
    again = fragment_ipv4(pieces[1], 600)
    assert len(again) == 3
    first_off = Ether(pieces[1])[IP].frag
    ips = [Ether(p)[IP] for p in again]
    assert ips[0].frag == first_off and all(ip.flags.MF for ip in ips)  # the middle one had MF


# -- the endpoint's fast path agrees with parse() ----------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 59), st.integers(0, 255)), max_size=3),
    st.integers(0, 120),
    st.booleans(),
)
def test_receive_agrees_with_parse(mutations: list[tuple[int, int]], cut: int, csum: bool) -> None:
    """Whatever a frame for the VTEP looks like, the endpoint's one-unpack fast path decides as
    vxlan.parse() does: the same inner frame and tunnel fields, or the same drop reason."""
    from ovsdp.flowtable.flow_key import Metadata, TunnelKey, extract_key, metadata_prefix
    from ovsdp.tunnel.endpoint import TunnelEndpoint
    from ovsdp.vswitch.switch import VSwitch

    endpoint = TunnelEndpoint(VSwitch())
    endpoint.set_vtep(B, 24)
    frame = bytearray(bytes(vxlan_frame(dst=DST_IP, chksum=None if csum else 0)))
    for offset, value in mutations:
        frame[offset] = value
    data = bytes(frame[: len(frame) - cut if cut < 60 else len(frame)])
    decapsulated, rest, consumed = endpoint.receive([data], {4789: ("t", 5)})
    assert len(rest) + consumed + len(decapsulated.get("t", [])) == 1
    n = len(data)
    ihl = (data[14] & 15) * 4 if n > 14 else 0
    for_vtep = n >= 34 and data[12:14] == b"\x08\x00" and data[30:34] == B.to_bytes(4, "big")
    is_udp = for_vtep and data[23] == 17
    fragment = is_udp and bool(data[20] & 0x3F or data[21])
    if not is_udp or fragment:
        return  # ordinary traffic, or a fragment held for reassembly (test_reassembly.py)
    if n < 14 + ihl + 4 or data[14 + ihl + 2 : 14 + ihl + 4] != b"\x12\xb5":
        assert rest == [data] or consumed == 1  # not to the VXLAN port (or truncated)
        return
    expected = parse(data)
    if isinstance(expected, str):
        assert consumed == 1 and endpoint.stats()[expected] == 1
        return
    inner, vni, src, dst, tos, ttl, has_csum, sport, dport = expected
    tunnel = TunnelKey(vni, src, dst, tos, ttl, csum=has_csum, tp_src=sport, tp_dst=dport)
    key = extract_key(inner, metadata_prefix(Metadata(5, tunnel=tunnel)))
    assert decapsulated == {"t": [(key, inner)]}
