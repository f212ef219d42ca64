"""Flat flow keys <-> netlink ``ovs_key`` attributes, as the Linux datapath's flow_netlink.c does.

Value model: the dicts of the ``ovs_key`` attribute space (see :mod:`ovsdp.netlink.schema`), e.g.
``{"in_port": 1, "ethernet": OvsKeyEthernet(src, dst), "ethertype": 0x0800, "ipv4": ...}``; a
VLAN frame is ``ethertype`` (TPID) + ``vlan`` (TCI) + ``encap`` {inner attributes}.

* :func:`key_to_attrs` -- the key of an upcall (or of a flow dump: pass the masked key), in the
  kernel's serialisation order (``__ovs_nla_put_key`` with ``is_mask`` false);
* :func:`mask_to_attrs` -- a flow's mask as the kernel dumps it (``is_mask`` true): the masked
  key decides which attributes appear, the mask supplies the values; a TUNNEL mask is always
  present, a mask IN_PORT carries 0xffff in its upper half, TPIDs show as 0xffff;
* :func:`flow_to_attrs` -- both, for a dump;
* :func:`attrs_to_key` -- a flow put's KEY and MASK to a flat key and mask, with the kernel's
  validation (``ovs_nla_get_match``: attribute pairing, VLAN rules, "match_validate", masks no
  wider than the key allows); errors are :class:`~ovsdp.netlink.errors.NetlinkError` (EINVAL);
* :func:`metadata_from_attrs` -- the metadata an OVS_PACKET_CMD_EXECUTE key supplies.

Not supported (EINVAL with a reason): IPv6 tunnel endpoints, Geneve/VXLAN-GBP/ERSPAN options,
tunnel info "bridge" mode, NSH, PACKET_TYPE, ND_EXTENSIONS, TUNNEL_INFO, IPV6_EXTHDRS, and
conntrack fields with a non-zero value (zero-valued CT_STATE/ZONE/MARK/LABELS/ORIG_TUPLE key
attributes are accepted and ignored: every ovsdp packet is untracked).  Keys are emitted without
the conntrack attributes (like a kernel built without conntrack) and without IPV6_EXTHDRS.

Speed: :func:`attrs_to_key` and :func:`metadata_from_attrs` first try the fast paths of
:mod:`.key_fast` (compiled per attribute layout, or table-driven loops), which answer only when
the result is certain; everything else, errors included, goes through the rule-by-rule
implementation kept here (``_attrs_to_key_reference``, ``_metadata_from_attrs_reference``), so
results and errors are the reference's.  The emitters unpack the flat key once into locals
(``_emit``); ``_put_key_reference`` is the first implementation, kept for the tests.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Mapping
from typing import Any

from ovsdp.netlink.codec import CODECS
from ovsdp.netlink.errors import NetlinkError, einval
from ovsdp.netlink.structs import (
    OvsKeyArp,
    OvsKeyEthernet,
    OvsKeyIcmp,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyNd,
    OvsKeyPorts,
)

from .key_fast import fast_attrs_to_key, fast_metadata_from_attrs
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
    FIELD_STRUCTS,
    FIELDS,
    FRAG_LATER,
    FULL_FORMAT,
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
    key_metadata,
    mask_key,
)

Attrs = dict[str, Any]

_FULL = struct.Struct(FULL_FORMAT)
_Key = namedtuple("_Key", [name for name, _ in _SEQUENTIAL])  # type: ignore[misc]
_U_IP4 = struct.Struct("!II")
_U_ARP = struct.Struct("!II6s6s")
_U_IP6 = struct.Struct("!16s16sI")
_U_MPLS = struct.Struct("!IIIB")

_ND_TYPES = (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT)
_MPLS_TYPES = (ETH_P_MPLS_UC, ETH_P_MPLS_MC)
_ARP_TYPES = (ETH_P_ARP, ETH_P_RARP)

# --- flat key -> netlink --------------------------------------------------------------------


def _unpack(key: bytes) -> Any:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a flat key has {KEY_SIZE} bytes, not {len(key)}")
    return _Key._make(_FULL.unpack(key))


def _fields(key: bytes) -> tuple[Any, ...]:
    """Every field of a flat key, in layout order (the L3 union as 36 bytes)."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"a flat key has {KEY_SIZE} bytes, not {len(key)}")
    return _FULL_UNPACK(key)


def key_to_attrs(key: bytes, mask: bytes | None = None, *, as_mask: bool = False) -> Attrs:
    """The netlink key of a flat key, in the kernel's order.

    With ``mask``: the attributes of ``key AND mask`` (a dumped flow's key), or with
    ``as_mask=True`` the mask's attributes (same as :func:`mask_to_attrs`).  For the unmasked key
    that identifies a flow installed without a UFID, pass no mask.
    """
    if as_mask:
        if mask is None:
            raise ValueError("as_mask needs the mask")
        return mask_to_attrs(key, mask)
    if mask is not None:
        key = mask_key(key, mask)
    k = _fields(key)
    return _emit(k, k, False)


def mask_to_attrs(key: bytes, mask: bytes) -> Attrs:
    """The netlink mask of a flow as the kernel dumps it (the masked key picks the attributes)."""
    sw = _fields(mask_key(key, mask))
    return _emit(sw, _fields(mask), True)


