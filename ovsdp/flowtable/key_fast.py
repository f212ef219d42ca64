"""Fast paths of :func:`.key_netlink.attrs_to_key` and :func:`.key_netlink.metadata_from_attrs`.

:mod:`.key_netlink` keeps the straightforward implementation of the kernel's flow-key rules (the
*reference*, ``_attrs_to_key_reference``); this module does the same work faster for the shapes
userspace actually sends, and answers ``None`` ("not handled here") for everything else.  The
caller then runs the reference, which produces the result or the exact error.  The contract of
every function here:

* a result is returned only when the reference would succeed with exactly that result;
* any input that is unusual -- an error, a value of another type than the codec decodes to
  (``bool``, ``float``, ``bytearray``, objects with ``__index__``...), an attribute left to the
  reference (IPv6 tunnel endpoints, tunnel options, conntrack tuples, unsupported attributes), a
  truncated VLAN tag, two headers writing the same fields -- gives ``None``; none of them is
  answered by a guess.  Exceptions count as ``None`` too.

Two tiers, tried in order by :func:`fast_attrs_to_key`:

* **shape functions**: a put's KEY and MASK come in few layouts (the same attribute names in the
  same order for every TCP flow).  Once a layout recurs, Python source is generated for exactly
  that layout and compiled (as ``dataclasses`` and :mod:`ovsdp.netlink.shapes` do): one
  ``values()`` unpacking per level, the layout's checks spelled out, one ``struct`` pack of the
  whole flat key or mask.  Keyed by the top-level names; nested levels (ENCAP, TUNNEL) are
  checked inside, several variants per top level;
* **generic loops** (:func:`generic_attrs_to_key`): one dict lookup per attribute gives its
  presence bit (``1 << OVS_KEY_ATTR_*``) and a kind; values are packed straight into a
  ``bytearray``; presence is an int bitmask.

Shared by both: a mask attribute is "all zero, hence absent" when its values are exact ``int``
zeros or ``bytes`` of NULs (so ``0.0``, ``False`` or an ``__index__`` object, which compare equal
to 0 but which the reference treats otherwise, go to the loops or the reference); without a MASK
the exact mask is assembled from the key's presence bits (precomputed all-ones flat masks per
attribute, OR-ed together and cached by the few facts they depend on) instead of encoding the key,
setting every payload byte and decoding it again; ``match_validate`` is a few bit operations on
the presence masks.  Nothing is cached by the values of a key or mask: masks repeat, but an exact
cache key (``0`` and ``0.0`` hash alike) would cost as much as parsing the mask.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from ovsdp.netlink import schema

from .layout import (
    _SEQUENTIAL,
    AF_INET,
    ETH_P_802_2,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_P_MPLS_MC,
    ETH_P_MPLS_UC,
    ETH_P_NSH,
    ETH_P_RARP,
    FIELDS,
    FRAG_LATER,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    KEY_SIZE,
    MAC_PROTO_ETHERNET,
    MAC_PROTO_NONE,
    MPLS_LABEL_DEPTH,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    NO_IN_PORT,
    TUN_F_CSUM,
    TUN_F_DF,
    TUN_F_KEY,
    TUN_F_OAM,
    VLAN_CFI,
    VLAN_TPIDS,
    Metadata,
    TunnelKey,
)

__all__ = [
    "clear_shapes",
    "fast_attrs_to_key",
    "fast_metadata_from_attrs",
    "generic_attrs_to_key",
    "install_shapes",
]

# --- presence bits ----------------------------------------------------------------------------

_NUMBERS: dict[str, int] = dict(schema.ovs_key.numbers)
_BIT: dict[str, int] = {name: 1 << number for name, number in _NUMBERS.items()}
"""Attribute name -> its presence bit (``1 << OVS_KEY_ATTR_*``)."""

B_ENCAP = _BIT["encap"]
B_PRIORITY = _BIT["priority"]
B_IN_PORT = _BIT["in_port"]
B_ETHERNET = _BIT["ethernet"]
B_VLAN = _BIT["vlan"]
B_ETHERTYPE = _BIT["ethertype"]
B_IPV4 = _BIT["ipv4"]
B_IPV6 = _BIT["ipv6"]
B_TCP = _BIT["tcp"]
B_UDP = _BIT["udp"]
B_ICMP = _BIT["icmp"]
B_ICMPV6 = _BIT["icmpv6"]
B_ARP = _BIT["arp"]
B_ND = _BIT["nd"]
B_TUNNEL = _BIT["tunnel"]
B_SCTP = _BIT["sctp"]
B_TCP_FLAGS = _BIT["tcp_flags"]
B_MPLS = _BIT["mpls"]
B_CT_ORIG4 = _BIT["ct_orig_tuple_ipv4"]
B_CT_ORIG6 = _BIT["ct_orig_tuple_ipv6"]
B_NSH = _BIT["nsh"]

_L3L4 = 0
for _name in (
    "ipv4",
    "ct_orig_tuple_ipv4",
    "ipv6",
    "ct_orig_tuple_ipv6",
    "tcp",
    "tcp_flags",
    "udp",
    "sctp",
    "icmp",
    "icmpv6",
    "arp",
    "nd",
    "mpls",
    "nsh",
):
    _L3L4 |= _BIT[_name]
_NOT_L3L4 = ~_L3L4
_ALWAYS_ALLOWED = B_TUNNEL | B_IN_PORT | B_ETHERTYPE
_UNION = B_IPV4 | B_IPV6 | B_ARP | B_MPLS  # headers sharing ip_proto / the L3 union
_PORTS_GROUP = B_TCP | B_UDP | B_SCTP | B_ICMP | B_ICMPV6  # headers sharing tp_src / tp_dst
_VLAN_LEVEL = B_ETHERTYPE | B_VLAN | B_ENCAP
_NOT_VLAN_LEVEL = ~_VLAN_LEVEL
_L4_V4 = {
    IPPROTO_TCP: B_TCP | B_TCP_FLAGS,
    IPPROTO_UDP: B_UDP,
    IPPROTO_SCTP: B_SCTP,
    IPPROTO_ICMP: B_ICMP,
}
_L4_V6 = {
    IPPROTO_TCP: B_TCP | B_TCP_FLAGS,
    IPPROTO_UDP: B_UDP,
    IPPROTO_SCTP: B_SCTP,
    IPPROTO_ICMPV6: B_ICMPV6,
}
_ND_TYPES = (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT)
_ARP_TYPES = (ETH_P_ARP, ETH_P_RARP)
_MPLS_TYPES = (ETH_P_MPLS_UC, ETH_P_MPLS_MC)

# --- offsets and packers ----------------------------------------------------------------------


def _off(name: str) -> int:
    return FIELDS[name].offset


O_IN_PORT = _off("in_port")
O_TUN_ID = _off("tun_id")
O_TUN_FLAGS = _off("tun_flags")
O_TUN_PROTO = _off("tun_proto")
O_ETH_DST = _off("eth_dst")
O_VLAN_TPID = _off("vlan_tpid")
O_CVLAN_TPID = _off("cvlan_tpid")
O_ETH_TYPE = _off("eth_type")
O_MAC_PROTO = _off("mac_proto")
O_IP_PROTO = _off("ip_proto")
O_IP_FRAG = _off("ip_frag")
O_L3 = _off("l3")
O_MPLS_LABELS = _off("mpls_labels")
O_TP_SRC = _off("tp_src")
O_ND = _off("nd_target")
assert O_IP_PROTO + 4 == O_L3 == _off("ipv4_src") == _off("ipv6_src") == _off("arp_sip")
assert _off("vlan_tci") == O_VLAN_TPID + 2 and _off("cvlan_tci") == O_CVLAN_TPID + 2
assert _off("tp_dst") == O_TP_SRC + 2 and _off("eth_src") == O_ETH_DST + 6
assert _off("nd_sll") == O_ND + 16 and _off("nd_tll") == O_ND + 22
assert FIELDS["tun_proto"].size == 1 and O_MPLS_LABELS == O_L3 + 12

_U8 = struct.Struct("!B").pack_into
_U16 = struct.Struct("!H").pack_into
_U32 = struct.Struct("!I").pack_into
_U64 = struct.Struct("!Q").pack_into
_ETH = struct.Struct("!6s6s").pack_into  # dst, src
_IP4 = struct.Struct("!BBBBII").pack_into  # proto, tos, ttl, frag, src, dst
_IP6 = struct.Struct("!BBBB16s16sI").pack_into  # proto, tclass, hlimit, frag, src, dst, label
_ARP = struct.Struct("!II6s6s").pack_into  # sip, tip, sha, tha (the opcode goes to ip_proto)
_HH = struct.Struct("!HH").pack_into  # tp_src, tp_dst; a VLAN's TPID, TCI
_ND = struct.Struct("!16s6s6s").pack_into
_MPLS = {n: struct.Struct(f"!{n}I").pack_into for n in (1, 2, 3)}

_Z6 = bytes(6)
_Z16 = bytes(16)
_TL = (tuple, list)

# --- attribute kinds --------------------------------------------------------------------------

K_U32 = 0  # recirc_id, dp_hash, priority, skb_mark: one u32 field
K_CT = 1  # ct_state, ct_zone, ct_mark: must be 0 in a key, ignored in a mask
K_IN_PORT = 2
K_ETHERNET = 3
K_ETHERTYPE = 4
K_IPV4 = 5
K_PORTS = 6  # tcp, udp, sctp
K_TCP_FLAGS = 7
K_CT_LABELS = 8
K_IPV6 = 9
K_VLAN = 10
K_ENCAP = 11
K_TUNNEL = 12
K_ICMP = 13  # icmp, icmpv6
K_ARP = 14
K_ND = 15
K_MPLS = 16

_KINDS: dict[str, tuple[int, int, int]] = {}
"""Attribute name -> (presence bit, kind, offset of its field) for the names handled here."""
for _name, _kind, _field in (
    ("recirc_id", K_U32, "recirc_id"),
    ("dp_hash", K_U32, "dp_hash"),
    ("priority", K_U32, "priority"),
    ("skb_mark", K_U32, "skb_mark"),
    ("in_port", K_IN_PORT, "in_port"),
    ("ct_state", K_CT, "in_port"),
    ("ct_zone", K_CT, "in_port"),
    ("ct_mark", K_CT, "in_port"),
    ("ct_labels", K_CT_LABELS, "in_port"),
    ("ethernet", K_ETHERNET, "eth_dst"),
    ("ethertype", K_ETHERTYPE, "eth_type"),
    ("vlan", K_VLAN, "vlan_tci"),
    ("encap", K_ENCAP, "vlan_tci"),
    ("tunnel", K_TUNNEL, "tun_id"),
    ("ipv4", K_IPV4, "ip_proto"),
    ("ipv6", K_IPV6, "ip_proto"),
    ("arp", K_ARP, "ip_proto"),
    ("mpls", K_MPLS, "l3"),
    ("tcp", K_PORTS, "tp_src"),
    ("udp", K_PORTS, "tp_src"),
    ("sctp", K_PORTS, "tp_src"),
    ("icmp", K_ICMP, "tp_src"),
    ("icmpv6", K_ICMP, "tp_src"),
    ("tcp_flags", K_TCP_FLAGS, "tcp_flags"),
    ("nd", K_ND, "nd_target"),
):
    _KINDS[_name] = (_BIT[_name], _kind, FIELDS[_field].offset)
del _name, _kind, _field

# Tunnel attribute name -> (packer, offset, flag it sets, role); role 1: an IPv4 endpoint,
# 2: the TTL, 3: a flag attribute (value True).
_TUN_ATTRS: dict[str, tuple[Any, int, int, int]] = {
    "id": (_U64, O_TUN_ID, TUN_F_KEY, 0),
    "ipv4_src": (_U32, _off("tun_ipv4_src"), 0, 1),
    "ipv4_dst": (_U32, _off("tun_ipv4_dst"), 0, 1),
    "tos": (_U8, _off("tun_tos"), 0, 0),
    "ttl": (_U8, _off("tun_ttl"), 0, 2),
    "tp_src": (_U16, _off("tun_tp_src"), 0, 0),
    "tp_dst": (_U16, _off("tun_tp_dst"), 0, 0),
    "dont_fragment": (None, 0, TUN_F_DF, 3),
    "csum": (None, 0, TUN_F_CSUM, 3),
    "oam": (None, 0, TUN_F_OAM, 3),
}
_O_TUN_DST = _off("tun_ipv4_dst")

# --- templates ----------------------------------------------------------------------------------


def _ones(*names: str) -> int:
    """The flat mask with every bit of the named fields set, as a big-endian integer."""
    buf = bytearray(KEY_SIZE)
    for name in names:
        off, size = FIELDS[name]
        buf[off : off + size] = b"\xff" * size
    return int.from_bytes(buf, "big")


def _value_at(name: str, value: int) -> int:
    """The flat key holding ``value`` in field ``name`` (and zeros elsewhere), as an integer."""
    off, size = FIELDS[name]
    return value << (8 * (KEY_SIZE - off - size))


_KEY_INIT = bytes(
    (_value_at("in_port", NO_IN_PORT) | _value_at("mac_proto", MAC_PROTO_ETHERNET)).to_bytes(
        KEY_SIZE, "big"
    )
)
"""A key before its attributes: no in_port, an Ethernet frame."""

_MASK_BASE = _ones("vlan_tci", "cvlan_tci", "mac_proto")
"""What every mask starts with: the TCIs exact unless a mask narrows them, mac_proto exact."""
_MASK_INIT = bytes(_MASK_BASE.to_bytes(KEY_SIZE, "big"))

# The exact mask of a put without MASK: what each present key attribute contributes (its
# all-ones netlink value parsed as a mask).  ICMP's u8 type and code become 0x00ff in the u16
# tp_src / tp_dst; ARP's all-ones opcode makes ip_proto 0xff.
_ALL_ONES: dict[int, int] = {
    _BIT["recirc_id"]: _ones("recirc_id"),
    _BIT["dp_hash"]: _ones("dp_hash"),
    B_PRIORITY: _ones("priority"),
    _BIT["skb_mark"]: _ones("skb_mark"),
    B_IN_PORT: _ones("in_port"),
    B_ETHERNET: _ones("eth_dst", "eth_src"),
    B_ETHERTYPE: _ones("eth_type"),
    B_IPV4: _ones("ip_proto", "ip_tos", "ip_ttl", "ip_frag", "ipv4_src", "ipv4_dst"),
    B_IPV6: _ones("ip_proto", "ip_tos", "ip_ttl", "ip_frag", "ipv6_src", "ipv6_dst", "ipv6_label"),
    B_ARP: _ones("ip_proto", "arp_sip", "arp_tip", "arp_sha", "arp_tha"),
    B_TCP: _ones("tp_src", "tp_dst"),
    B_UDP: _ones("tp_src", "tp_dst"),
    B_SCTP: _ones("tp_src", "tp_dst"),
    B_ICMP: _value_at("tp_src", 0xFF) | _value_at("tp_dst", 0xFF),
    B_ICMPV6: _value_at("tp_src", 0xFF) | _value_at("tp_dst", 0xFF),
    B_TCP_FLAGS: _ones("tcp_flags"),
    B_ND: _ones("nd_target", "nd_sll", "nd_tll"),
}
_ONES_BITS = tuple(_ALL_ONES.items())
_ONES_VLAN = (0, _ones("vlan_tpid"), _ones("vlan_tpid", "cvlan_tpid"))
_ONES_TUNNEL = _ones(
    "tun_id",
    "tun_ipv4_src",
    "tun_ipv4_dst",
    "tun_tos",
    "tun_ttl",
    "tun_proto",
    "tun_tp_src",
    "tun_tp_dst",
)
_ONES_MPLS = tuple(
    _ones(*(f"mpls_lse{i}" for i in range(n))) | _value_at("mpls_labels", (1 << n) - 1)
    for n in range(4)
)

_CACHE_MAX = 1024
_exact_masks: dict[int, bytes] = {}
"""The exact masks of puts without MASK, by (presence bits, VLAN levels, tunnel flags, labels)."""


def _exact_mask(kb: int, levels: int, tun_flags: int, n_mpls: int) -> bytes:
    """The mask the kernel derives from a key's own attributes (every present field exact)."""
    ck = kb | levels << 40 | tun_flags << 42 | n_mpls << 50
    mask = _exact_masks.get(ck)
    if mask is None:
        value = _MASK_BASE | _ONES_VLAN[levels] | _ONES_MPLS[n_mpls]
        for bit, ones in _ONES_BITS:
            if kb & bit:
                value |= ones
        if kb & B_TUNNEL:
            value |= _ONES_TUNNEL | _value_at("tun_flags", tun_flags)
        mask = value.to_bytes(KEY_SIZE, "big")
        if len(_exact_masks) >= _CACHE_MAX:
            _exact_masks.clear()
        _exact_masks[ck] = mask
    return mask


