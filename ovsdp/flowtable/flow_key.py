"""Packet -> flat flow key, following the Linux datapath's key extraction (net/openvswitch/flow.c).

:func:`extract_key` parses an Ethernet frame into the fixed layout of :mod:`.layout`, behind a
metadata prefix the caller computed once per port (:func:`~.layout.metadata_prefix`).  It never
raises: truncated or malformed headers stop extraction at the last valid layer, as the kernel
does:

* frames shorter than 14 bytes: the kernel drops them (key extraction fails); the key returned
  here has ``mac_proto`` 0 and ``eth_type`` 0, which no valid flow matches -- callers should drop
  such frames (``len(frame) < ETH_HLEN``);
* a VLAN tag is parsed only if the tag and the next ethertype are complete (else ``eth_type`` is
  the TPID); at most two tags (outer and "cvlan"), the TCI gets the 0x1000 "present" bit;
* ethertypes below 0x0600 are 802.3 lengths: LLC/SNAP with OUI 0 yields the SNAP ethertype (and
  L3 starts after the SNAP header), anything else yields 0x0004;
* IPv4: only the IHL is checked (>= 5 and within the frame; total length and version are not);
  a bad header leaves all IP fields zero; later fragments have no L4;
* IPv6: extension headers are walked like ``ipv6_find_hdr`` (hop-by-hop, routing, fragment,
  destination options, AH); a walk that runs off the frame leaves ``ip_proto`` 59; later
  fragments get ``ip_proto`` 44 and no L4;
* L4: a TCP header needs its full data offset, UDP 8 bytes, SCTP 12, ICMP/ICMPv6 8, else the L4
  fields stay zero; TCP also yields ``tcp_flags``; ICMPv6 NS/NA with code 0 yield ND target and
  the link-layer address options (a repeated option clears all ND fields);
* ARP/RARP fills the ARP fields only for Ethernet/IPv4 ARP with a complete 28-byte header;
* MPLS keeps up to three label stack entries; a stack that runs off the frame before its
  bottom-of-stack entry leaves no labels (``mpls_labels`` 0).

The rest of the public API (layout, metadata, netlink conversion) is re-exported here.
"""

from __future__ import annotations

import struct

from .key_netlink import (
    attrs_to_key,
    flow_to_attrs,
    key_to_attrs,
    mask_to_attrs,
    masked_key_attrs,
    metadata_from_attrs,
)
from .layout import (
    ETH_HLEN,
    FIELD_STRUCTS,
    FIELDS,
    KEY_SIZE,
    NO_IN_PORT,
    PREFIX_SIZE,
    Field,
    Metadata,
    TunnelKey,
    exact_mask,
    get_field,
    key_metadata,
    mask_key,
    metadata_prefix,
    port_prefix,
    set_field,
    with_prefix,
)

__all__ = [
    "ETH_HLEN",
    "FIELDS",
    "FIELD_STRUCTS",
    "KEY_SIZE",
    "NO_IN_PORT",
    "PREFIX_SIZE",
    "Field",
    "Metadata",
    "TunnelKey",
    "attrs_to_key",
    "exact_mask",
    "extract_key",
    "flow_to_attrs",
    "get_field",
    "key_metadata",
    "key_to_attrs",
    "mask_key",
    "mask_to_attrs",
    "masked_key_attrs",
    "metadata_from_attrs",
    "metadata_prefix",
    "port_prefix",
    "set_field",
    "with_prefix",
]

# --- precompiled structs (formats follow layout.FULL_FORMAT after the prefix) ---------------

# Ethernet + 20-byte IPv4 + the first 14 bytes of TCP/UDP: macs, ethertype, ver/ihl, tos,
# frag_off, ttl, proto, src+dst, ports, TCP data offset and flags
_ETH_IP4_L4 = struct.Struct("!12sHBB4xHBB2x8sHH8xH")
# a whole key for an untagged IPv4 packet, prefix included
_KEY_IP4 = struct.Struct(f"!{PREFIX_SIZE}s12s8xHBBBBB8s28xHHH28x")
# the same behind one 802.1Q tag: macs, TPID, TCI, ethertype, then as above
_ETH_VLAN_IP4_L4 = struct.Struct("!12sHHHBB4xHBB2x8sHH8xH")
_KEY_VLAN_IP4 = struct.Struct(f"!{PREFIX_SIZE}s12sHH4xHBBBBB8s28xHHH28x")
# Ethernet + IPv6 + the first 14 bytes of TCP/UDP: macs, ethertype, version/class/label, next
# header, hop limit, src+dst, ports, TCP data offset and flags
_ETH_IP6_L4 = struct.Struct("!12sHI2xBB32sHH8xH")
_KEY_IP6 = struct.Struct(f"!{PREFIX_SIZE}s12s8xHBBBBB32sIHHH28x")
_ETH = struct.Struct("!12sH")
_VLAN = struct.Struct("!HH")
_SNAP = struct.Struct("!BBB3sH")
_HEAD = struct.Struct(f"!{PREFIX_SIZE}s12sHHHHHB")
_IP4 = struct.Struct("!BB4xHBB2x8s")
_IP6 = struct.Struct("!I2xBB32s")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_TCP = struct.Struct("!HH8xH")
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_ND_ADDR = struct.Struct("!6s")
_ND_TARGET = struct.Struct("!16s")