def flow_to_attrs(key: bytes, mask: bytes) -> tuple[Attrs, Attrs]:
    """``(masked key attributes, mask attributes)`` of a megaflow, for a flow dump."""
    sw = _fields(mask_key(key, mask))
    return _emit(sw, sw, False), _emit(sw, _fields(mask), True)


def _key_to_attrs_reference(key: bytes) -> Attrs:
    """:func:`key_to_attrs` (without a mask) as first written (the reference of the tests)."""
    k = _unpack(key)
    return _put_key_reference(k, k, False)


def _mask_to_attrs_reference(key: bytes, mask: bytes) -> Attrs:
    """:func:`mask_to_attrs` as first written (the reference of the tests)."""
    return _put_key_reference(_unpack(mask_key(key, mask)), _unpack(mask), True)


# Positions in the tuple of a key's fields (layout order), checked against the layout.
_I_IN_PORT, _I_TUN_PROTO, _I_VLAN_TCI, _I_CVLAN_TCI, _I_ETH_TYPE = 0, 11, 17, 19, 20
_I_MAC_PROTO, _I_IP_PROTO, _I_IP_FRAG, _I_TP_SRC = 21, 22, 25, 27
assert [name for name, _ in _SEQUENTIAL].index("nd_tll") == 32
for _i, _name in (
    (_I_IN_PORT, "in_port"),
    (_I_TUN_PROTO, "tun_proto"),
    (_I_VLAN_TCI, "vlan_tci"),
    (_I_CVLAN_TCI, "cvlan_tci"),
    (_I_ETH_TYPE, "eth_type"),
    (_I_MAC_PROTO, "mac_proto"),
    (_I_IP_PROTO, "ip_proto"),
    (_I_IP_FRAG, "ip_frag"),
    (_I_TP_SRC, "tp_src"),
):
    assert _SEQUENTIAL[_i][0] == _name
del _i, _name
_FULL_UNPACK = _FULL.unpack
_new = tuple.__new__


def _emit(sw: tuple[Any, ...], out: tuple[Any, ...], is_mask: bool) -> Attrs:
    """``sw`` (the masked key's fields) decides which attributes appear, ``out`` supplies their
    values: the kernel's __ovs_nla_put_key."""
    (
        in_port,
        recirc_id,
        dp_hash,
        priority,
        skb_mark,
        tun_id,
        tun_src,
        tun_dst,
        tun_tos,
        tun_ttl,
        tun_flags,
        _tun_proto,
        tun_tp_src,
        tun_tp_dst,
        eth_dst,
        eth_src,
        vlan_tpid,
        vlan_tci,
        cvlan_tpid,
        cvlan_tci,
        eth_type,
        _mac_proto,
        ip_proto,
        ip_tos,
        ip_ttl,
        ip_frag,
        l3,
        tp_src,
        tp_dst,
        tcp_flags,
        nd_target,
        nd_sll,
        nd_tll,
    ) = out
    d: Attrs = {"recirc_id": recirc_id, "dp_hash": dp_hash, "priority": priority}
    sw_tun_proto = sw[_I_TUN_PROTO]
    if sw_tun_proto or is_mask:
        t: Attrs = {}
        if tun_flags & TUN_F_KEY:
            t["id"] = tun_id
        if sw_tun_proto == AF_INET:
            if tun_src:
                t["ipv4_src"] = tun_src
            if tun_dst:
                t["ipv4_dst"] = tun_dst
        if tun_tos:
            t["tos"] = tun_tos
        t["ttl"] = tun_ttl
        if tun_flags & TUN_F_DF:
            t["dont_fragment"] = True
        if tun_flags & TUN_F_CSUM:
            t["csum"] = True
        if tun_tp_src:
            t["tp_src"] = tun_tp_src
        if tun_tp_dst:
            t["tp_dst"] = tun_tp_dst
        if tun_flags & TUN_F_OAM:
            t["oam"] = True
        d["tunnel"] = t
    if sw[_I_IN_PORT] == NO_IN_PORT:
        if is_mask and in_port == 0xFFFF:
            d["in_port"] = 0xFFFFFFFF
    else:
        d["in_port"] = (0xFFFF0000 | in_port) if is_mask else in_port
    d["skb_mark"] = skb_mark
    cur = d
    etype = sw[_I_ETH_TYPE]
    if sw[_I_MAC_PROTO] == MAC_PROTO_ETHERNET:
        d["ethernet"] = _new(OvsKeyEthernet, (eth_src, eth_dst))
        sw_tci = sw[_I_VLAN_TCI]
        if sw_tci or etype in VLAN_TPIDS:
            cur["ethertype"] = 0xFFFF if is_mask else vlan_tpid
            cur["vlan"] = vlan_tci
            cur["encap"] = cur = {}
            if not sw_tci:
                return d
            sw_ctci = sw[_I_CVLAN_TCI]
            if sw_ctci or etype in VLAN_TPIDS:
                cur["ethertype"] = 0xFFFF if is_mask else cvlan_tpid
                cur["vlan"] = cvlan_tci
                cur["encap"] = cur = {}
                if not sw_ctci:
                    return d
        if etype == ETH_P_802_2:
            # 802.2 frames have no ETHERTYPE in the key; the mask shows its (exact) mask
            if is_mask and eth_type:
                cur["ethertype"] = eth_type
            return d
    cur["ethertype"] = eth_type
    if etype == ETH_P_IP:
        src, dst = _U_IP4.unpack_from(l3)
        cur["ipv4"] = _new(OvsKeyIpv4, (src, dst, ip_proto, ip_tos, ip_ttl, ip_frag))
    elif etype == ETH_P_IPV6:
        src6, dst6, label = _U_IP6.unpack_from(l3)
        cur["ipv6"] = _new(OvsKeyIpv6, (src6, dst6, label, ip_proto, ip_tos, ip_ttl, ip_frag))
    else:
        if etype in _ARP_TYPES:
            sip, tip, sha, tha = _U_ARP.unpack_from(l3)
            cur["arp"] = _new(OvsKeyArp, (sip, tip, ip_proto, sha, tha))
        elif etype in _MPLS_TYPES:
            l0, l1, l2, labels = _U_MPLS.unpack_from(l3)
            cur["mpls"] = (l0, l1, l2)[: min(labels.bit_count(), MPLS_LABEL_DEPTH)]
        return d  # (a VLAN TPID here is a third tag: nothing is known about the rest)
    if sw[_I_IP_FRAG] != FRAG_LATER:
        proto = sw[_I_IP_PROTO]
        if proto == IPPROTO_TCP:
            cur["tcp"] = _new(OvsKeyPorts, (tp_src, tp_dst))
            cur["tcp_flags"] = tcp_flags
        elif proto == IPPROTO_UDP:
            cur["udp"] = _new(OvsKeyPorts, (tp_src, tp_dst))
        elif proto == IPPROTO_SCTP:
            cur["sctp"] = _new(OvsKeyPorts, (tp_src, tp_dst))
        elif proto == IPPROTO_ICMP:
            if etype == ETH_P_IP:
                cur["icmp"] = _new(OvsKeyIcmp, (tp_src & 0xFF, tp_dst & 0xFF))
        elif proto == IPPROTO_ICMPV6 and etype == ETH_P_IPV6:
            cur["icmpv6"] = _new(OvsKeyIcmp, (tp_src & 0xFF, tp_dst & 0xFF))
            if sw[_I_TP_SRC] in _ND_TYPES:
                cur["nd"] = _new(OvsKeyNd, (nd_target, nd_sll, nd_tll))
    return d