# --- match_validate ---------------------------------------------------------------------------


def _validate(kb: int, mb: int, key: Any, mask: Any) -> bool:
    """The kernel's match_validate on presence bits: required key attributes present, and no
    mask attribute the key (its eth_type, IP protocol, ICMPv6 type) does not allow."""
    allowed = (kb & _NOT_L3L4) | _ALWAYS_ALLOWED
    etype = key[O_ETH_TYPE] << 8 | key[O_ETH_TYPE + 1]
    eth_exact = mask[O_ETH_TYPE] == 0xFF  # the eth_type mask is 0 or 0xffff
    if etype == ETH_P_IP or etype == ETH_P_IPV6:
        v6 = etype == ETH_P_IPV6
        expected = B_IPV6 if v6 else B_IPV4
        if eth_exact:
            allowed |= (B_IPV6 | B_CT_ORIG6) if v6 else (B_IPV4 | B_CT_ORIG4)
        if key[O_IP_FRAG] != FRAG_LATER:
            proto = key[O_IP_PROTO]
            l4 = (_L4_V6 if v6 else _L4_V4).get(proto, 0)
            expected |= l4
            if mask[O_IP_PROTO] == 0xFF:
                allowed |= l4
            if (
                v6
                and proto == IPPROTO_ICMPV6
                and not key[O_TP_SRC]
                and key[O_TP_SRC + 1] in _ND_TYPES
            ):
                expected |= B_ND
                allowed &= ~B_CT_ORIG6
                if not mask[O_TP_SRC] and mask[O_TP_SRC + 1] == 0xFF:
                    allowed |= B_ND
    elif etype in _ARP_TYPES:
        expected = B_ARP
        if eth_exact:
            allowed |= B_ARP
    elif etype in _MPLS_TYPES:
        expected = B_MPLS
        if eth_exact:
            allowed |= B_MPLS
    elif etype == ETH_P_NSH:
        expected = B_NSH
    else:
        expected = 0
    return not (expected & ~kb) and not (mb & ~allowed)


