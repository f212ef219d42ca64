"""VXLAN over IPv4/UDP (RFC 7348): outer header templates for encapsulation, parsing for decap.

Outer headers are Ethernet (14) + IPv4 without options (20) + UDP (8) + VXLAN (8): 50 bytes.
An :class:`OuterTemplate` holds everything that is constant for one tunnel destination (MACs,
addresses, TOS, TTL, DF, ports, VNI) and the partial sums of both checksums, so building one
packet's headers is one ``struct.pack`` plus a little integer arithmetic.

Checksums use the identity of :mod:`ovsdp.flowtable.checksum`: the ones'-complement sum of 16-bit
big-endian words is, modulo 0xFFFF, the words read as one big-endian integer; so the IPv4 header
checksum and the UDP checksum (with its pseudo-header) are integer arithmetic done in C.

:func:`parse` validates a frame addressed to the VTEP and returns the inner frame and the outer
fields that become the tunnel metadata, or the reason it is dropped.  It never raises.
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "ETH_HLEN",
    "OUTER_HLEN",
    "OUTER_STRUCT",
    "SPORT_MAX",
    "SPORT_MIN",
    "VXLAN_PORT",
    "OuterTemplate",
    "inner_flow_hash",
    "ipv4_checksum",
    "parse",
    "udp_source_port",
]

ETH_HLEN = 14
IPV4_HLEN = 20
UDP_HLEN = 8
VXLAN_HLEN = 8
OUTER_HLEN = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN
"""Bytes VXLAN adds in front of the inner Ethernet frame."""

VXLAN_PORT = 4789
VXLAN_FLAGS_I = 0x08000000
"""The first word of a valid VXLAN header: the I flag, every reserved bit clear."""

IPPROTO_UDP = 17
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET = 0x1FFF
DEFAULT_TTL = 64

SPORT_MIN = 32768
SPORT_MAX = 61000
"""UDP source ports are in [SPORT_MIN, SPORT_MAX): Linux's default ephemeral range 32768-60999,
which Linux's udp_flow_src_port also uses for tunnels."""

_OUTER = OUTER_STRUCT = struct.Struct("!16sHHIH8sHHHHQ")
# eth dst+src+type and the IPv4 version/IHL/TOS word | total length | id | flags+offset, TTL and
# protocol | header checksum | source and destination | UDP source | destination | length |
# checksum | VXLAN flags, VNI and reserved byte
assert _OUTER.size == OUTER_HLEN

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_VXLAN = struct.Struct("!II")
_PORTS_PROTOS = frozenset((6, 17, 132))  # TCP, UDP, SCTP


def ipv4_checksum(header: bytes | bytearray | memoryview) -> int:
    """The checksum field for an IPv4 header whose own checksum field reads as zero."""
    total = int.from_bytes(header, "big") % 0xFFFF
    return 0xFFFF - total if total else 0  # a header is never all zero: sum 0 means 0xFFFF


def udp_source_port(flow_hash: int) -> int:
    """A UDP source port in [SPORT_MIN, SPORT_MAX) from a flow hash (any integer): the hash
    modulo the range's width."""
    return SPORT_MIN + flow_hash % (SPORT_MAX - SPORT_MIN)


def inner_flow_hash(frame: bytes) -> int:
    """A 32-bit hash of the inner packet's flow: IPv4/IPv6 addresses, protocol and ports where
    they are present, else the Ethernet header.  Different inner flows give different outer
    source ports, so ECMP in the underlay spreads them."""
    n = len(frame)
    if n >= 34 and frame[12] == 0x08 and frame[13] == 0x00:
        if frame[23] in _PORTS_PROTOS and not (frame[20] & 0x3F or frame[21]):
            ihl = (frame[14] & 15) << 2  # not a fragment: the ports too
            if ihl == 20:
                return zlib.crc32(frame[26:38], frame[23])
            return zlib.crc32(frame[14 + ihl : 18 + ihl], zlib.crc32(frame[26:34], frame[23]))
        return zlib.crc32(frame[26:34], frame[23])
    if n >= 58 and frame[12] == 0x86 and frame[13] == 0xDD:
        return zlib.crc32(frame[22:58], frame[20])
    return zlib.crc32(frame[:14])