def _put_tunnel(out: Any, sw_tun_proto: int) -> Attrs:
    t: Attrs = {}
    flags = out.tun_flags
    if flags & TUN_F_KEY:
        t["id"] = out.tun_id
    if sw_tun_proto == AF_INET:
        if out.tun_ipv4_src:
            t["ipv4_src"] = out.tun_ipv4_src
        if out.tun_ipv4_dst:
            t["ipv4_dst"] = out.tun_ipv4_dst
    if out.tun_tos:
        t["tos"] = out.tun_tos
    t["ttl"] = out.tun_ttl
    if flags & TUN_F_DF:
        t["dont_fragment"] = True
    if flags & TUN_F_CSUM:
        t["csum"] = True
    if out.tun_tp_src:
        t["tp_src"] = out.tun_tp_src
    if out.tun_tp_dst:
        t["tp_dst"] = out.tun_tp_dst
    if flags & TUN_F_OAM:
        t["oam"] = True
    return t


def _put_key_reference(sw: Any, out: Any, is_mask: bool) -> Attrs:
    """``sw`` decides which attributes appear, ``out`` supplies their values."""
    d: Attrs = {"recirc_id": out.recirc_id, "dp_hash": out.dp_hash, "priority": out.priority}
    if sw.tun_proto or is_mask:
        d["tunnel"] = _put_tunnel(out, sw.tun_proto)
    if sw.in_port == NO_IN_PORT:
        if is_mask and out.in_port == 0xFFFF:
            d["in_port"] = 0xFFFFFFFF
    else:
        d["in_port"] = (0xFFFF0000 if is_mask else 0) | out.in_port
    d["skb_mark"] = out.skb_mark
    cur = d
    etype = sw.eth_type
    if sw.mac_proto == MAC_PROTO_ETHERNET:
        d["ethernet"] = OvsKeyEthernet(out.eth_src, out.eth_dst)
        if sw.vlan_tci or etype in VLAN_TPIDS:
            cur["ethertype"] = 0xFFFF if is_mask else out.vlan_tpid
            cur["vlan"] = out.vlan_tci
            inner: Attrs = {}
            cur["encap"] = inner
            cur = inner
            if not sw.vlan_tci:
                return d
            if sw.cvlan_tci or etype in VLAN_TPIDS:
                cur["ethertype"] = 0xFFFF if is_mask else out.cvlan_tpid
                cur["vlan"] = out.cvlan_tci
                inner = {}
                cur["encap"] = inner
                cur = inner
                if not sw.cvlan_tci:
                    return d
        if etype == ETH_P_802_2:
            # 802.2 frames have no ETHERTYPE in the key; the mask shows its (exact) mask
            if is_mask and out.eth_type:
                cur["ethertype"] = out.eth_type
            return d
    cur["ethertype"] = out.eth_type
    if etype in VLAN_TPIDS:
        return d  # a third tag: nothing is known about the rest
    if etype == ETH_P_IP:
        src, dst = _U_IP4.unpack_from(out.l3)
        cur["ipv4"] = OvsKeyIpv4(src, dst, out.ip_proto, out.ip_tos, out.ip_ttl, out.ip_frag)
    elif etype == ETH_P_IPV6:
        src, dst, label = _U_IP6.unpack_from(out.l3)
        cur["ipv6"] = OvsKeyIpv6(src, dst, label, out.ip_proto, out.ip_tos, out.ip_ttl, out.ip_frag)
    elif etype in _ARP_TYPES:
        sip, tip, sha, tha = _U_ARP.unpack_from(out.l3)
        cur["arp"] = OvsKeyArp(sip, tip, out.ip_proto, sha, tha)
    elif etype in _MPLS_TYPES:
        l0, l1, l2, labels = _U_MPLS.unpack_from(out.l3)
        cur["mpls"] = (l0, l1, l2)[: min(labels.bit_count(), MPLS_LABEL_DEPTH)]
    if (etype == ETH_P_IP or etype == ETH_P_IPV6) and sw.ip_frag != FRAG_LATER:
        proto = sw.ip_proto
        if proto == IPPROTO_TCP:
            cur["tcp"] = OvsKeyPorts(out.tp_src, out.tp_dst)
            cur["tcp_flags"] = out.tcp_flags
        elif proto == IPPROTO_UDP:
            cur["udp"] = OvsKeyPorts(out.tp_src, out.tp_dst)
        elif proto == IPPROTO_SCTP:
            cur["sctp"] = OvsKeyPorts(out.tp_src, out.tp_dst)
        elif etype == ETH_P_IP and proto == IPPROTO_ICMP:
            cur["icmp"] = OvsKeyIcmp(out.tp_src & 0xFF, out.tp_dst & 0xFF)
        elif etype == ETH_P_IPV6 and proto == IPPROTO_ICMPV6:
            cur["icmpv6"] = OvsKeyIcmp(out.tp_src & 0xFF, out.tp_dst & 0xFF)
            if sw.tp_src in _ND_TYPES:
                cur["nd"] = OvsKeyNd(out.nd_target, out.nd_sll, out.nd_tll)
    return d


