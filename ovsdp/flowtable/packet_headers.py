"""Where the headers of an Ethernet frame are, for the actions that rewrite them.

:func:`parse_headers` finds the offsets that packet-modifying actions need (the ethertype field
after the VLAN tags, L3, L4, the IP protocol and the fragment type); :func:`flow_hash` computes
the L4 5-tuple hash that the ``hash`` action uses (upcalls carry the pipeline's hash of the
flow key unless a ``hash`` action set one).  Both never raise: a truncated or
malformed header simply leaves the later fields absent (offset -1).

This is deliberately much smaller than the flow-key extraction in :mod:`.flow_key`: actions need
offsets into the frame, not key fields.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

__all__ = [
    "ETH_P_IP",
    "ETH_P_IPV6",
    "FRAG_FIRST",
    "FRAG_LATER",
    "FRAG_NONE",
    "Headers",
    "flow_hash",
    "jhash_1word",
    "parse_headers",
]

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848

FRAG_NONE = 0
FRAG_FIRST = 1
FRAG_LATER = 2

# IPv6 extension headers walked to find L4 (as ipv6_find_hdr does)
_IPV6_HOPOPTS = 0
_IPV6_ROUTING = 43
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_IPV6_DSTOPTS = 60
_IPV6_EXT = frozenset((_IPV6_HOPOPTS, _IPV6_ROUTING, _IPV6_FRAGMENT, _IPV6_AH, _IPV6_DSTOPTS))

_U16 = struct.Struct(">H")
_unpack_u16 = _U16.unpack_from
_IPV4_PROBE = struct.Struct(">BxHxxHxB")  # ver/ihl, total length, frag_off, proto
_unpack_ipv4 = _IPV4_PROBE.unpack_from
_mk = tuple.__new__  # builds a Headers without the NamedTuple __new__ wrapper


class Headers(NamedTuple):
    """Offsets into one frame.  ``l4`` is -1 when there is no L4 header to touch: not IP, a
    truncated or bad IP header, a later fragment, or an extension-header chain that runs off the
    frame."""

    type_off: int
    """Offset of the ethertype field that names the L3 protocol (12 + 4 per VLAN tag)."""
    eth_type: int
    """That ethertype (0 for 802.3 length frames or frames shorter than 14 bytes)."""
    l3: int
    """Offset of the L3 header (``type_off + 2``)."""
    l4: int
    """Offset of the L4 header or -1."""
    proto: int
    """IP protocol of the L4 header (IPv6: after the extension headers), 0 when not IP."""
    frag: int
    """FRAG_NONE, FRAG_FIRST or FRAG_LATER."""
    end: int
    """End of the IP datagram (IP length, clipped to the frame); the frame length when not IP."""
    routing: bool
    """An IPv6 routing header with segments left: the pseudo-header's destination is not the
    packet's, so a destination rewrite leaves L4 checksums alone."""


def parse_headers(frame: bytes | bytearray) -> Headers:
    """The header offsets of an Ethernet frame (tags 0x8100 and 0x88A8 are VLAN tags)."""
    n = len(frame)
    if n < ETH_HLEN:
        return _mk(Headers, (12, 0, n, -1, 0, FRAG_NONE, n, False))
    off = 12
    eth_type = (frame[12] << 8) | frame[13]
    while (eth_type == ETH_P_8021Q or eth_type == ETH_P_8021AD) and off + 8 <= n:
        off += 4
        eth_type = (frame[off] << 8) | frame[off + 1]
    l3 = off + 2
    if eth_type == ETH_P_IP:
        if l3 + 20 <= n:
            vihl, total, frag_off, proto = _unpack_ipv4(frame, l3)
            ihl = (vihl & 0x0F) << 2
            end = min(n, l3 + total)
            if ihl >= 20 and l3 + ihl <= n:
                if frag_off & 0x1FFF:
                    return _mk(Headers, (off, eth_type, l3, -1, proto, FRAG_LATER, end, False))
                frag = FRAG_FIRST if frag_off & 0x2000 else FRAG_NONE
                return _mk(Headers, (off, eth_type, l3, l3 + ihl, proto, frag, end, False))
            return _mk(Headers, (off, eth_type, l3, -1, proto, FRAG_NONE, end, False))
        return _mk(Headers, (off, eth_type, l3, -1, 0, FRAG_NONE, n, False))
    if eth_type == ETH_P_IPV6:
        if l3 + 40 > n:
            return _mk(Headers, (off, eth_type, l3, -1, 0, FRAG_NONE, n, False))
        return _ipv6(frame, n, off, l3)
    if eth_type < 0x0600:
        eth_type = 0
    return _mk(Headers, (off, eth_type, l3, -1, 0, FRAG_NONE, n, False))


