"""``dump-flows filter=...``: OVS's OpenFlow-style flow filter, for the common fields.

ovs-dpctl parses the filter with ``parse_ofp_exact_flow`` (fields ``name=value`` and protocol
keywords such as ``ip`` or ``tcp``, separated by commas or spaces; values are exact) and prints a
datapath flow when, on every field the filter sets, the filter's value and the flow's value agree
on the bits the flow matches: a field the flow wildcards never excludes it.  This module does the
same over the datapath flow's ODP key and mask, read the way ``odp_flow_key_to_flow`` reads them
(``dl_type`` is the innermost ethertype of a VLAN flow, ``nw_src`` the ARP sender address of an
ARP flow, ``tp_src``/``tp_dst`` the ICMP type and code of an ICMP flow).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ETH_IP, ETH_IPV6, ETH_ARP, ETH_RARP = 0x0800, 0x86DD, 0x0806, 0x8035
ETH_MPLS, ETH_MPLS_MCAST = 0x8847, 0x8848
FLOW_DL_TYPE_NONE = 0x05FF
VLAN_CFI = 0x1000

PROTOCOLS: dict[str, tuple[int, int | None]] = {
    "ip": (ETH_IP, None),
    "ipv4": (ETH_IP, None),
    "ipv6": (ETH_IPV6, None),
    "icmp": (ETH_IP, 1),
    "icmp6": (ETH_IPV6, 58),
    "tcp": (ETH_IP, 6),
    "tcp6": (ETH_IPV6, 6),
    "udp": (ETH_IP, 17),
    "udp6": (ETH_IPV6, 17),
    "sctp": (ETH_IP, 132),
    "sctp6": (ETH_IPV6, 132),
    "arp": (ETH_ARP, None),
    "rarp": (ETH_RARP, None),
    "mpls": (ETH_MPLS, None),
    "mplsm": (ETH_MPLS_MCAST, None),
}
"""Protocol keywords: (dl_type, nw_proto)."""


class FilterError(ValueError):
    """A filter OVS would refuse (the message is what goes in "Failed to parse filter (...)")."""


# -- prerequisites (meta-flow's MFP_*) -----------------------------------------------------------

Prereq = Callable[[dict[str, int]], bool]


def _is_ip(f: dict[str, int]) -> bool:
    return f.get("dl_type") in (ETH_IP, ETH_IPV6)


def _proto(dl_types: tuple[int, ...], proto: int) -> Prereq:
    return lambda f: f.get("dl_type") in dl_types and f.get("nw_proto") == proto


PREREQS: dict[str, Prereq] = {
    "none": lambda f: True,
    "ipv4": lambda f: f.get("dl_type") == ETH_IP,
    "ipv6": lambda f: f.get("dl_type") == ETH_IPV6,
    "ip_any": _is_ip,
    "arp": lambda f: f.get("dl_type") in (ETH_ARP, ETH_RARP),
    "tcp": _proto((ETH_IP, ETH_IPV6), 6),
    "udp": _proto((ETH_IP, ETH_IPV6), 17),
    "sctp": _proto((ETH_IP, ETH_IPV6), 132),
    "icmpv4": _proto((ETH_IP,), 1),
    "icmpv6": _proto((ETH_IPV6,), 58),
}


@dataclass(frozen=True)
class Field:
    """A filterable field: the flow-view slot it reads, its value syntax, prerequisite, and the
    mask it matches with (and how a value maps into the slot)."""

    slot: str
    kind: str  # int, ip4, ip6, mac, port
    bits: int
    prereq: str = "none"
    mask: int | None = None
    shift: int = 0
    or_bits: int = 0

    @property
    def full(self) -> int:
        return self.mask if self.mask is not None else (1 << self.bits) - 1


def _f(slot: str, kind: str, bits: int, prereq: str = "none", **kw: Any) -> Field:
    return Field(slot, kind, bits, prereq, **kw)


FIELDS: dict[str, Field] = {
    "in_port": _f("in_port", "port", 32),
    "skb_priority": _f("skb_priority", "int", 32),
    "skb_mark": _f("skb_mark", "int", 32),
    "pkt_mark": _f("skb_mark", "int", 32),
    "recirc_id": _f("recirc_id", "int", 32),
    "dp_hash": _f("dp_hash", "int", 32),
    "tun_id": _f("tun_id", "int", 64),
    "tunnel_id": _f("tun_id", "int", 64),
    "tun_src": _f("tun_src", "ip4", 32),
    "tun_dst": _f("tun_dst", "ip4", 32),
    "dl_src": _f("dl_src", "mac", 48),
    "eth_src": _f("dl_src", "mac", 48),
    "dl_dst": _f("dl_dst", "mac", 48),
    "eth_dst": _f("dl_dst", "mac", 48),
    "dl_type": _f("dl_type", "int", 16),
    "eth_type": _f("dl_type", "int", 16),
    "vlan_tci": _f("vlan_tci", "int", 16),
    "dl_vlan": _f("vlan_tci", "vid", 16, mask=0x1FFF, or_bits=VLAN_CFI),
    "dl_vlan_pcp": _f("vlan_tci", "int", 16, mask=0xF000, shift=13, or_bits=VLAN_CFI),
    "nw_src": _f("nw_src", "ip4", 32, "ipv4"),
    "ip_src": _f("nw_src", "ip4", 32, "ipv4"),
    "nw_dst": _f("nw_dst", "ip4", 32, "ipv4"),
    "ip_dst": _f("nw_dst", "ip4", 32, "ipv4"),
    "ipv6_src": _f("ipv6_src", "ip6", 128, "ipv6"),
    "ipv6_dst": _f("ipv6_dst", "ip6", 128, "ipv6"),
    "ipv6_label": _f("ipv6_label", "int", 20, "ipv6"),
    "nw_proto": _f("nw_proto", "int", 8, "ip_any"),
    "ip_proto": _f("nw_proto", "int", 8, "ip_any"),
    "nw_tos": _f("nw_tos", "int", 8, "ip_any", mask=0xFC),
    "ip_dscp": _f("nw_tos", "int", 8, "ip_any", mask=0xFC, shift=2),
    "nw_ecn": _f("nw_tos", "int", 8, "ip_any", mask=0x03),
    "ip_ecn": _f("nw_tos", "int", 8, "ip_any", mask=0x03),
    "nw_ttl": _f("nw_ttl", "int", 8, "ip_any"),
    "tcp_src": _f("tp_src", "int", 16, "tcp"),
    "tp_src": _f("tp_src", "int", 16, "tcp"),
    "tcp_dst": _f("tp_dst", "int", 16, "tcp"),
    "tp_dst": _f("tp_dst", "int", 16, "tcp"),
    "udp_src": _f("tp_src", "int", 16, "udp"),
    "udp_dst": _f("tp_dst", "int", 16, "udp"),
    "sctp_src": _f("tp_src", "int", 16, "sctp"),
    "sctp_dst": _f("tp_dst", "int", 16, "sctp"),
    "icmp_type": _f("tp_src", "int", 8, "icmpv4"),
    "icmp_code": _f("tp_dst", "int", 8, "icmpv4"),
    "icmpv6_type": _f("tp_src", "int", 8, "icmpv6"),
    "icmpv6_code": _f("tp_dst", "int", 8, "icmpv6"),
    "arp_op": _f("nw_proto", "int", 8, "arp"),
    "arp_spa": _f("nw_src", "ip4", 32, "arp"),
    "arp_tpa": _f("nw_dst", "ip4", 32, "arp"),
    "arp_sha": _f("arp_sha", "mac", 48, "arp"),
    "arp_tha": _f("arp_tha", "mac", 48, "arp"),
}
"""The fields ovsdp-dpctl's filter understands (OVS's names and aliases)."""


@dataclass
class FlowFilter:
    """A parsed filter: (slot, value, mask) conditions, all of which must agree."""

    text: str
    conditions: list[tuple[str, int, int]] = field(default_factory=list)

    def matches(self, key: Mapping[str, Any] | None, mask: Mapping[str, Any] | None) -> bool:
        """Whether a datapath flow (its ODP key and mask) passes the filter."""
        if key is None:
            return True
        view = flow_view(key, mask)
        for slot, value, fmask in self.conditions:
            dv, dm = view.get(slot, (0, 0))
            if (value & dm & fmask) != (dv & dm & fmask):
                return False
        return True


def parse_filter(text: str, port_names: Mapping[str, int] | None = None) -> FlowFilter:
    """Parse ``dump-flows filter=`` text (FilterError with OVS's kind of message)."""
    flt = FlowFilter(text)
    known: dict[str, int] = {}  # slot -> value, for prerequisites and "set multiple times"
    tokens = _tokens(text)
    i = 0
    while i < len(tokens):
        name = tokens[i]
        i += 1
        proto = PROTOCOLS.get(name)
        if proto is not None:
            dl_type, nw_proto = proto
            if "dl_type" in known:
                raise FilterError(f"{text}: Ethernet type set multiple times")
            known["dl_type"] = dl_type
            flt.conditions.append(("dl_type", dl_type, 0xFFFF))
            if nw_proto is not None:
                if "nw_proto" in known:
                    raise FilterError(f"{text}: network protocol set multiple times")
                known["nw_proto"] = nw_proto
                flt.conditions.append(("nw_proto", nw_proto, 0xFF))
            continue
        if i >= len(tokens):
            raise FilterError(f"{text}: field {name} missing value")
        value_text = tokens[i]
        i += 1
        fld = FIELDS.get(name)
        if fld is None:
            raise FilterError(f"{text}: unknown field {name}")
        if not PREREQS[fld.prereq](known):
            raise FilterError(f"{text}: prerequisites not met for setting {name}")
        if name in known or (fld.slot in ("dl_type", "nw_proto") and fld.slot in known):
            raise FilterError(f"{text}: field {name} set multiple times")
        raw = parse_value(fld, name, value_text, port_names or {})
        known[name] = raw
        if fld.slot in ("dl_type", "nw_proto"):
            known[fld.slot] = raw
        if fld.kind == "vid":
            value = 0 if raw == 0xFFFF else (raw & 0xFFF) | VLAN_CFI
        else:
            value = ((raw << fld.shift) | fld.or_bits) & fld.full
        flt.conditions.append((fld.slot, value, fld.full))
    return flt


def _tokens(text: str) -> list[str]:
    """Tokens as strtok_r yields them: after a protocol keyword or a value comes a name (which
    ends at ``=``, ``,`` or space); after a name, its value (which ends at ``,`` or space)."""
    out: list[str] = []
    pos = 0
    want_value = False
    while True:
        seps = ", " if want_value else "=, "
        while pos < len(text) and text[pos] in seps:
            pos += 1
        if pos >= len(text):
            return out
        end = pos
        while end < len(text) and text[end] not in seps:
            end += 1
        token = text[pos:end]
        out.append(token)
        pos = min(end + 1, len(text))
        want_value = (not want_value) and token not in PROTOCOLS


_INT = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


def _int(text: str) -> int:
    if not _INT.match(text):
        raise ValueError(text)
    return int(text, 0) if not re.match(r"0[0-7]+$", text) else int(text, 8)


def parse_value(fld: Field, name: str, text: str, port_names: Mapping[str, int]) -> int:
    """A field's value as an integer (FilterError if it does not parse or does not fit)."""
    try:
        if fld.kind == "port":
            if text in port_names:
                return int(port_names[text])
            value = _int(text)
        elif fld.kind == "ip4":
            value = int(ipaddress.IPv4Address(text))
        elif fld.kind == "ip6":
            value = int(ipaddress.IPv6Address(text))
        elif fld.kind == "mac":
            parts = text.split(":")
            if len(parts) != 6 or not all(re.fullmatch(r"[0-9a-fA-F]{1,2}", p) for p in parts):
                raise ValueError(text)
            value = int.from_bytes(bytes(int(p, 16) for p in parts), "big")
        else:
            value = _int(text)
    except ValueError:
        raise FilterError(f"{text}: invalid value for field {name}") from None
    limit = 16 if fld.kind == "vid" else fld.bits - fld.shift
    if value >= 1 << limit:
        raise FilterError(f"{text}: value too large for field {name}")
    return value


# -- the flow view of an ODP key and mask --------------------------------------------------------


def _mac(value: bytes | bytearray) -> int:
    return int.from_bytes(bytes(value), "big")


def _struct(key: Mapping[str, Any], mask: Mapping[str, Any] | None, name: str) -> tuple[Any, Any]:
    """An attribute's key and mask values (mask None: every bit exact; absent: wildcarded)."""
    kv = key.get(name)
    if kv is None:
        return None, None
    if mask is None:
        return kv, True
    return kv, mask.get(name)


def _put(
    view: dict[str, tuple[int, int]], slot: str, kv: Any, mv: Any, attr: str | None, bits: int
) -> None:
    """Add a slot from an attribute value (``attr`` names a struct field; None: the value)."""
    value = getattr(kv, attr) if attr else kv
    if isinstance(value, bytes | bytearray):
        value = _mac(value)
    if mv is True:
        mvalue = (1 << bits) - 1
    elif mv is None:
        mvalue = 0
    else:
        mvalue = getattr(mv, attr) if attr else mv
        if isinstance(mvalue, bytes | bytearray):
            mvalue = _mac(mvalue)
    view[slot] = (int(value), int(mvalue))


def flow_view(key: Mapping[str, Any], mask: Mapping[str, Any] | None) -> dict[str, tuple[int, int]]:
    """The slots a filter compares, as (value, mask) read from an ODP key and mask."""
    view: dict[str, tuple[int, int]] = {}
    for slot, attr, bits in (
        ("in_port", "in_port", 32),
        ("skb_priority", "priority", 32),
        ("skb_mark", "skb_mark", 32),
        ("recirc_id", "recirc_id", 32),
        ("dp_hash", "dp_hash", 32),
    ):
        kv, mv = _struct(key, mask, attr)
        if kv is not None:
            _put(view, slot, kv, mv, None, bits)
    tun, tun_mask = _struct(key, mask, "tunnel")
    if tun is not None:
        tmask = None if tun_mask is True else (tun_mask or {})
        for slot, attr, bits in (
            ("tun_id", "id", 64),
            ("tun_src", "ipv4_src", 32),
            ("tun_dst", "ipv4_dst", 32),
        ):
            kv, mv = _struct(tun, tmask, attr)
            if kv is not None:
                _put(view, slot, kv, mv, None, bits)
    eth, eth_mask = _struct(key, mask, "ethernet")
    if eth is not None:
        _put(view, "dl_src", eth, eth_mask, "src", 48)
        _put(view, "dl_dst", eth, eth_mask, "dst", 48)
    inner_key: Mapping[str, Any] = key
    inner_mask: Mapping[str, Any] | None = mask
    vlan, vlan_mask = _struct(key, mask, "vlan")
    if vlan is not None:
        _put(view, "vlan_tci", vlan, vlan_mask, None, 16)
        while "vlan" in inner_key and "encap" in inner_key:
            inner_key = inner_key["encap"]
            inner_mask = None if inner_mask is None else (inner_mask.get("encap") or {})
    elif eth is not None:
        view["vlan_tci"] = (0, 0xFFFF)
    ethertype, ethertype_mask = _struct(inner_key, inner_mask, "ethertype")
    if ethertype is not None:
        _put(view, "dl_type", ethertype, ethertype_mask, None, 16)
    elif eth is not None:
        view["dl_type"] = (FLOW_DL_TYPE_NONE, 0xFFFF)
    _l3_view(view, inner_key, inner_mask)
    return view


def _l3_view(
    view: dict[str, tuple[int, int]], key: Mapping[str, Any], mask: Mapping[str, Any] | None
) -> None:
    kv, mv = _struct(key, mask, "ipv4")
    if kv is not None:
        for slot, attr, bits in (
            ("nw_src", "src", 32),
            ("nw_dst", "dst", 32),
            ("nw_proto", "proto", 8),
            ("nw_tos", "tos", 8),
            ("nw_ttl", "ttl", 8),
        ):
            _put(view, slot, kv, mv, attr, bits)
    kv, mv = _struct(key, mask, "ipv6")
    if kv is not None:
        for slot, attr, bits in (
            ("ipv6_src", "src", 128),
            ("ipv6_dst", "dst", 128),
            ("ipv6_label", "label", 20),
            ("nw_proto", "proto", 8),
            ("nw_tos", "tclass", 8),
            ("nw_ttl", "hlimit", 8),
        ):
            _put(view, slot, kv, mv, attr, bits)
    kv, mv = _struct(key, mask, "arp")
    if kv is not None:
        _put(view, "nw_src", kv, mv, "sip", 32)
        _put(view, "nw_dst", kv, mv, "tip", 32)
        _put(view, "arp_sha", kv, mv, "sha", 48)
        _put(view, "arp_tha", kv, mv, "tha", 48)
        op_mask = 0xFF if mv is True else (mv.op & 0xFF if mv is not None else 0)
        view["nw_proto"] = (kv.op & 0xFF, op_mask)
    for l4, (src, dst) in (
        ("tcp", ("src", "dst")),
        ("udp", ("src", "dst")),
        ("sctp", ("src", "dst")),
        ("icmp", ("type", "code")),
        ("icmpv6", ("type", "code")),
    ):
        kv, mv = _struct(key, mask, l4)
        if kv is not None:
            bits = 8 if l4.startswith("icmp") else 16
            _put(view, "tp_src", kv, mv, src, bits)
            _put(view, "tp_dst", kv, mv, dst, bits)