# --- netlink -> flat key and mask -----------------------------------------------------------

_ATTR_NAMES = frozenset(CODECS["ovs_key"].numbers)
_UNSUPPORTED = {
    "nsh": "NSH keys are not supported",
    "packet_type": "PACKET_TYPE is a userspace-only key attribute",
    "nd_extensions": "ND_EXTENSIONS is a userspace-only key attribute",
    "tunnel_info": "TUNNEL_INFO is kernel-internal",
    "ipv6_exthdrs": "IPV6_EXTHDRS matching is not supported",
}
_CT_ATTRS = (
    "ct_state",
    "ct_zone",
    "ct_mark",
    "ct_labels",
    "ct_orig_tuple_ipv4",
    "ct_orig_tuple_ipv6",
)
_UNSUPPORTED_SET = frozenset(_UNSUPPORTED)
_CT_SET = frozenset(_CT_ATTRS)
_L3L4_ATTRS = frozenset(
    (
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
    )
)
_TUN_FIELDS = (
    "tun_id",
    "tun_ipv4_src",
    "tun_ipv4_dst",
    "tun_tos",
    "tun_ttl",
    "tun_flags",
    "tun_tp_src",
    "tun_tp_dst",
)
_PUT = {
    name: (FIELD_STRUCTS[name], off, size if FIELD_STRUCTS[name].format.endswith("s") else 0)
    for name, (off, size) in FIELDS.items()
}


def _group(first: str, fmt: str) -> tuple[struct.Struct, int, tuple[int, ...]]:
    """Several adjacent fields written with one pack_into: (struct, offset, bytes lengths)."""
    st = struct.Struct("!" + fmt)
    lengths = tuple(int(code[:-1]) if code.endswith("s") else 0 for code in fmt.split())
    return st, FIELDS[first].offset, lengths if any(lengths) else ()


_G_ETH = _group("eth_dst", "6s 6s")
_G_IP = _group("ip_proto", "B B B B")
_G_IPV4 = _group("ipv4_src", "I I")
_G_IPV6 = _group("ipv6_src", "16s 16s I")
_G_ARP = _group("arp_sip", "I I 6s 6s")
_G_PORTS = _group("tp_src", "H H")
_G_ND = _group("nd_target", "16s 6s 6s")


class _Match:
    """The key and mask being built (the kernel's sw_flow_match)."""

    __slots__ = ("key", "mask")

    def __init__(self) -> None:
        self.key = bytearray(KEY_SIZE)
        self.mask = bytearray(KEY_SIZE)

    def put(self, name: str, value: Any, is_mask: bool) -> None:
        st, off, blen = _PUT[name]
        if blen and len(value) != blen:
            raise einval(f"{name}: expected {blen} bytes, got {value!r}")
        try:
            st.pack_into(self.mask if is_mask else self.key, off, value)
        except struct.error:
            raise einval(f"{name}: bad value {value!r}") from None

    def put_group(
        self, group: tuple[struct.Struct, int, tuple[int, ...]], values: Any, is_mask: bool
    ) -> None:
        st, off, lengths = group
        if lengths:
            for value, blen in zip(values, lengths, strict=True):
                if blen and len(value) != blen:
                    raise einval(f"expected {blen} bytes, got {value!r}")
        try:
            st.pack_into(self.mask if is_mask else self.key, off, *values)
        except struct.error as exc:
            raise einval(f"bad value in {tuple(values)!r}: {exc}") from None

    def get(self, name: str, is_mask: bool = False) -> Any:
        st, off, _ = _PUT[name]
        return st.unpack_from(self.mask if is_mask else self.key, off)[0]