# --- tunnels ------------------------------------------------------------------------------------


def _tunnel(buf: bytearray, t: Any, is_mask: bool) -> int | None:
    """Pack an IPv4 tunnel key (or mask) into ``buf``; its tun_flags, or None if unusual."""
    if t.__class__ is not dict:
        return None
    flags = 0
    roles = 0
    for name, v in t.items():
        spec = _TUN_ATTRS.get(name)
        if spec is None:
            return None  # IPv6 endpoints, options, pad, bridge mode, unknown: the reference
        pack, off, flag, role = spec
        if role == 3:
            if v is not True:
                return None
        else:
            pack(buf, off, v)
        flags |= flag
        roles |= 1 << role
    _U8(buf, O_TUN_FLAGS, flags)
    if is_mask:
        _U8(buf, O_TUN_PROTO, 0xFF)
    else:
        _U8(buf, O_TUN_PROTO, AF_INET)
        # a destination (non-zero) and a TTL are required
        if not roles & 2 or not roles & 4 or buf[_O_TUN_DST : _O_TUN_DST + 4] == b"\0\0\0\0":
            return None
    return flags


# --- attrs_to_key -----------------------------------------------------------------------------


def fast_attrs_to_key(key_attrs: Any, mask_attrs: Any) -> tuple[bytes, bytes] | None:
    """``(flat key, flat mask)`` of a flow put, or None when the reference must decide.

    Shape functions first, then the generic loops.  Never raises: an exception (a value of the
    wrong type, say) also means "not handled here".
    """
    try:
        if key_attrs.__class__ is not dict:
            return None
        parsed: Any = None
        variants = _key_codecs.get(tuple(key_attrs))
        if variants is not None:
            for fn in variants:
                parsed = fn(key_attrs, None)
                if parsed is not MISS:
                    break
            else:
                parsed = None
                _key_shapes.learn(key_attrs)
        else:
            _key_shapes.learn(key_attrs)
        if parsed is None:
            parsed = _parse_key(key_attrs, mask_attrs is None)
            if parsed is None:
                return None
        key, kb, levels, tun_flags, n_mpls = parsed
        if mask_attrs is None:
            mask: Any = _exact_mask(kb, levels, tun_flags, n_mpls)
            mb = kb
        else:
            if mask_attrs.__class__ is not dict:
                return None
            parsed = None
            variants = _mask_codecs.get(tuple(mask_attrs))
            if variants is not None:
                for fn in variants:
                    parsed = fn(mask_attrs, key)
                    if parsed is not MISS:
                        break
                else:
                    parsed = None
                    _mask_shapes.learn(mask_attrs)
            else:
                _mask_shapes.learn(mask_attrs)
            if parsed is None:
                parsed = _parse_mask(mask_attrs, key)
                if parsed is None:
                    return None
            mb, mask = parsed
        if not _validate(kb, mb, key, mask):
            return None
        return bytes(key), bytes(mask)
    except Exception:
        return None


