"""The flat flow key: one fixed-layout ``bytes`` object per packet, and its metadata prefix.

A flow key is ``KEY_SIZE`` bytes; every field the datapath matches on sits at a fixed offset
(:data:`FIELDS`).  A megaflow mask has the same layout, so the classifier matches with
``int.from_bytes(key, "big") & mask_int``.  All multi-byte fields are big-endian integers (or raw
byte strings for addresses), so "all ones" in a field is an exact match on it.

The layout mirrors the Linux datapath's ``struct sw_flow_key`` where that matters for behaviour:

* ``in_port`` is 16 bits; :data:`NO_IN_PORT` (65535) is the value of a key that had no in_port.
* ``tun_proto`` is 2 (AF_INET) in a key with a tunnel, 0 without; a mask with a tunnel has 0xff.
* ``tun_flags`` holds :data:`TUN_F_DF`, :data:`TUN_F_CSUM`, :data:`TUN_F_KEY`, :data:`TUN_F_OAM`.
* ``vlan_tci``/``cvlan_tci`` carry the 0x1000 "present" bit as OVS keys do; ``eth_type`` is the
  innermost type (0x0004 for 802.2/LLC frames, as the kernel stores them).
* ``mac_proto`` is 1 for Ethernet frames, 0 for layer-3 keys (no ETHERNET attribute).
* ``ip_proto`` doubles as the ARP opcode (low 8 bits, 0 if the opcode is above 255).
* ``tp_src``/``tp_dst`` hold the ports, or the ICMP/ICMPv6 type and code (as 16-bit values, like
  the kernel); ``tcp_flags`` the low 12 bits of the TCP flags word.
* One 36-byte union after the IP fields holds IPv4 src/dst, *or* ARP sip/tip/sha/tha, *or* IPv6
  src/dst/label, *or* up to three MPLS label stack entries and ``mpls_labels`` (the kernel's
  ``num_labels_mask``: 1, 3 or 7).  ``eth_type`` (always matched exactly) says which.

The first :data:`PREFIX_SIZE` bytes are metadata supplied by the caller, not read from the frame
(in_port, recirc_id, dp_hash, priority, skb_mark, tunnel).  :func:`metadata_prefix` builds them
once per port/tunnel and caches the result; :func:`ovsdp.flowtable.flow_key.extract_key` appends
the parsed headers.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import NamedTuple

from ..netlink.constants import (  # re-exported: the flow-key modules import them from here
    ETH_HLEN as ETH_HLEN,
    ETH_P_802_2 as ETH_P_802_2,
    ETH_P_8021AD as ETH_P_8021AD,
    ETH_P_8021Q as ETH_P_8021Q,
    ETH_P_ARP as ETH_P_ARP,
    ETH_P_IP as ETH_P_IP,
    ETH_P_IPV6 as ETH_P_IPV6,
    ETH_P_MPLS_MC as ETH_P_MPLS_MC,
    ETH_P_MPLS_UC as ETH_P_MPLS_UC,
    ETH_P_NSH as ETH_P_NSH,
    ETH_P_RARP as ETH_P_RARP,
    IPPROTO_ICMP as IPPROTO_ICMP,
    IPPROTO_ICMPV6 as IPPROTO_ICMPV6,
    IPPROTO_SCTP as IPPROTO_SCTP,
    IPPROTO_TCP as IPPROTO_TCP,
    IPPROTO_UDP as IPPROTO_UDP,
)

# --- constants ------------------------------------------------------------------------------

NO_IN_PORT = 0xFFFF
"""``in_port`` of a key that carried no IN_PORT attribute (the kernel's DP_MAX_PORTS)."""

MAC_PROTO_NONE = 0
MAC_PROTO_ETHERNET = 1

VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)
VLAN_CFI = 0x1000
MPLS_LABEL_DEPTH = 3

IPPROTO_FRAGMENT = 44
IPPROTO_NONE = 59

FRAG_NONE = 0
FRAG_FIRST = 1
FRAG_LATER = 2

ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136

AF_INET = 2  # tun_proto of a key with an IPv4 tunnel

TUN_F_DF = 0x01
TUN_F_CSUM = 0x02
TUN_F_KEY = 0x04
TUN_F_OAM = 0x08


class Field(NamedTuple):
    """Where a field sits in the flat key."""

    offset: int
    size: int