def _is_zero(value: Any) -> bool:
    """True if a mask attribute's payload would be all zero bytes (so it counts as absent)."""
    if type(value) is int:
        return value == 0
    if isinstance(value, tuple | list):
        for v in value:
            if not _is_zero(v):
                return False
        return True
    if isinstance(value, bytes | bytearray):
        return not any(value)
    if isinstance(value, Mapping):
        return not value  # a nest carries attribute headers unless it is empty
    if isinstance(value, int):  # bool, IntEnum
        return value == 0
    return False


def _value_zero(value: Any) -> bool:
    """True if every value in ``value`` (nests included) is zero."""
    if isinstance(value, Mapping):
        return all(_value_zero(v) for v in value.values())
    return _is_zero(value)


def _parse_attrs(attrs: Any, a: dict[str, Any], bits: set[str], nz: bool, where: str) -> None:
    """Merge one level of attributes into ``a``/``bits`` (the kernel's __parse_flow_nlattrs)."""
    if not isinstance(attrs, Mapping):
        raise einval(f"{where}: expected nested key attributes, got {type(attrs).__name__}")
    for name, value in attrs.items():
        if name not in _ATTR_NAMES:
            raise einval(f"{where}: unknown key attribute {name!r}")
        if name in bits:
            raise einval(f"{where}: duplicate key attribute {name!r}")
        if nz and _is_zero(value):
            continue  # an all-zero mask attribute is the same as no attribute
        bits.add(name)
        a[name] = value


def _parse_vlan_level(
    m: _Match, bits: set[str], a: dict[str, Any], is_mask: bool, inner: bool, where: str
) -> bool:
    what = "C-VLAN" if inner else "VLAN"
    prefix = "cvlan_" if inner else "vlan_"
    tci = a["vlan"] if "vlan" in bits else 0
    tpid = a["ethertype"] if "ethertype" in bits else 0
    if not is_mask:
        if not ("ethernet" in bits and "ethertype" in bits and tpid in VLAN_TPIDS):
            return False  # not a VLAN frame
        if "vlan" not in bits or "encap" not in bits:
            raise einval(f"{where}: invalid {what} frame: VLAN and ENCAP attributes are required")
        if not isinstance(tci, int) or isinstance(tci, bool):
            raise einval(f"{where}: {what} TCI must be an integer")
        if not tci & VLAN_CFI:
            if tci:
                raise einval(f"{where}: {what} TCI 0x{tci:04x} lacks the 0x1000 (present) bit")
            if a["encap"]:
                raise einval(f"{where}: truncated {what} header (TCI 0) has a non-empty encap")
    else:
        if "encap" not in bits:
            return False
        if not m.get(prefix + "tci") & VLAN_CFI:
            raise einval(f"{where}: encap mask given for a non-{what} frame")
        if tpid != 0xFFFF:
            raise einval(f"{where}: the {what} TPID must be matched exactly (mask {tpid!r})")
        if not isinstance(tci, int) or not tci & VLAN_CFI:
            raise einval(f"{where}: the {what} TCI mask must match the 0x1000 bit exactly")
    m.put(prefix + "tpid", tpid, is_mask)
    m.put(prefix + "tci", tci, is_mask)
    encap = a.pop("encap")
    for name in ("encap", "vlan", "ethertype"):
        bits.discard(name)
        a.pop(name, None)
    _parse_attrs(encap, a, bits, is_mask, f"{where}.encap")
    return True


def _parse_vlan(m: _Match, bits: set[str], a: dict[str, Any], is_mask: bool, where: str) -> None:
    if _parse_vlan_level(m, bits, a, is_mask, False, where) and m.get("vlan_tci") & VLAN_CFI:
        _parse_vlan_level(m, bits, a, is_mask, True, f"{where}.encap")