def generic_attrs_to_key(key_attrs: Any, mask_attrs: Any) -> tuple[bytes, bytes] | None:
    """:func:`fast_attrs_to_key` without the shape functions (the generic loops only)."""
    try:
        if key_attrs.__class__ is not dict:
            return None
        parsed: Any = _parse_key(key_attrs, mask_attrs is None)
        if parsed is None:
            return None
        key, kb, levels, tun_flags, n_mpls = parsed
        if mask_attrs is None:
            mask: Any = _exact_mask(kb, levels, tun_flags, n_mpls)
            mb = kb
        else:
            if mask_attrs.__class__ is not dict:
                return None
            parsed = _parse_mask(mask_attrs, key)
            if parsed is None:
                return None
            mb, mask = parsed
        if not _validate(kb, mb, key, mask):
            return None
        return bytes(key), bytes(mask)
    except Exception:
        return None


def _parse_key(attrs: Any, no_mask: bool) -> tuple[bytearray, int, int, int, int] | None:
    """The generic key loop: (flat key, presence bits, VLAN levels, tun_flags, MPLS labels)."""
    kinds = _KINDS
    key = bytearray(_KEY_INIT)
    kb = 0
    etype: Any = None
    vlan: Any = None
    encap: Any = None
    tun_flags = 0
    n_mpls = 0
    levels = 0
    # one attribute level at a time (the kernel's parse_flow_nlattrs and parse_vlan_from_nlattrs)
    while True:
        for name, v in attrs.items():
            spec = kinds.get(name)
            if spec is None:
                return None  # unknown, unsupported, conntrack tuples
            bit, kind, off = spec
            if kb & bit:
                return None  # a duplicate
            kb |= bit
            if kind == K_U32:
                _U32(key, off, v)
            elif kind == K_CT:
                if v.__class__ is not int or v:
                    return None
            elif kind == K_IN_PORT:
                if v.__class__ is not int or not 0 <= v < NO_IN_PORT:
                    return None
                _U16(key, off, v)
            elif kind == K_ETHERNET:
                if not isinstance(v, _TL):
                    return None
                src, dst = v
                if len(src) != 6 or len(dst) != 6:
                    return None
                _ETH(key, off, dst, src)
            elif kind == K_ETHERTYPE:
                etype = v
            elif kind == K_IPV4:
                if not isinstance(v, _TL):
                    return None
                src, dst, proto, tos, ttl, frag = v
                if frag > FRAG_LATER:
                    return None
                _IP4(key, off, proto, tos, ttl, frag, src, dst)
            elif kind == K_PORTS:
                if not isinstance(v, _TL):
                    return None
                _HH(key, off, *v)
            elif kind == K_TCP_FLAGS:
                _U16(key, off, v)
            elif kind == K_CT_LABELS:
                if v.__class__ is not bytes or v != _Z16:
                    return None
            elif kind == K_IPV6:
                if not isinstance(v, _TL):
                    return None
                src, dst, label, proto, tclass, hlimit, frag = v
                if frag > FRAG_LATER or label & 0xFFF00000 or len(src) != 16 or len(dst) != 16:
                    return None
                _IP6(key, off, proto, tclass, hlimit, frag, src, dst, label)
            elif kind == K_VLAN:
                vlan = v
            elif kind == K_ENCAP:
                encap = v
            elif kind == K_TUNNEL:
                flags = _tunnel(key, v, False)
                if flags is None:
                    return None
                tun_flags = flags
            elif kind == K_ICMP:
                if not isinstance(v, _TL):
                    return None
                icmp_type, code = v
                # the kernel's u8 fields (a put without MASK re-encodes them as such)
                if not (0 <= icmp_type <= 0xFF and 0 <= code <= 0xFF):
                    return None
                _HH(key, off, icmp_type, code)
            elif kind == K_ARP:
                if not isinstance(v, _TL):
                    return None
                sip, tip, op, sha, tha = v
                if op.__class__ is not int or not 0 <= op <= 0xFF:
                    return None
                if len(sha) != 6 or len(tha) != 6:
                    return None
                _U8(key, off, op)
                _ARP(key, O_L3, sip, tip, sha, tha)
            elif kind == K_ND:
                if not isinstance(v, _TL):
                    return None
                target, sll, tll = v
                if len(target) != 16 or len(sll) != 6 or len(tll) != 6:
                    return None
                _ND(key, off, target, sll, tll)
            else:  # K_MPLS
                if not isinstance(v, _TL):
                    return None
                n_mpls = len(v)
                if not 1 <= n_mpls <= MPLS_LABEL_DEPTH:
                    return None
                _MPLS[n_mpls](key, off, *v)
                key[O_MPLS_LABELS] = (1 << n_mpls) - 1
        # a VLAN frame: TPID + TCI + ENCAP, at most two tags
        if levels == 2 or not kb & B_ETHERNET or not kb & B_ETHERTYPE or etype not in VLAN_TPIDS:
            break
        if not kb & B_VLAN or not kb & B_ENCAP or vlan.__class__ is not int:
            return None
        if not vlan & VLAN_CFI or encap.__class__ is not dict:
            return None  # a truncated tag (TCI 0): the reference
        _HH(key, O_CVLAN_TPID if levels else O_VLAN_TPID, etype, vlan)
        levels += 1
        kb &= _NOT_VLAN_LEVEL
        attrs = encap
        etype = vlan = encap = None
        if not attrs and no_mask:
            return None  # the exact mask's empty ENCAP is absent: an error (the reference)
    if kb & (B_VLAN | B_ENCAP):
        return None
    both = kb & _UNION
    if both & (both - 1):
        return None  # two headers writing the same fields: the reference's order decides
    both = kb & _PORTS_GROUP
    if both & (both - 1):
        return None
    if not kb & B_ETHERTYPE:
        if not kb & B_ETHERNET:
            return None  # neither an Ethernet header nor an EtherType
        eth_type = ETH_P_802_2
    else:
        if etype.__class__ is not int or etype < 0x0600:
            return None
        eth_type = etype
        if not kb & B_ETHERNET:
            key[O_MAC_PROTO] = MAC_PROTO_NONE
    _U16(key, O_ETH_TYPE, eth_type)
    return key, kb, levels, tun_flags, n_mpls