_TAIL_V4 = struct.Struct("!BBBB8s28xHHH28x")
_TAIL_V6 = struct.Struct("!BBBB32sIHHH16s6s6s")
_TAIL_ARP = struct.Struct("!B3x4s4s6s6s16x6x28x")
_TAIL_MPLS = struct.Struct("!4xIIIB23x6x28x")
_TAIL_SIZE = KEY_SIZE - FIELDS["ip_proto"].offset
_TAIL_NONE = bytes(_TAIL_SIZE)
_RUNT = bytes(KEY_SIZE - PREFIX_SIZE)

assert _KEY_IP4.size == _KEY_VLAN_IP4.size == _KEY_IP6.size == KEY_SIZE
assert _HEAD.size + _TAIL_SIZE == KEY_SIZE
assert _TAIL_V4.size == _TAIL_V6.size == _TAIL_ARP.size == _TAIL_MPLS.size == _TAIL_SIZE

_ZERO6 = bytes(6)
_ZERO16 = bytes(16)
_ZERO_OUI = bytes(3)
# next-header values ipv6_find_hdr treats as extension headers (59, "no next header", stops it)
_IP6_EXT = frozenset((0, 43, 44, 51, 60))


def extract_key(frame: bytes | bytearray | memoryview, prefix: bytes) -> bytes:
    """The flat flow key of an Ethernet frame, behind ``prefix`` (see module docstring).

    ``prefix`` is :func:`~.layout.metadata_prefix` of the packet's metadata (exactly
    :data:`~.layout.PREFIX_SIZE` bytes).  Never raises.
    """
    n = len(frame)
    if n >= 54 and frame[14] == 0x45:
        # fast path: untagged IPv4 without options, TCP or UDP, not a later fragment
        macs, etype, _vhl, tos, frag_off, ttl, proto, addrs, sp, dp, word = _ETH_IP4_L4.unpack_from(
            frame
        )
        if etype == 0x0800 and not frag_off & 0x1FFF:
            if proto == 6:
                doff = word >> 12
                if doff >= 5 and n >= 34 + (doff << 2):
                    frag = 1 if frag_off & 0x2000 else 0
                    return _KEY_IP4.pack(
                        prefix, macs, 0x0800, 1, 6, tos, ttl, frag, addrs, sp, dp, word & 0xFFF
                    )
            elif proto == 17:
                frag = 1 if frag_off & 0x2000 else 0
                return _KEY_IP4.pack(prefix, macs, 0x0800, 1, 17, tos, ttl, frag, addrs, sp, dp, 0)
    elif n >= 74 and frame[12] == 0x86 and frame[13] == 0xDD:
        # fast path: untagged IPv6 with TCP or UDP right behind the fixed header
        macs, _et, vtcfl, nxt, hlim, addrs, sp, dp, word = _ETH_IP6_L4.unpack_from(frame)
        tclass = (vtcfl >> 20) & 0xFF
        label = vtcfl & 0xFFFFF
        if nxt == 6:
            doff = word >> 12
            if doff >= 5 and n >= 54 + (doff << 2):
                flags = word & 0xFFF
                return _KEY_IP6.pack(prefix, macs, 0x86DD, 1, 6, tclass, hlim, 0, addrs, label,
                                     sp, dp, flags)  # fmt: skip
        elif nxt == 17:
            return _KEY_IP6.pack(prefix, macs, 0x86DD, 1, 17, tclass, hlim, 0, addrs, label,
                                 sp, dp, 0)  # fmt: skip
    elif n >= 58 and frame[12] == 0x81 and frame[13] == 0 and frame[18] == 0x45:
        # fast path: one 802.1Q tag, then as the first fast path
        macs, _tpid, tci, etype, _vhl, tos, frag_off, ttl, proto, addrs, sp, dp, word = (
            _ETH_VLAN_IP4_L4.unpack_from(frame)
        )
        if etype == 0x0800 and not frag_off & 0x1FFF:
            frag = 1 if frag_off & 0x2000 else 0
            tci |= 0x1000
            if proto == 6:
                doff = word >> 12
                if doff >= 5 and n >= 38 + (doff << 2):
                    flags = word & 0xFFF
                    return _KEY_VLAN_IP4.pack(prefix, macs, 0x8100, tci, 0x0800, 1, 6, tos, ttl,
                                              frag, addrs, sp, dp, flags)  # fmt: skip
            elif proto == 17:
                return _KEY_VLAN_IP4.pack(prefix, macs, 0x8100, tci, 0x0800, 1, 17, tos, ttl, frag,
                                          addrs, sp, dp, 0)  # fmt: skip
    if n < 14:
        return prefix + _RUNT
    return _extract(frame, n, prefix)