def _tunnel_from_attrs(m: _Match, t: Any, is_mask: bool, where: str) -> None:
    if not isinstance(t, Mapping):
        raise einval(f"{where}.tunnel: expected nested tunnel attributes")
    flags = 0
    ttl = ipv4 = ipv6 = False
    opts = ""
    for name, v in t.items():
        if name == "id":
            m.put("tun_id", v, is_mask)
            flags |= TUN_F_KEY
        elif name == "ipv4_src" or name == "ipv4_dst":
            m.put("tun_" + name, v, is_mask)
            ipv4 = True
        elif name == "ipv6_src" or name == "ipv6_dst":
            ipv6 = True
            if not _value_zero(v):
                raise einval(f"{where}.tunnel: IPv6 tunnel endpoints are not supported")
        elif name == "tos" or name == "ttl":
            m.put("tun_" + name, v, is_mask)
            ttl = ttl or name == "ttl"
        elif name == "dont_fragment":
            flags |= TUN_F_DF if v else 0
        elif name == "csum":
            flags |= TUN_F_CSUM if v else 0
        elif name == "oam":
            flags |= TUN_F_OAM if v else 0
        elif name == "tp_src" or name == "tp_dst":
            m.put("tun_" + name, v, is_mask)
        elif name in ("geneve_opts", "vxlan_opts", "erspan_opts"):
            if opts:
                raise einval(f"{where}.tunnel: more than one tunnel option block ({opts}, {name})")
            opts = name
            if not is_mask or not _value_zero(v):
                raise einval(f"{where}.tunnel: {name} (tunnel options) are not supported")
        elif name == "pad":
            pass
        elif name == "ipv4_info_bridge":
            raise einval(f"{where}.tunnel: tunnel info bridge mode is not supported")
        else:
            raise einval(f"{where}.tunnel: unknown tunnel attribute {name!r}")
    m.put("tun_flags", flags, is_mask)
    m.put("tun_proto", 0xFF if is_mask else AF_INET, is_mask)
    if ipv4 and ipv6:
        raise einval(f"{where}.tunnel: mixed IPv4 and IPv6 tunnel attributes")
    if not is_mask:
        if not ipv4 and not ipv6:
            raise einval(f"{where}.tunnel: no tunnel destination address")
        if ipv6:
            raise einval(f"{where}.tunnel: IPv6 tunnel destination is zero")
        if not m.get("tun_ipv4_dst"):
            raise einval(f"{where}.tunnel: IPv4 tunnel destination address is zero")
        if not ttl:
            raise einval(f"{where}.tunnel: tunnel TTL not specified")


def _eth_type(m: _Match, value: Any, is_mask: bool, where: str) -> None:
    if is_mask:
        value = 0xFFFF  # the EtherType is always matched exactly
    elif not isinstance(value, int) or value < 0x0600:
        raise einval(f"{where}: EtherType {value!r} is below the minimum 0x0600")
    m.put("eth_type", value, is_mask)


def _metadata(m: _Match, bits: set[str], a: dict[str, Any], is_mask: bool, where: str) -> None:
    """The kernel's metadata_from_nlattrs: consumes the metadata attributes from ``bits``."""
    for name in ("dp_hash", "recirc_id", "priority"):
        if name in bits:
            bits.discard(name)
            m.put(name, a[name], is_mask)
    if "in_port" in bits:
        bits.discard("in_port")
        port = a["in_port"]
        if is_mask:
            port = 0xFFFF  # in_port is always matched exactly
        elif not isinstance(port, int) or not 0 <= port < NO_IN_PORT:
            raise einval(f"{where}: in_port {port!r} exceeds the maximum {NO_IN_PORT - 1}")
        m.put("in_port", port, is_mask)
    elif not is_mask:
        m.put("in_port", NO_IN_PORT, False)
    if "skb_mark" in bits:
        bits.discard("skb_mark")
        m.put("skb_mark", a["skb_mark"], is_mask)
    if "tunnel" in bits:
        bits.discard("tunnel")
        _tunnel_from_attrs(m, a["tunnel"], is_mask, where)
    if bits & _CT_SET:
        for name in _CT_ATTRS:
            if name in bits:
                bits.discard(name)
                if not is_mask and not _value_zero(a[name]):
                    raise einval(
                        f"{where}: {name} {a[name]!r}: conntrack is not supported "
                        "(only untracked packets, all-zero ct fields)"
                    )
    mac_proto = MAC_PROTO_ETHERNET
    if "ethernet" not in bits and "ethertype" in bits:
        mac_proto = MAC_PROTO_NONE
    m.put("mac_proto", 0xFF if is_mask else mac_proto, is_mask)
    if mac_proto == MAC_PROTO_NONE:
        bits.discard("ethertype")
        _eth_type(m, a["ethertype"], is_mask, where)


def _struct(a: dict[str, Any], name: str, n: int, where: str) -> tuple[Any, ...]:
    value = a[name]
    if not isinstance(value, tuple | list) or len(value) != n:
        raise einval(f"{where}: {name} must be a {n}-field struct, got {value!r}")
    return tuple(value)