def _ipv6(frame: bytes | bytearray, n: int, off: int, l3: int) -> Headers:
    end = min(n, l3 + 40 + _unpack_u16(frame, l3 + 4)[0])
    nexthdr = frame[l3 + 6]
    p = l3 + 40
    frag = FRAG_NONE
    routing = False
    while nexthdr in _IPV6_EXT:
        if p + 8 > n:
            return _mk(Headers, (off, ETH_P_IPV6, l3, -1, nexthdr, frag, end, routing))
        if nexthdr == _IPV6_FRAGMENT:
            if _unpack_u16(frame, p + 2)[0] & 0xFFF8:
                return _mk(Headers, (off, ETH_P_IPV6, l3, -1, frame[p], FRAG_LATER, end, routing))
            frag = FRAG_FIRST
            hlen = 8
        elif nexthdr == _IPV6_AH:
            hlen = (frame[p + 1] + 2) << 2
        else:
            if nexthdr == _IPV6_ROUTING and frame[p + 3]:
                routing = True
            hlen = (frame[p + 1] + 1) << 3
        nexthdr = frame[p]
        p += hlen
    if p > n:
        return _mk(Headers, (off, ETH_P_IPV6, l3, -1, nexthdr, frag, end, routing))
    return _mk(Headers, (off, ETH_P_IPV6, l3, p, nexthdr, frag, end, routing))


# --- hashing ----------------------------------------------------------------------------------


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def jhash_1word(a: int, initval: int) -> int:
    """Bob Jenkins' lookup3 hash of one 32-bit word, as Linux's ``jhash_1word`` (the datapath
    mixes the packet hash with the ``hash`` action's basis this way)."""
    m = 0xFFFFFFFF
    start = (0xDEADBEEF + 4 + initval) & m
    a = (a + start) & m
    b = start
    c = start
    c ^= b
    c = (c - _rol32(b, 14)) & m
    a ^= c
    a = (a - _rol32(c, 11)) & m
    b ^= a
    b = (b - _rol32(a, 25)) & m
    c ^= b
    c = (c - _rol32(b, 16)) & m
    a ^= c
    a = (a - _rol32(c, 4)) & m
    b ^= a
    b = (b - _rol32(a, 14)) & m
    c ^= b
    c = (c - _rol32(b, 24)) & m
    return c


_L4_PORTS = frozenset((6, 17, 132, 33, 136))  # TCP, UDP, SCTP, DCCP, UDP-Lite


def flow_hash(
    frame: bytes | bytearray, headers: Headers | None = None, symmetric: bool = False
) -> int:
    """A 32-bit hash of the packet's 5-tuple (addresses, IP protocol, L4 ports), never 0.

    ``symmetric`` orders the addresses and the ports so both directions of a connection hash the
    same (the ``sym_l4`` algorithm).  Non-IP frames hash their ethertype; IP fragments and
    protocols without ports hash addresses and protocol only.  The value is the datapath's
    own packet hash (the kernel's is a keyed siphash no one outside can reproduce).
    """
    h = headers if headers is not None else parse_headers(frame)
    l3 = h.l3
    if h.eth_type == ETH_P_IP and l3 + 20 <= len(frame):
        src, dst = bytes(frame[l3 + 12 : l3 + 16]), bytes(frame[l3 + 16 : l3 + 20])
    elif h.eth_type == ETH_P_IPV6 and l3 + 40 <= len(frame):
        src, dst = bytes(frame[l3 + 8 : l3 + 24]), bytes(frame[l3 + 24 : l3 + 40])
    else:
        return zlib.crc32(h.eth_type.to_bytes(2, "big")) or 1
    l4 = h.l4
    if l4 >= 0 and h.proto in _L4_PORTS and l4 + 4 <= len(frame):
        sport, dport = bytes(frame[l4 : l4 + 2]), bytes(frame[l4 + 2 : l4 + 4])
    else:
        sport = dport = b"\0\0"
    if symmetric:
        if dst < src:
            src, dst = dst, src
        if dport < sport:
            sport, dport = dport, sport
    return zlib.crc32(b"".join((src, dst, sport, dport, bytes((h.proto,))))) or 1