# name, struct code; fields inside the L3 union are declared separately below.
_SEQUENTIAL: tuple[tuple[str, str], ...] = (
    # metadata (the prefix)
    ("in_port", "H"),
    ("recirc_id", "I"),
    ("dp_hash", "I"),
    ("priority", "I"),
    ("skb_mark", "I"),
    ("tun_id", "Q"),
    ("tun_ipv4_src", "I"),
    ("tun_ipv4_dst", "I"),
    ("tun_tos", "B"),
    ("tun_ttl", "B"),
    ("tun_flags", "B"),
    ("tun_proto", "B"),
    ("tun_tp_src", "H"),
    ("tun_tp_dst", "H"),
    # L2
    ("eth_dst", "6s"),
    ("eth_src", "6s"),
    ("vlan_tpid", "H"),
    ("vlan_tci", "H"),
    ("cvlan_tpid", "H"),
    ("cvlan_tci", "H"),
    ("eth_type", "H"),
    ("mac_proto", "B"),
    # L3, common part
    ("ip_proto", "B"),
    ("ip_tos", "B"),
    ("ip_ttl", "B"),
    ("ip_frag", "B"),
    ("l3", "36s"),  # the union
    # L4
    ("tp_src", "H"),
    ("tp_dst", "H"),
    ("tcp_flags", "H"),
    # IPv6 neighbour discovery
    ("nd_target", "16s"),
    ("nd_sll", "6s"),
    ("nd_tll", "6s"),
)

# (name, code, offset inside the union)
_UNION: tuple[tuple[str, str, int], ...] = (
    ("ipv4_src", "I", 0),
    ("ipv4_dst", "I", 4),
    ("arp_sip", "I", 0),
    ("arp_tip", "I", 4),
    ("arp_sha", "6s", 8),
    ("arp_tha", "6s", 14),
    ("ipv6_src", "16s", 0),
    ("ipv6_dst", "16s", 16),
    ("ipv6_label", "I", 32),
    ("mpls_lse0", "I", 0),
    ("mpls_lse1", "I", 4),
    ("mpls_lse2", "I", 8),
    ("mpls_labels", "B", 12),
)

FULL_FORMAT = "!" + "".join(code for _, code in _SEQUENTIAL)
"""struct format of the whole key, the L3 union as one 36-byte string."""

_codes: dict[str, str] = {}
_fields: dict[str, Field] = {}
_off = 0
for _name, _code in _SEQUENTIAL:
    _size = struct.calcsize("!" + _code)
    _fields[_name] = Field(_off, _size)
    _codes[_name] = _code
    _off += _size
KEY_SIZE: int = _off
"""Size in bytes of every flat key and mask."""
_l3 = _fields["l3"].offset
for _name, _code, _rel in _UNION:
    _fields[_name] = Field(_l3 + _rel, struct.calcsize("!" + _code))
    _codes[_name] = _code
# aliases that read better in some contexts
for _alias, _target in (("arp_op", "ip_proto"), ("icmp_type", "tp_src"), ("icmp_code", "tp_dst")):
    _fields[_alias] = _fields[_target]
    _codes[_alias] = _codes[_target]
del _off, _name, _code, _size, _rel, _l3, _alias, _target

FIELDS: dict[str, Field] = _fields
"""Field name -> (offset, size) in the flat key and mask; union members share offsets."""

FIELD_STRUCTS: dict[str, struct.Struct] = {n: struct.Struct("!" + c) for n, c in _codes.items()}
"""Field name -> the struct that reads or writes that one field (``pack_into``/``unpack_from``)."""

PREFIX_SIZE: int = FIELDS["eth_dst"].offset
"""The metadata prefix is the first PREFIX_SIZE bytes of a key."""

L3_OFFSET: int = FIELDS["l3"].offset
L3_SIZE: int = FIELDS["l3"].size
TAIL_OFFSET: int = FIELDS["ip_proto"].offset
"""Offset of the part after the L2 fields (IP fields, union, L4, ND)."""

ZERO_KEY = bytes(KEY_SIZE)

assert struct.calcsize(FULL_FORMAT) == KEY_SIZE


def get_field(key: bytes | bytearray, name: str) -> int | bytes:
    """The value of one field of a flat key or mask (int, or bytes for addresses)."""
    return FIELD_STRUCTS[name].unpack_from(key, FIELDS[name].offset)[0]


def set_field(buf: bytearray, name: str, value: int | bytes) -> None:
    """Write one field into a mutable key or mask."""
    FIELD_STRUCTS[name].pack_into(buf, FIELDS[name].offset, value)