def _extract(frame: bytes | bytearray | memoryview, n: int, prefix: bytes) -> bytes:
    """The general path, for any frame of at least 14 bytes."""
    macs, etype = _ETH.unpack_from(frame)
    off = 14
    vtpid = vtci = ctpid = ctci = 0
    if (etype == 0x8100 or etype == 0x88A8) and n >= 18:
        tci, nxt = _VLAN.unpack_from(frame, 14)
        vtpid, vtci, etype, off = etype, tci | 0x1000, nxt, 18
        if (etype == 0x8100 or etype == 0x88A8) and n >= 22:
            tci, nxt = _VLAN.unpack_from(frame, 18)
            ctpid, ctci, etype, off = etype, tci | 0x1000, nxt, 22
    if etype < 0x0600:
        # an 802.3 length field: LLC, possibly SNAP with a real ethertype behind it
        if n - off < 8:
            etype = 0x0004
        else:
            dsap, ssap, _ctrl, oui, snap_type = _SNAP.unpack_from(frame, off)
            if dsap != 0xAA or ssap != 0xAA or oui != _ZERO_OUI:
                etype = 0x0004
            else:
                off += 8
                etype = snap_type if snap_type >= 0x0600 else 0x0004
    if etype == 0x0800:
        tail = _ipv4(frame, n, off)
    elif etype == 0x86DD:
        tail = _ipv6(frame, n, off)
    elif etype == 0x0806 or etype == 0x8035:
        tail = _arp(frame, n, off)
    elif etype == 0x8847 or etype == 0x8848:
        tail = _mpls(frame, n, off)
    else:
        tail = _TAIL_NONE
    return _HEAD.pack(prefix, macs, vtpid, vtci, ctpid, ctci, etype, 1) + tail


def _ip4_l4(frame: bytes | bytearray | memoryview, n: int, l4: int, proto: int) -> tuple[int, int]:
    """Ports (or ICMP type/code) of a non-TCP IPv4 packet; TCP is handled by the callers."""
    if proto == 17:
        if n >= l4 + 8:
            return _PORTS.unpack_from(frame, l4)
    elif proto == 132:
        if n >= l4 + 12:
            return _PORTS.unpack_from(frame, l4)
    elif proto == 1:
        if n >= l4 + 8:
            return frame[l4], frame[l4 + 1]
    return 0, 0


def _ipv4(frame: bytes | bytearray | memoryview, n: int, off: int) -> bytes:
    if n < off + 20:
        return _TAIL_NONE
    vhl, tos, frag_off, ttl, proto, addrs = _IP4.unpack_from(frame, off)
    hl = (vhl & 15) << 2
    if hl < 20 or n < off + hl:
        return _TAIL_NONE
    if frag_off & 0x1FFF:
        return _TAIL_V4.pack(proto, tos, ttl, 2, addrs, 0, 0, 0)
    frag = 1 if frag_off & 0x2000 else 0
    l4 = off + hl
    if proto == 6:
        return _TAIL_V4.pack(proto, tos, ttl, frag, addrs, *_tcp(frame, n, l4))
    sp, dp = _ip4_l4(frame, n, l4, proto)
    return _TAIL_V4.pack(proto, tos, ttl, frag, addrs, sp, dp, 0)


def _tcp(frame: bytes | bytearray | memoryview, n: int, l4: int) -> tuple[int, int, int]:
    if n >= l4 + 20:
        sp, dp, word = _TCP.unpack_from(frame, l4)
        doff = (word >> 12) << 2
        if doff >= 20 and n >= l4 + doff:
            return sp, dp, word & 0xFFF
    return 0, 0, 0