def _parse_mask(attrs: Any, key: bytearray) -> tuple[int, bytearray] | None:
    """The MASK attributes over the template: (presence bits of the non-zero ones, flat mask)."""
    if attrs.__class__ is not dict:
        return None
    kinds = _KINDS
    mask = bytearray(_MASK_INIT)
    mb = 0
    etype: Any = None
    vlan: Any = None
    encap: Any = None
    levels = 0
    while True:
        for name, v in attrs.items():
            spec = kinds.get(name)
            if spec is None:
                return None
            bit, kind, off = spec
            if mb & bit:
                return None  # a duplicate (of a non-zero attribute)
            if kind == K_U32 or kind == K_TCP_FLAGS:
                if v.__class__ is not int:
                    return None
                if v:
                    (_U32 if kind == K_U32 else _U16)(mask, off, v)
                    mb |= bit
            elif kind == K_CT:
                if v.__class__ is not int:
                    return None
                if v:
                    mb |= bit
            elif kind == K_IN_PORT:
                if v.__class__ is not int:
                    return None
                if v:
                    mask[off] = mask[off + 1] = 0xFF  # always matched exactly
                    mb |= bit
            elif kind == K_ETHERNET:
                if not isinstance(v, _TL):
                    return None
                src, dst = v
                if src.__class__ is not bytes or dst.__class__ is not bytes:
                    return None
                if len(src) != 6 or len(dst) != 6:
                    return None
                if src != _Z6 or dst != _Z6:
                    _ETH(mask, off, dst, src)
                    mb |= bit
            elif kind == K_ETHERTYPE:
                if v.__class__ is not int:
                    return None
                if v:
                    etype = v
                    mb |= bit
            elif kind == K_IPV4:
                if not isinstance(v, _TL):
                    return None
                src, dst, proto, tos, ttl, frag = v
                if (
                    src.__class__ is not int
                    or dst.__class__ is not int
                    or proto.__class__ is not int
                    or tos.__class__ is not int
                    or ttl.__class__ is not int
                    or frag.__class__ is not int
                ):
                    return None
                if src or dst or proto or tos or ttl or frag:
                    _IP4(mask, off, proto, tos, ttl, frag, src, dst)
                    mb |= bit
            elif kind == K_PORTS or kind == K_ICMP:
                if not isinstance(v, _TL):
                    return None
                a, b = v
                if a.__class__ is not int or b.__class__ is not int:
                    return None
                if a or b:
                    _HH(mask, off, a, b)
                    mb |= bit
            elif kind == K_CT_LABELS:
                if v.__class__ is not bytes:
                    return None
                if v != _Z16 and any(v):
                    mb |= bit
            elif kind == K_IPV6:
                if not isinstance(v, _TL):
                    return None
                src, dst, label, proto, tclass, hlimit, frag = v
                if src.__class__ is not bytes or dst.__class__ is not bytes:
                    return None
                if len(src) != 16 or len(dst) != 16:
                    return None
                if (
                    label.__class__ is not int
                    or proto.__class__ is not int
                    or tclass.__class__ is not int
                    or hlimit.__class__ is not int
                    or frag.__class__ is not int
                ):
                    return None
                if label or proto or tclass or hlimit or frag or src != _Z16 or dst != _Z16:
                    _IP6(mask, off, proto, tclass, hlimit, frag, src, dst, label)
                    mb |= bit
            elif kind == K_VLAN:
                if v.__class__ is not int:
                    return None
                if v:
                    vlan = v
                    mb |= bit
            elif kind == K_ENCAP:
                if v.__class__ is not dict:
                    return None
                if v:
                    encap = v
                    mb |= bit
            elif kind == K_TUNNEL:
                if v.__class__ is not dict:
                    return None
                if v:
                    if _tunnel(mask, v, True) is None:
                        return None
                    mb |= bit
            elif kind == K_ARP:
                if not isinstance(v, _TL):
                    return None
                sip, tip, op, sha, tha = v
                if sip.__class__ is not int or tip.__class__ is not int or op.__class__ is not int:
                    return None
                if sha.__class__ is not bytes or tha.__class__ is not bytes:
                    return None
                if len(sha) != 6 or len(tha) != 6:
                    return None
                if sip or tip or op or sha != _Z6 or tha != _Z6:
                    _U8(mask, off, op & 0xFF)
                    _ARP(mask, O_L3, sip, tip, sha, tha)
                    mb |= bit
            elif kind == K_ND:
                if not isinstance(v, _TL):
                    return None
                target, sll, tll = v
                if target.__class__ is not bytes or sll.__class__ is not bytes:
                    return None
                if tll.__class__ is not bytes:
                    return None
                if len(target) != 16 or len(sll) != 6 or len(tll) != 6:
                    return None
                if target != _Z16 or sll != _Z6 or tll != _Z6:
                    _ND(mask, off, target, sll, tll)
                    mb |= bit
            else:  # K_MPLS
                if not isinstance(v, _TL):
                    return None
                nonzero = False
                for lse in v:
                    if lse.__class__ is not int:
                        return None
                    if lse:
                        nonzero = True
                if nonzero:
                    n = len(v)
                    if n > 3:
                        return None
                    _MPLS[n](mask, off, *v)
                    mask[O_MPLS_LABELS] = (1 << n) - 1
                    mb |= bit
        # an ENCAP mask: the key's tag must be present, its TPID and CFI bit matched exactly
        if encap is None or levels == 2:
            break
        o_tpid = O_CVLAN_TPID if levels else O_VLAN_TPID
        if not key[o_tpid + 2] & (VLAN_CFI >> 8):
            return None
        if etype != 0xFFFF or vlan is None or not vlan & VLAN_CFI:
            return None
        _HH(mask, o_tpid, 0xFFFF, vlan)
        levels += 1
        mb &= _NOT_VLAN_LEVEL
        attrs = encap
        etype = vlan = encap = None
    if mb & (B_VLAN | B_ENCAP):
        return None  # a VLAN or ENCAP mask left over
    both = mb & _UNION
    if both & (both - 1):
        return None
    both = mb & _PORTS_GROUP
    if both & (both - 1):
        return None
    if etype is not None:
        mask[O_ETH_TYPE] = mask[O_ETH_TYPE + 1] = 0xFF  # always matched exactly
    return mb, mask


# --- shape codecs -------------------------------------------------------------------------------
#
# A flow put's KEY and MASK come in few layouts (the same attribute names, in the same order,
# for every TCP flow of a switch).  Once a layout has been seen SHAPE_AFTER times, the functions
# below write Python source for exactly that layout and compile it (as ``dataclasses`` and
# ovsdp.netlink.shapes do): one ``values()`` unpacking per attribute level, the layout's checks
# spelled out, and one ``struct`` pack of the whole flat key or mask.  The source holds only
# names, numbers and constants made here (attribute names go through the namespace), never
# input values.  A shape function returns what the generic loop would, or None (the generic
# loop, then the reference, decide), or MISS (a nested level has other names: another variant
# or the generic loop).


class _Miss:
    """What a shape function returns when a nested level is not of its layout."""

    def __repr__(self) -> str:
        return "MISS"


MISS: Any = _Miss()

SHAPE_AFTER = 2
"""A layout is compiled when it is seen for the SHAPE_AFTER-th time."""
MAX_SHAPES = 64
"""Top-level layouts kept per direction (key, mask); the oldest goes first."""
MAX_VARIANTS = 4
"""Nested variants kept per top-level layout (VLAN frames of several protocols, tunnels)."""
MAX_SEEN = 4096
COMPILE_FREE = 0.05
COMPILE_SHARE = 0.02
"""Compiling may take COMPILE_FREE seconds, then at most this share of the wall time."""

_T0 = time.perf_counter()
_spent = 0.0

ShapeFn = Callable[[dict[Any, Any], Any], Any]


class _Shapes:
    """The shape functions of one direction: top-level names -> variants, and sightings."""

    def __init__(self, compile_fn: Callable[[dict[Any, Any]], ShapeFn | None]) -> None:
        self.compile = compile_fn
        self.codecs: dict[tuple[Any, ...], list[ShapeFn]] = {}
        self.seen: dict[tuple[Any, ...], int] = {}

    def clear(self) -> None:
        """Forget every shape function and sighting."""
        self.codecs.clear()
        self.seen.clear()

    def learn(self, sample: dict[Any, Any]) -> None:
        """Count a sighting of ``sample``'s layout; compile it once it recurs."""
        global _spent
        sig = _signature(sample)
        seen = self.seen
        count = seen.get(sig, 0) + 1
        if count < SHAPE_AFTER:
            if len(seen) >= MAX_SEEN:
                seen.clear()
            seen[sig] = count
            return
        seen[sig] = 0
        if _spent > COMPILE_FREE + COMPILE_SHARE * (time.perf_counter() - _T0):
            return  # over budget: stay generic, try again later
        started = time.perf_counter()
        try:
            fn = self.compile(sample)
        except Exception:  # a layout the generator does not expect: stay generic
            fn = None
        finally:
            _spent += time.perf_counter() - started
        if fn is None:
            seen[sig] = -(1 << 62)  # not compilable: never again
        else:
            self.install(tuple(sample), fn)

    def install(self, names: tuple[Any, ...], fn: ShapeFn) -> None:
        """Add a compiled variant for the top-level ``names``."""
        codecs = self.codecs
        variants = codecs.get(names)
        if variants is None:
            if len(codecs) >= MAX_SHAPES:
                del codecs[next(iter(codecs))]
            codecs[names] = [fn]
        else:
            variants.insert(0, fn)
            del variants[MAX_VARIANTS:]