def exact_mask(*names: str) -> bytes:
    """A mask with every bit of the named fields set (handy for tests and the classifier)."""
    buf = bytearray(KEY_SIZE)
    for name in names:
        off, size = FIELDS[name]
        buf[off : off + size] = b"\xff" * size
    return bytes(buf)


def mask_key(key: bytes, mask: bytes) -> bytes:
    """``key AND mask`` as a flat key (how a megaflow's key is stored)."""
    return (int.from_bytes(key, "big") & int.from_bytes(mask, "big")).to_bytes(KEY_SIZE, "big")


# --- metadata ---------------------------------------------------------------------------------


class TunnelKey(NamedTuple):
    """IPv4 tunnel metadata of a decapsulated packet (the kernel's ip_tunnel_key).

    ``tun_id`` None means the tunnel carried no key (the TUNNEL_KEY flag is clear); VXLAN always
    carries one (the VNI).
    """

    tun_id: int | None = None
    ipv4_src: int = 0
    ipv4_dst: int = 0
    tos: int = 0
    ttl: int = 0
    df: bool = False
    csum: bool = False
    oam: bool = False
    tp_src: int = 0
    tp_dst: int = 0

    @property
    def flags(self) -> int:
        """The ``tun_flags`` byte of the flat key."""
        return (
            (TUN_F_DF if self.df else 0)
            | (TUN_F_CSUM if self.csum else 0)
            | (TUN_F_KEY if self.tun_id is not None else 0)
            | (TUN_F_OAM if self.oam else 0)
        )


class Metadata(NamedTuple):
    """Per-packet metadata that is not read from the frame."""

    in_port: int
    recirc_id: int = 0
    dp_hash: int = 0
    priority: int = 0
    skb_mark: int = 0
    tunnel: TunnelKey | None = None


_PREFIX = struct.Struct(FULL_FORMAT[: 1 + len("HIIIIQIIBBBBHH")])
assert _PREFIX.size == PREFIX_SIZE


@lru_cache(maxsize=4096)
def metadata_prefix(meta: Metadata) -> bytes:
    """The first :data:`PREFIX_SIZE` bytes of the key of every packet with this metadata.

    Cached: call it per packet with the port's Metadata, or keep the result per port.
    Raises ValueError if a value does not fit its field.
    """
    tun = meta.tunnel
    if not 0 <= meta.in_port <= NO_IN_PORT:
        raise ValueError(f"in_port {meta.in_port} does not fit 16 bits")
    try:
        if tun is None:
            return _PREFIX.pack(
                meta.in_port,
                meta.recirc_id,
                meta.dp_hash,
                meta.priority,
                meta.skb_mark,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            )
        return _PREFIX.pack(
            meta.in_port,
            meta.recirc_id,
            meta.dp_hash,
            meta.priority,
            meta.skb_mark,
            tun.tun_id or 0,
            tun.ipv4_src,
            tun.ipv4_dst,
            tun.tos,
            tun.ttl,
            tun.flags,
            AF_INET,
            tun.tp_src,
            tun.tp_dst,
        )
    except struct.error as exc:
        raise ValueError(f"metadata does not fit the key layout: {exc}") from None


def port_prefix(in_port: int) -> bytes:
    """The prefix of a packet fresh from port ``in_port``: no tunnel, recirc_id 0."""
    return metadata_prefix(Metadata(in_port))


def with_prefix(key: bytes, prefix: bytes) -> bytes:
    """``key`` with its metadata replaced (e.g. for recirculation with a new recirc_id)."""
    return prefix + key[PREFIX_SIZE:]


def key_metadata(key: bytes) -> Metadata:
    """The metadata held in a flat key's prefix."""
    (
        in_port,
        recirc,
        dp_hash,
        prio,
        mark,
        tun_id,
        src,
        dst,
        tos,
        ttl,
        flags,
        proto,
        tp_src,
        tp_dst,
    ) = _PREFIX.unpack_from(key)
    tunnel = None
    if proto:
        tunnel = TunnelKey(
            tun_id if flags & TUN_F_KEY else None,
            src,
            dst,
            tos,
            ttl,
            bool(flags & TUN_F_DF),
            bool(flags & TUN_F_CSUM),
            bool(flags & TUN_F_OAM),
            tp_src,
            tp_dst,
        )
    return Metadata(in_port, recirc, dp_hash, prio, mark, tunnel)