def _ipv6(frame: bytes | bytearray | memoryview, n: int, off: int) -> bytes:
    if n < off + 40:
        return _TAIL_NONE
    vtcfl, nxt, hlim, addrs = _IP6.unpack_from(frame, off)
    tclass = (vtcfl >> 20) & 0xFF
    label = vtcfl & 0xFFFFF
    # walk the extension headers like the kernel's ipv6_find_hdr(target = -1)
    start = off + 40
    fragment = False
    proto = -1
    while True:
        if nxt not in _IP6_EXT:  # an upper-layer protocol, or 59 "no next header"
            proto = nxt
            break
        if start + 2 > n:
            break
        h_next = frame[start]
        if nxt == 44:
            fragment = True
            if start + 4 > n:
                break
            if _U16.unpack_from(frame, start + 2)[0] & 0xFFF8:
                # a later fragment: only the fragment header's next header counts
                if h_next in _IP6_EXT:
                    break
                return _TAIL_V6.pack(
                    44, tclass, hlim, 2, addrs, label, 0, 0, 0, _ZERO16, _ZERO6, _ZERO6
                )
            hdrlen = 8
        elif nxt == 51:
            hdrlen = (frame[start + 1] + 2) << 2
        else:
            if nxt == 43 and start + 4 > n:
                break
            hdrlen = (frame[start + 1] + 1) << 3
        nxt = h_next
        start += hdrlen
    frag = 1 if fragment else 0
    if proto < 0:
        # the walk ran off the frame: the kernel keeps the IPv6 fields, proto "no next header"
        return _TAIL_V6.pack(59, tclass, hlim, frag, addrs, label, 0, 0, 0, _ZERO16, _ZERO6, _ZERO6)
    l4 = start
    sp = dp = flags = 0
    target = _ZERO16
    sll = tll = _ZERO6
    if proto == 6:
        sp, dp, flags = _tcp(frame, n, l4)
    elif proto == 17:
        if n >= l4 + 8:
            sp, dp = _PORTS.unpack_from(frame, l4)
    elif proto == 132:
        if n >= l4 + 12:
            sp, dp = _PORTS.unpack_from(frame, l4)
    elif proto == 58 and n >= l4 + 8:
        sp = frame[l4]
        dp = frame[l4 + 1]
        if dp == 0 and (sp == 135 or sp == 136) and n - l4 >= 24:
            target, sll, tll = _nd(frame, n, l4)
    return _TAIL_V6.pack(proto, tclass, hlim, frag, addrs, label, sp, dp, flags, target, sll, tll)


def _nd(frame: bytes | bytearray | memoryview, n: int, l4: int) -> tuple[bytes, bytes, bytes]:
    """Target and link-layer address options of a neighbour solicitation/advertisement."""
    target = _ND_TARGET.unpack_from(frame, l4 + 8)[0]
    sll = tll = _ZERO6
    o = l4 + 24
    left = n - o
    while left >= 8:
        opt_len = frame[o + 1] << 3
        if opt_len == 0 or opt_len > left:
            break
        if opt_len == 8:
            opt_type = frame[o]
            if opt_type == 1:
                if sll != _ZERO6:
                    return _ZERO16, _ZERO6, _ZERO6
                sll = _ND_ADDR.unpack_from(frame, o + 2)[0]
            elif opt_type == 2:
                if tll != _ZERO6:
                    return _ZERO16, _ZERO6, _ZERO6
                tll = _ND_ADDR.unpack_from(frame, o + 2)[0]
        left -= opt_len
        o += opt_len
    return target, sll, tll


def _arp(frame: bytes | bytearray | memoryview, n: int, off: int) -> bytes:
    if n < off + 28:
        return _TAIL_NONE
    hrd, pro, hln, pln, op, sha, sip, tha, tip = _ARP.unpack_from(frame, off)
    if hrd != 1 or pro != 0x0800 or hln != 6 or pln != 4:
        return _TAIL_NONE
    return _TAIL_ARP.pack(op if op <= 0xFF else 0, sip, tip, sha, tha)


def _mpls(frame: bytes | bytearray | memoryview, n: int, off: int) -> bytes:
    lses = [0, 0, 0]
    count = 0
    while True:
        if n < off + 4:
            # the kernel leaves num_labels_mask 0 when the stack is cut short
            return _TAIL_NONE
        lse = _U32.unpack_from(frame, off)[0]
        if count < 3:
            lses[count] = lse
        count += 1
        off += 4
        if lse & 0x100:
            break
    return _TAIL_MPLS.pack(lses[0], lses[1], lses[2], (1 << min(count, 3)) - 1)