def _signature(attrs: dict[Any, Any]) -> tuple[Any, ...]:
    """The names of every level of a key or mask (and of its tunnel nests): its layout."""
    sig: list[Any] = []
    level: Any = attrs
    while level.__class__ is dict and len(sig) < 6:
        sig.append(tuple(level))
        tunnel = level.get("tunnel")
        sig.append(tuple(tunnel) if tunnel.__class__ is dict else None)
        level = level.get("encap")
    return tuple(sig)


class _Source:
    """The source lines, namespace and flat-layout slots of one shape function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {"MISS": MISS, "_TL": _TL, "_Z6": _Z6, "_Z16": _Z16}
        self.slots: dict[str, str] = {}
        self.l3: tuple[str, list[str]] = (f"{FIELDS['l3'].size}x", [])
        self.count = 0

    def const(self, value: Any) -> str:
        """A namespace name bound to ``value``."""
        name = f"_c{len(self.ns)}"
        self.ns[name] = value
        return name

    def var(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def line(self, text: str) -> None:
        self.lines.append("    " + text)

    def fail_if(self, condition: str) -> None:
        self.line(f"if {condition}:")
        self.line("    return None")

    def miss_unless(self, var: str, names: tuple[Any, ...]) -> None:
        """``var`` must be a dict with exactly these names (an empty one for no names)."""
        if names:
            self.line(f"if {var}.__class__ is not dict or tuple({var}) != {self.const(names)}:")
        else:
            self.line(f"if {var}.__class__ is not dict or {var}:")
        self.line("    return MISS")

    def fields(self, var: str, n: int) -> list[str]:
        """Unpack a struct attribute (a tuple or list of ``n`` fields) into new variables."""
        out = [self.var() for _ in range(n)]
        self.fail_if(f"not isinstance({var}, _TL)")
        self.line(f"{', '.join(out)}, = {var}")
        return out

    def unpack_level(self, var: str, names: tuple[Any, ...]) -> list[str]:
        """Unpack the values of a dict with these names into new variables."""
        out = [self.var() for _ in names]
        if out:
            self.line(f"{', '.join(out)}, = {var}.values()")
        return out

    def pack(self, defaults: dict[str, int]) -> str:
        """An expression packing the whole flat key or mask from the slots (one call)."""
        fmt = "!"
        args: list[str] = []
        for name, code in _SEQUENTIAL:
            if name == "l3":
                fmt += self.l3[0]
                args += self.l3[1]
                continue
            expr = self.slots.get(name)
            if expr is None:
                value = defaults.get(name, 0)
                if not value:
                    fmt += f"{FIELDS[name].size}x"
                    continue
                expr = str(value)
            fmt += code
            args.append(expr)
        packer = struct.Struct(fmt)
        assert packer.size == KEY_SIZE
        return f"{self.const(packer.pack)}({', '.join(args)})"

    def build(self, signature: str, name: str) -> ShapeFn:
        source = "\n".join([f"def shape({signature}):", *self.lines]) + "\n"
        exec(compile(source, f"<{name} shape>", "exec"), self.ns)
        fn: ShapeFn = self.ns["shape"]
        return fn


_L3_IPV4 = "II28x"
_L3_IPV6 = "16s16sI"
_L3_ARP = "II6s6s16x"
assert struct.calcsize("!" + _L3_IPV4) == struct.calcsize("!" + _L3_ARP) == FIELDS["l3"].size
assert struct.calcsize("!" + _L3_IPV6) == FIELDS["l3"].size
_TPIDS_TEST = " or ".join(f"{{0}} == {tpid}" for tpid in VLAN_TPIDS)


def _tunnel_source(src: _Source, var: str, sample: Any, is_mask: bool) -> int | None:
    """Source for a non-empty IPv4 tunnel nest of ``sample``'s names; its tun_flags, or None."""
    if sample.__class__ is not dict or not sample:
        return None
    names = tuple(sample)
    if any(name not in _TUN_ATTRS for name in names):
        return None
    src.miss_unless(var, names)
    flags = roles = 0
    for name, v in zip(names, src.unpack_level(var, names), strict=True):
        _, _, flag, role = _TUN_ATTRS[name]
        if role == 3:
            src.fail_if(f"{v} is not True")
        else:
            src.slots["tun_" + name] = v
        flags |= flag
        roles |= 1 << role
    src.slots["tun_flags"] = str(flags)
    src.slots["tun_proto"] = str(0xFF if is_mask else AF_INET)
    if not is_mask:
        if "ipv4_dst" not in names or not roles & 4:
            return None  # no destination or no TTL: an error
        dst = src.slots["tun_ipv4_dst"]
        src.fail_if(f"{dst}.__class__ is not int or not {dst}")
    return flags


def _key_attr_source(src: _Source, kind: int, name: str, v: str) -> None:
    """Checks and slots of one key attribute (not ethertype, vlan, encap, tunnel, mpls)."""
    slots = src.slots
    if kind == K_U32:
        slots[name] = v
    elif kind == K_TCP_FLAGS:
        slots["tcp_flags"] = v
    elif kind == K_IN_PORT:
        src.fail_if(f"{v}.__class__ is not int or not 0 <= {v} < {NO_IN_PORT}")
        slots["in_port"] = v
    elif kind == K_CT:
        src.fail_if(f"{v}.__class__ is not int or {v}")
    elif kind == K_CT_LABELS:
        src.fail_if(f"{v}.__class__ is not bytes or {v} != _Z16")
    elif kind == K_ETHERNET:
        s, d = src.fields(v, 2)
        src.fail_if(f"len({s}) != 6 or len({d}) != 6")
        slots["eth_dst"], slots["eth_src"] = d, s
    elif kind == K_IPV4:
        s, d, proto, tos, ttl, frag = src.fields(v, 6)
        src.fail_if(f"{frag} > {FRAG_LATER}")
        slots.update(ip_proto=proto, ip_tos=tos, ip_ttl=ttl, ip_frag=frag)
        src.l3 = (_L3_IPV4, [s, d])
    elif kind == K_IPV6:
        s, d, label, proto, tclass, hlimit, frag = src.fields(v, 7)
        src.fail_if(
            f"{frag} > {FRAG_LATER} or {label} & 0xFFF00000 or len({s}) != 16 or len({d}) != 16"
        )
        slots.update(ip_proto=proto, ip_tos=tclass, ip_ttl=hlimit, ip_frag=frag)
        src.l3 = (_L3_IPV6, [s, d, label])
    elif kind == K_ARP:
        sip, tip, op, sha, tha = src.fields(v, 5)
        src.fail_if(
            f"{op}.__class__ is not int or not 0 <= {op} <= 255 or len({sha}) != 6 "
            f"or len({tha}) != 6"
        )
        slots["ip_proto"] = op
        src.l3 = (_L3_ARP, [sip, tip, sha, tha])
    elif kind == K_PORTS or kind == K_ICMP:
        a, b = src.fields(v, 2)
        if kind == K_ICMP:  # the kernel's u8 type and code
            src.fail_if(f"not (0 <= {a} <= 255 and 0 <= {b} <= 255)")
        slots["tp_src"], slots["tp_dst"] = a, b
    elif kind == K_ND:
        target, sll, tll = src.fields(v, 3)
        src.fail_if(f"len({target}) != 16 or len({sll}) != 6 or len({tll}) != 6")
        slots.update(nd_target=target, nd_sll=sll, nd_tll=tll)
    else:
        raise AssertionError(kind)