def _key_from_attrs(
    m: _Match, attrs: set[str], a: dict[str, Any], is_mask: bool, where: str
) -> None:
    """The kernel's ovs_key_from_nlattrs: every attribute must be consumed."""
    bits = set(attrs)
    if bits & _UNSUPPORTED_SET:
        raise einval(f"{where}: {_UNSUPPORTED[min(bits & _UNSUPPORTED_SET)]}")
    _metadata(m, bits, a, is_mask, where)
    put = m.put
    if "ethernet" in bits:
        bits.discard("ethernet")
        src, dst = _struct(a, "ethernet", 2, where)
        m.put_group(_G_ETH, (dst, src), is_mask)
        if "vlan" in bits:
            raise einval(f"{where}: unexpected VLAN attribute (needs a VLAN ethertype and encap)")
        if "ethertype" in bits:
            bits.discard("ethertype")
            _eth_type(m, a["ethertype"], is_mask, where)
        elif not is_mask:
            put("eth_type", ETH_P_802_2, False)
    elif not m.get("eth_type"):
        raise einval(f"{where}: either an Ethernet header or an EtherType is required")
    if "ipv4" in bits:
        bits.discard("ipv4")
        src, dst, proto, tos, ttl, frag = _struct(a, "ipv4", 6, where)
        if not is_mask and frag > FRAG_LATER:
            raise einval(f"{where}: IPv4 frag type {frag} is out of range (max {FRAG_LATER})")
        m.put_group(_G_IP, (proto, tos, ttl, frag), is_mask)
        m.put_group(_G_IPV4, (src, dst), is_mask)
    if "ipv6" in bits:
        bits.discard("ipv6")
        src, dst, label, proto, tclass, hlimit, frag = _struct(a, "ipv6", 7, where)
        if not is_mask and frag > FRAG_LATER:
            raise einval(f"{where}: IPv6 frag type {frag} is out of range (max {FRAG_LATER})")
        if not is_mask and label & 0xFFF00000:
            raise einval(f"{where}: IPv6 flow label 0x{label:x} does not fit 20 bits")
        m.put_group(_G_IPV6, (src, dst, label), is_mask)
        m.put_group(_G_IP, (proto, tclass, hlimit, frag), is_mask)
    if "arp" in bits:
        bits.discard("arp")
        sip, tip, op, sha, tha = _struct(a, "arp", 5, where)
        if not is_mask and op & 0xFF00:
            raise einval(f"{where}: ARP opcode {op} is above 255")
        m.put_group(_G_ARP, (sip, tip, sha, tha), is_mask)
        put("ip_proto", op & 0xFF, is_mask)
    if "mpls" in bits:
        bits.discard("mpls")
        lses = a["mpls"]
        if not isinstance(lses, tuple | list) or not 1 <= len(lses) <= MPLS_LABEL_DEPTH:
            raise einval(f"{where}: MPLS needs 1 to {MPLS_LABEL_DEPTH} label stack entries")
        for i, lse in enumerate(lses):
            put(f"mpls_lse{i}", lse, is_mask)
        put("mpls_labels", (1 << len(lses)) - 1, is_mask)
    for name in ("tcp", "udp", "sctp"):
        if name in bits:
            bits.discard(name)
            m.put_group(_G_PORTS, _struct(a, name, 2, where), is_mask)
        if name == "tcp" and "tcp_flags" in bits:
            bits.discard("tcp_flags")
            put("tcp_flags", a["tcp_flags"], is_mask)
    for name in ("icmp", "icmpv6"):
        if name in bits:
            bits.discard(name)
            m.put_group(_G_PORTS, _struct(a, name, 2, where), is_mask)
    if "nd" in bits:
        bits.discard("nd")
        m.put_group(_G_ND, _struct(a, "nd", 3, where), is_mask)
    if bits:
        raise einval(f"{where}: unexpected key attributes {sorted(bits)}")


def _match_validate(m: _Match, key_bits: set[str], mask_bits: set[str]) -> None:
    """The kernel's match_validate: required key attributes, and masks the key allows."""
    expected: set[str] = set()
    allowed = (key_bits - _L3L4_ATTRS) | {"tunnel", "in_port", "ethertype"}
    etype = m.get("eth_type")
    eth_exact = m.get("eth_type", True) == 0xFFFF
    proto = m.get("ip_proto")
    proto_exact = m.get("ip_proto", True) == 0xFF
    if etype in _ARP_TYPES:
        expected.add("arp")
        if eth_exact:
            allowed.add("arp")
    if etype in _MPLS_TYPES:
        expected.add("mpls")
        if eth_exact:
            allowed.add("mpls")
    if etype == ETH_P_IP or etype == ETH_P_IPV6:
        l3 = "ipv4" if etype == ETH_P_IP else "ipv6"
        expected.add(l3)
        if eth_exact:
            allowed.update((l3, "ct_orig_tuple_" + l3))
        if m.get("ip_frag") != FRAG_LATER:
            l4 = {
                IPPROTO_UDP: ("udp",),
                IPPROTO_SCTP: ("sctp",),
                IPPROTO_TCP: ("tcp", "tcp_flags"),
                IPPROTO_ICMP if etype == ETH_P_IP else IPPROTO_ICMPV6: (
                    "icmp" if etype == ETH_P_IP else "icmpv6",
                ),
            }.get(proto, ())
            expected.update(l4)
            if proto_exact:
                allowed.update(l4)
            if etype == ETH_P_IPV6 and proto == IPPROTO_ICMPV6 and m.get("tp_src") in _ND_TYPES:
                expected.add("nd")
                allowed.discard("ct_orig_tuple_ipv6")
                if m.get("tp_src", True) == 0xFF:
                    allowed.add("nd")
    if etype == ETH_P_NSH:
        expected.add("nsh")
    missing = expected - key_bits
    if missing:
        raise einval(
            f"key: eth_type 0x{etype:04x} (ip proto {proto}) needs the key attributes "
            f"{sorted(missing)}"
        )
    extra = mask_bits - allowed
    if extra:
        raise einval(
            f"mask: {sorted(extra)} not allowed (absent from the key, or the key's "
            "eth_type / ip proto / ICMPv6 type is not matched exactly)"
        )