class OuterTemplate:
    """The outer headers towards one tunnel destination, with their constant parts packed.

    :meth:`build` adds the per-packet fields (lengths, IP id, UDP source port, checksums).
    """

    __slots__ = (
        "addrs",
        "csum",
        "df",
        "dst_ip",
        "dst_port",
        "eth_ver_tos",
        "fast",
        "flags_ttl_proto",
        "ip_sum",
        "pseudo_sum",
        "src_ip",
        "vxlan",
        "vxlan_sum",
    )

    def __init__(
        self,
        dst_mac: bytes,
        src_mac: bytes,
        src_ip: int,
        dst_ip: int,
        *,
        vni: int,
        dst_port: int = VXLAN_PORT,
        tos: int = 0,
        ttl: int = DEFAULT_TTL,
        df: bool = False,
        csum: bool = False,
    ) -> None:
        if not 0 <= vni < 1 << 24:
            raise ValueError(f"VNI {vni} does not fit 24 bits")
        self.src_ip = src_ip
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.df = df
        self.csum = csum
        ver_tos = 0x4500 | (tos & 0xFF)
        self.eth_ver_tos = dst_mac + src_mac + b"\x08\x00" + ver_tos.to_bytes(2, "big")
        self.flags_ttl_proto = ((IP_DF if df else 0) << 16) | ((ttl or DEFAULT_TTL) << 8) | 17
        self.addrs = src_ip.to_bytes(4, "big") + dst_ip.to_bytes(4, "big")
        # the IPv4 header's sum without total length and id (added per packet)
        self.ip_sum = ver_tos + self.flags_ttl_proto + src_ip + dst_ip
        self.vxlan = (VXLAN_FLAGS_I << 32) | (vni << 8)
        # the UDP checksum's constant part: pseudo-header addresses and protocol, the UDP
        # destination port and the VXLAN header (length and source port are added per packet)
        self.pseudo_sum = src_ip + dst_ip + IPPROTO_UDP + dst_port
        self.vxlan_sum = self.vxlan
        # the constant fields, for builders that inline build() (the packet path's bulk encap):
        # OUTER_STRUCT.pack(eth_ver_tos, total, id, flags_ttl_proto, IP checksum (ip_sum with
        # total and id added), addrs, sport, dst_port, UDP length, 0, vxlan)
        self.fast = (
            self.eth_ver_tos,
            self.flags_ttl_proto,
            self.addrs,
            dst_port,
            self.vxlan,
            self.ip_sum,
        )

    def build(self, inner: bytes, ip_id: int, sport: int) -> bytes:
        """One outer frame around ``inner`` (an Ethernet frame)."""
        udp_len = len(inner) + 16
        total = udp_len + 20
        s = (self.ip_sum + total + ip_id) % 0xFFFF
        ucsum = 0
        if self.csum:
            # pseudo-header (its UDP length) + UDP header (source port, length) + VXLAN + inner
            data = int.from_bytes(inner, "big")
            if len(inner) & 1:
                data <<= 8
            t = (self.pseudo_sum + self.vxlan_sum + 2 * udp_len + sport + data) % 0xFFFF
            ucsum = 0xFFFF - t if t else 0xFFFF
        return (
            _OUTER.pack(
                self.eth_ver_tos,
                total,
                ip_id,
                self.flags_ttl_proto,
                0xFFFF - s if s else 0,
                self.addrs,
                sport,
                self.dst_port,
                udp_len,
                ucsum,
                self.vxlan,
            )
            + inner
        )


# -- decapsulation ------------------------------------------------------------------------------

TRUNCATED = "truncated"
BAD_IP = "bad_ip"
BAD_IP_CSUM = "bad_ip_csum"
BAD_UDP = "bad_udp"
BAD_UDP_CSUM = "bad_udp_csum"
BAD_VXLAN = "bad_vxlan"

Outer = tuple[bytes, int, int, int, int, int, bool, int, int]
"""What :func:`parse` returns for a valid packet: (inner frame, VNI, outer source, outer
destination, TOS, TTL, UDP checksum present, UDP source port, UDP destination port)."""


def parse(frame: bytes) -> Outer | str:
    """Validate the outer IPv4/UDP/VXLAN headers of an unfragmented frame (the caller checked
    that it is IPv4 to the VTEP and UDP); the inner frame and outer fields, or a drop reason.

    Checked: IPv4 version and header length, total length within the frame (Ethernet padding
    after it is ignored), the header checksum; the UDP length within the IP payload and the UDP
    checksum when it is not zero; a VXLAN header with the I flag and every reserved bit clear
    (as Linux, which drops packets with flags it does not know); an inner frame of at least an
    Ethernet header.
    """
    n = len(frame)
    if n < OUTER_HLEN:
        return TRUNCATED
    vhl, tos, total, _id, _frag, ttl, _proto, _csum, src, dst = _IP4.unpack_from(frame, 14)
    ihl = (vhl & 15) << 2
    if vhl >> 4 != 4 or ihl < IPV4_HLEN:
        return BAD_IP
    if total < ihl + 16 or 14 + total > n:
        return TRUNCATED if 14 + total > n else BAD_IP
    if int.from_bytes(frame[14 : 14 + ihl], "big") % 0xFFFF:
        return BAD_IP_CSUM
    l4 = 14 + ihl
    sport, dport, udp_len, ucsum = _UDP.unpack_from(frame, l4)
    if udp_len < UDP_HLEN + VXLAN_HLEN or udp_len > total - ihl:
        return BAD_UDP
    end = l4 + udp_len
    src_ip = int.from_bytes(src, "big")
    dst_ip = int.from_bytes(dst, "big")
    if ucsum:
        data = int.from_bytes(frame[l4:end], "big")
        if udp_len & 1:
            data <<= 8
        if (src_ip + dst_ip + IPPROTO_UDP + udp_len + data) % 0xFFFF:
            return BAD_UDP_CSUM
    flags, vni = _VXLAN.unpack_from(frame, l4 + 8)
    if flags != VXLAN_FLAGS_I or vni & 0xFF:
        return BAD_VXLAN
    if udp_len < UDP_HLEN + VXLAN_HLEN + ETH_HLEN:
        return TRUNCATED
    inner = frame[l4 + 16 : end]
    return inner, vni >> 8, src_ip, dst_ip, tos, ttl, ucsum != 0, sport, dport