def _compile_key(sample: dict[Any, Any]) -> ShapeFn | None:
    """A shape function for keys laid out like ``sample`` (None: not compilable)."""
    src = _Source()
    kb = levels = tun_flags = 0
    level: Any = sample
    var = "d"
    while True:
        names = tuple(level)
        if levels:
            src.miss_unless(var, names)
        special: dict[int, str] = {}
        for name, v in zip(names, src.unpack_level(var, names), strict=True):
            spec = _KINDS.get(name)
            if spec is None:
                return None
            bit, kind, _offset = spec
            if kind == K_ETHERTYPE or kind == K_VLAN or kind == K_ENCAP:
                special[kind] = v
                continue
            if kb & bit or kind == K_MPLS:
                return None
            kb |= bit
            if kind == K_TUNNEL:
                flags = _tunnel_source(src, v, level[name], False)
                if flags is None:
                    return None
                tun_flags = flags
            else:
                _key_attr_source(src, kind, name, v)
        etype, vlan, encap = special.get(K_ETHERTYPE), special.get(K_VLAN), special.get(K_ENCAP)
        if encap is not None:  # a VLAN level
            inner = level["encap"]
            if levels == 2 or not kb & B_ETHERNET or etype is None or vlan is None:
                return None
            if inner.__class__ is not dict or not inner:
                return None
            src.fail_if(f"{etype}.__class__ is not int or not ({_TPIDS_TEST.format(etype)})")
            src.fail_if(f"{vlan}.__class__ is not int or not {vlan} & {VLAN_CFI}")
            prefix = "cvlan_" if levels else "vlan_"
            src.slots[prefix + "tpid"], src.slots[prefix + "tci"] = etype, vlan
            levels += 1
            level, var = inner, encap
            continue
        if vlan is not None:
            return None
        if etype is not None:
            kb |= B_ETHERTYPE
            src.fail_if(f"{etype}.__class__ is not int or {etype} < 0x0600")
            if kb & B_ETHERNET and levels < 2:
                src.fail_if(_TPIDS_TEST.format(etype))  # a tag without VLAN and ENCAP
            src.slots["eth_type"] = etype
        elif not kb & B_ETHERNET:
            return None
        break
    for group in (_UNION, _PORTS_GROUP):
        both = kb & group
        if both & (both - 1):
            return None
    ethernet = bool(kb & B_ETHERNET)
    defaults = {
        "in_port": NO_IN_PORT,
        "eth_type": ETH_P_802_2,
        "mac_proto": MAC_PROTO_ETHERNET if ethernet else MAC_PROTO_NONE,
    }
    src.line(f"return {src.pack(defaults)}, {kb}, {levels}, {tun_flags}, 0")
    return src.build("d, key", "key")


def _mask_attr_source(src: _Source, kind: int, name: str, v: str) -> str:
    """Checks and slots of one mask attribute; returns its "not all zero" expression."""
    slots = src.slots
    if kind == K_U32 or kind == K_TCP_FLAGS or kind == K_CT:
        src.fail_if(f"{v}.__class__ is not int")
        if kind != K_CT:
            slots[name] = v
        return v
    if kind == K_IN_PORT:
        src.fail_if(f"{v}.__class__ is not int")
        slots["in_port"] = f"(65535 if {v} else 0)"  # always matched exactly
        return v
    if kind == K_CT_LABELS:
        src.fail_if(f"{v}.__class__ is not bytes")
        return f"({v} != _Z16 and any({v}))"
    if kind == K_ETHERNET:
        s, d = src.fields(v, 2)
        src.fail_if(f"{s}.__class__ is not bytes or {d}.__class__ is not bytes")
        src.fail_if(f"len({s}) != 6 or len({d}) != 6")
        slots["eth_dst"], slots["eth_src"] = d, s
        return f"({s} != _Z6 or {d} != _Z6)"
    if kind == K_IPV4:
        fields = src.fields(v, 6)
        s, d, proto, tos, ttl, frag = fields
        src.fail_if(" or ".join(f"{f}.__class__ is not int" for f in fields))
        slots.update(ip_proto=proto, ip_tos=tos, ip_ttl=ttl, ip_frag=frag)
        src.l3 = (_L3_IPV4, [s, d])
        return f"({' or '.join(fields)})"
    if kind == K_IPV6:
        s, d, *ints = fields = src.fields(v, 7)
        label, proto, tclass, hlimit, frag = ints
        src.fail_if(f"{s}.__class__ is not bytes or {d}.__class__ is not bytes")
        src.fail_if(f"len({s}) != 16 or len({d}) != 16")
        src.fail_if(" or ".join(f"{f}.__class__ is not int" for f in ints))
        slots.update(ip_proto=proto, ip_tos=tclass, ip_ttl=hlimit, ip_frag=frag)
        src.l3 = (_L3_IPV6, [s, d, label])
        return f"({' or '.join(ints)} or {s} != _Z16 or {d} != _Z16)"
    if kind == K_ARP:
        sip, tip, op, sha, tha = src.fields(v, 5)
        src.fail_if(" or ".join(f"{f}.__class__ is not int" for f in (sip, tip, op)))
        src.fail_if(f"{sha}.__class__ is not bytes or {tha}.__class__ is not bytes")
        src.fail_if(f"len({sha}) != 6 or len({tha}) != 6")
        slots["ip_proto"] = f"({op} & 255)"
        src.l3 = (_L3_ARP, [sip, tip, sha, tha])
        return f"({sip} or {tip} or {op} or {sha} != _Z6 or {tha} != _Z6)"
    if kind == K_PORTS or kind == K_ICMP:
        a, b = src.fields(v, 2)
        src.fail_if(f"{a}.__class__ is not int or {b}.__class__ is not int")
        slots["tp_src"], slots["tp_dst"] = a, b
        return f"({a} or {b})"
    if kind == K_ND:
        target, sll, tll = fields = src.fields(v, 3)
        src.fail_if(" or ".join(f"{f}.__class__ is not bytes" for f in fields))
        src.fail_if(f"len({target}) != 16 or len({sll}) != 6 or len({tll}) != 6")
        slots.update(nd_target=target, nd_sll=sll, nd_tll=tll)
        return f"({target} != _Z16 or {sll} != _Z6 or {tll} != _Z6)"
    raise AssertionError(kind)