def _all_ones(key_attrs: Attrs) -> Attrs:
    """The mask the kernel builds when a put has no MASK: every key attribute's bytes set."""
    raw = bytearray(CODECS["ovs_key"].encode(key_attrs))
    _fill_ones(raw, 0, len(raw), _NESTS_OVS_KEY)
    return CODECS["ovs_key"].decode(bytes(raw))


_NESTS_VXLAN: dict[int, Any] = {}
_NESTS_TUNNEL: dict[int, Any] = {11: _NESTS_VXLAN}
_NESTS_OVS_KEY: dict[int, Any] = {16: _NESTS_TUNNEL}
_NESTS_OVS_KEY[1] = _NESTS_OVS_KEY


def _fill_ones(buf: bytearray, off: int, end: int, nests: dict[int, Any]) -> None:
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, off)
        sub = nests.get(atype & 0x3FFF)
        if sub is not None:
            _fill_ones(buf, off + 4, off + alen, sub)
        else:
            buf[off + 4 : off + alen] = b"\xff" * (alen - 4)
        off += (alen + 3) & ~3


def attrs_to_key(key_attrs: Attrs, mask_attrs: Attrs | None = None) -> tuple[bytes, bytes]:
    """``(flat key, flat mask)`` of a flow put's KEY and optional MASK attributes.

    Implements the kernel's ``ovs_nla_get_match``: the key is validated and parsed, the mask
    (or, without one, an exact mask of the key's own attributes; a present tunnel is then
    matched exactly) is parsed with "all-zero attribute = absent", the VLAN TCIs are matched
    exactly unless the mask narrows them, and ``match_validate`` checks the pairing rules.
    The key is returned unmasked.  Raises NetlinkError (EINVAL) with a one-line reason.

    The common shapes take the fast path (:mod:`.key_fast`); anything it does not take (errors
    included) goes through :func:`_attrs_to_key_reference`, which decides.
    """
    result = fast_attrs_to_key(key_attrs, mask_attrs)
    if result is None:
        return _attrs_to_key_reference(key_attrs, mask_attrs)
    return result


def _attrs_to_key_reference(
    key_attrs: Attrs, mask_attrs: Attrs | None = None
) -> tuple[bytes, bytes]:
    """:func:`attrs_to_key` written out rule by rule, as the kernel does it (the reference the
    fast path is tested against, and what decides every input the fast path does not take)."""
    try:
        m = _Match()
        a: dict[str, Any] = {}
        key_bits: set[str] = set()
        _parse_attrs(key_attrs, a, key_bits, False, "key")
        _parse_vlan(m, key_bits, a, False, "key")
        _key_from_attrs(m, key_bits, a, False, "key")
        if mask_attrs is None:
            mask_attrs = _all_ones(key_attrs)
            if m.get("tun_proto"):
                for name in _TUN_FIELDS:
                    off, size = FIELDS[name]
                    m.mask[off : off + size] = b"\xff" * size
        ma: dict[str, Any] = {}
        mask_bits: set[str] = set()
        _parse_attrs(mask_attrs, ma, mask_bits, True, "mask")
        m.put("vlan_tci", 0xFFFF, True)
        m.put("cvlan_tci", 0xFFFF, True)
        _parse_vlan(m, mask_bits, ma, True, "mask")
        _key_from_attrs(m, mask_bits, ma, True, "mask")
        _match_validate(m, key_bits, mask_bits)
    except NetlinkError:
        raise
    except (TypeError, ValueError, AttributeError, struct.error) as exc:
        raise einval(f"malformed flow key attributes: {exc}") from None
    return bytes(m.key), bytes(m.mask)


def masked_key_attrs(key_attrs: Attrs, mask_attrs: Attrs | None = None) -> Attrs:
    """``key AND mask`` in netlink form, as a dump shows a flow put with these attributes."""
    key, mask = attrs_to_key(key_attrs, mask_attrs)
    return key_to_attrs(mask_key(key, mask))


def metadata_from_attrs(key_attrs: Attrs) -> Metadata:
    """The metadata of an OVS_PACKET_CMD_EXECUTE key (the kernel reads nothing else from it).

    in_port absent -> :data:`~.layout.NO_IN_PORT` (the datapath then uses the local port as the
    input port).  Header attributes are ignored; a key without ETHERNET but with ETHERTYPE (a
    layer-3 packet) is rejected, as are non-zero conntrack fields and unsupported tunnels.
    """
    meta = fast_metadata_from_attrs(key_attrs)
    if meta is None:
        return _metadata_from_attrs_reference(key_attrs)
    return meta


def _metadata_from_attrs_reference(key_attrs: Attrs) -> Metadata:
    """:func:`metadata_from_attrs` rule by rule (the reference of the fast path)."""
    try:
        m = _Match()
        a: dict[str, Any] = {}
        bits: set[str] = set()
        _parse_attrs(key_attrs, a, bits, False, "key")
        _metadata(m, bits, a, False, "key")
        if m.get("mac_proto") == MAC_PROTO_NONE:
            raise einval("key: layer-3 (non-Ethernet) packets are not supported")
    except NetlinkError:
        raise
    except (TypeError, ValueError, AttributeError, struct.error) as exc:
        raise einval(f"malformed packet key attributes: {exc}") from None
    return key_metadata(bytes(m.key))