def _compile_mask(sample: dict[Any, Any]) -> ShapeFn | None:
    """A shape function for masks laid out like ``sample`` (None: not compilable)."""
    src = _Source()
    names_bits = static = levels = 0
    present: list[tuple[int, str]] = []
    level: Any = sample
    var = "d"
    while True:
        names = tuple(level)
        if levels:
            src.miss_unless(var, names)
        special: dict[int, str] = {}
        for name, v in zip(names, src.unpack_level(var, names), strict=True):
            spec = _KINDS.get(name)
            if spec is None:
                return None
            bit, kind, _offset = spec
            if kind == K_ETHERTYPE or kind == K_VLAN or kind == K_ENCAP:
                special[kind] = v
                continue
            if names_bits & bit or kind == K_MPLS:
                return None
            names_bits |= bit
            if kind == K_TUNNEL:
                tunnel = level[name]
                if tunnel.__class__ is not dict:
                    return None
                if not tunnel:  # an empty nest is absent
                    src.miss_unless(v, ())
                elif _tunnel_source(src, v, tunnel, True) is None:
                    return None
                else:
                    static |= bit
            else:
                present.append((bit, _mask_attr_source(src, kind, name, v)))
        etype, vlan, encap = special.get(K_ETHERTYPE), special.get(K_VLAN), special.get(K_ENCAP)
        if encap is not None:
            inner = level["encap"]
            if inner.__class__ is not dict:
                return None
            if inner:
                # a VLAN mask: the key's tag present, its TPID and CFI bit matched exactly
                if levels == 2 or etype is None or vlan is None:
                    return None
                tci = (O_CVLAN_TPID if levels else O_VLAN_TPID) + 2
                src.fail_if(f"not key[{tci}] & {VLAN_CFI >> 8}")
                src.fail_if(f"{etype}.__class__ is not int or {etype} != 0xFFFF")
                src.fail_if(f"{vlan}.__class__ is not int or not {vlan} & {VLAN_CFI}")
                prefix = "cvlan_" if levels else "vlan_"
                src.slots[prefix + "tpid"], src.slots[prefix + "tci"] = "0xFFFF", vlan
                levels += 1
                level, var = inner, encap
                continue
            src.miss_unless(encap, ())  # an empty ENCAP is absent
        if vlan is not None:  # a VLAN mask without its ENCAP: an error unless all zero
            src.fail_if(f"{vlan}.__class__ is not int or {vlan}")
        if etype is not None:
            src.fail_if(f"{etype}.__class__ is not int")
            src.slots["eth_type"] = f"(0xFFFF if {etype} else 0)"  # always matched exactly
            present.append((B_ETHERTYPE, etype))
        break
    for group in (_UNION, _PORTS_GROUP):
        both = names_bits & group
        if both & (both - 1):
            return None
    bits = " | ".join([str(static), *(f"({bit} if {expr} else 0)" for bit, expr in present)])
    src.line(f"mb = {bits}")
    defaults = {"vlan_tci": 0xFFFF, "cvlan_tci": 0xFFFF, "mac_proto": 0xFF}
    src.line(f"return mb, {src.pack(defaults)}")
    return src.build("d, key", "mask")


_key_shapes = _Shapes(_compile_key)
_mask_shapes = _Shapes(_compile_mask)
_key_codecs = _key_shapes.codecs
_mask_codecs = _mask_shapes.codecs


def clear_shapes() -> None:
    """Forget every compiled shape function, sighting and cached exact mask."""
    _key_shapes.clear()
    _mask_shapes.clear()
    _exact_masks.clear()


def install_shapes(key_attrs: Any, mask_attrs: Any = None) -> tuple[ShapeFn | None, ShapeFn | None]:
    """Compile the layouts of ``key_attrs`` and ``mask_attrs`` now, whatever the thresholds and
    budget, and put them first in line; returns the shape functions (None: not compilable)."""
    key_fn = mask_fn = None
    if key_attrs.__class__ is dict:
        key_fn = _compile_key(key_attrs)
        if key_fn is not None:
            _key_shapes.install(tuple(key_attrs), key_fn)
    if mask_attrs.__class__ is dict:
        mask_fn = _compile_mask(mask_attrs)
        if mask_fn is not None:
            _mask_shapes.install(tuple(mask_attrs), mask_fn)
    return key_fn, mask_fn


# --- metadata_from_attrs ----------------------------------------------------------------------

_META_OTHER = 10
_META_KINDS: dict[str, int] = dict.fromkeys(_NUMBERS, _META_OTHER) | {
    "in_port": 0,
    "recirc_id": 1,
    "dp_hash": 2,
    "priority": 3,
    "skb_mark": 4,
    "tunnel": 5,
    "ethernet": 6,
    "ethertype": 7,
    "ct_state": 8,
    "ct_zone": 8,
    "ct_mark": 8,
    "ct_labels": 9,
    "ct_orig_tuple_ipv4": 11,  # left to the reference
    "ct_orig_tuple_ipv6": 11,
}
"""What metadata_from_attrs does with each key attribute (header attributes are ignored)."""
_META_MAX = (NO_IN_PORT - 1, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
# Tunnel attribute -> (position in TunnelKey, largest value; -1: a flag attribute)
_TUNNEL_KEY_FIELDS: dict[str, tuple[int, int]] = {
    "id": (0, (1 << 64) - 1),
    "ipv4_src": (1, 0xFFFFFFFF),
    "ipv4_dst": (2, 0xFFFFFFFF),
    "tos": (3, 0xFF),
    "ttl": (4, 0xFF),
    "dont_fragment": (5, -1),
    "csum": (6, -1),
    "oam": (7, -1),
    "tp_src": (8, 0xFFFF),
    "tp_dst": (9, 0xFFFF),
}
_new = tuple.__new__
_ABSENT: Any = object()


def fast_metadata_from_attrs(key_attrs: Any) -> Metadata | None:
    """The metadata of an OVS_PACKET_CMD_EXECUTE key, or None when the reference must decide
    (errors, values of unusual types, conntrack tuples, tunnels other than plain IPv4)."""
    try:
        if key_attrs.__class__ is not dict:
            return None
        values = [NO_IN_PORT, 0, 0, 0, 0]  # in_port, recirc_id, dp_hash, priority, skb_mark
        tunnel: Any = _ABSENT
        l2 = 0
        for name, v in key_attrs.items():
            kind = _META_KINDS.get(name)
            if kind is None:
                return None  # an unknown attribute
            if kind < 5:
                if v.__class__ is not int or not 0 <= v <= _META_MAX[kind]:
                    return None
                values[kind] = v
            elif kind == _META_OTHER:
                continue
            elif kind == 5:
                tunnel = v
            elif kind == 6 or kind == 7:
                l2 |= kind - 5  # 1: ETHERNET, 2: ETHERTYPE
            elif kind == 8:
                if v.__class__ is not int or v:
                    return None
            elif kind == 9:
                if v.__class__ is not bytes or v != _Z16:
                    return None
            else:  # 11: conntrack tuples
                return None
        if l2 == 2:
            return None  # a layer-3 packet: refused (the reference says why)
        if tunnel is _ABSENT:
            tunnel = None
        else:
            tunnel = _tunnel_key(tunnel)
            if tunnel is None:
                return None
        return _new(Metadata, (*values, tunnel))
    except Exception:
        return None


def _tunnel_key(t: Any) -> TunnelKey | None:
    """The TunnelKey of an IPv4 tunnel nest, or None if unusual (or invalid)."""
    if t.__class__ is not dict:
        return None
    fields: list[Any] = [None, 0, 0, 0, 0, False, False, False, 0, 0]
    seen = 0
    for name, v in t.items():
        spec = _TUNNEL_KEY_FIELDS.get(name)
        if spec is None:
            return None
        i, top = spec
        if top < 0:
            if v is not True:
                return None
        elif v.__class__ is not int or not 0 <= v <= top:
            return None
        fields[i] = v
        seen |= 1 << i
    if not fields[2] or not seen & 0x10:
        return None  # no (or a zero) destination, or no TTL
    tunnel: TunnelKey = _new(TunnelKey, fields)
    return tunnel
