"""Flow keys and masks: ODP text <-> the ``ovs_key`` value model of :mod:`ovsdp.netlink`.

A key (and a mask) is a dict ``{attribute name: value}`` of the ``ovs_key`` attribute space, in
the order the attributes appear; nested attributes (``encap``, ``tunnel``, ``nsh``) are dicts of
their own spaces.  Attributes the codec does not name are ``int`` keys with raw payload bytes.

Parsing follows OVS's ``odp_flow_from_string``: a field written without ``/mask`` is exact, a
field left out of a struct attribute is wildcarded (zero in key and mask), ``recirc_id`` cannot
carry a mask.  Formatting follows ``odp_flow_format``: without ``verbose`` fully wildcarded fields
and attributes are left out and exact fields print without ``/mask``; with ``verbose`` every
field prints (wildcards as ``x/0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ovsdp.netlink import CODECS
from ovsdp.netlink.structs import (
    ErspanMetadata,
    GtpuMetadata,
    OvsKeyArp,
    OvsKeyCtTupleIpv4,
    OvsKeyCtTupleIpv6,
    OvsKeyEthernet,
    OvsKeyIcmp,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyNd,
    OvsKeyNdExtensions,
    OvsKeyPorts,
    OvsNshKeyBase,
    OvsNshKeyMd1,
)

from . import fmt
from .errors import OdpParseError
from .scanner import Scanner, c_value
from .ufid import parse_ufid

Key = dict[Any, Any]
PortNames = Mapping[str, int]

MAX_NESTED = 32
"""Nesting depth (encap, actions in actions) at which OVS's parser gives up; so do we."""

# --- flag names ---------------------------------------------------------------------------------

TNL_F_OAM = 1 << 0
TNL_F_DONT_FRAGMENT = 1 << 1
TNL_F_CSUM = 1 << 2
TNL_F_KEY = 1 << 3
TNL_F_MASK = 0xF
TUNNEL_FLAG_NAMES = {
    TNL_F_OAM: "oam",
    TNL_F_DONT_FRAGMENT: "df",
    TNL_F_CSUM: "csum",
    TNL_F_KEY: "key",
}
# tunnel-key flag attributes, in the order OVS emits them
TUNNEL_FLAG_ATTRS = (
    ("dont_fragment", TNL_F_DONT_FRAGMENT),
    ("csum", TNL_F_CSUM),
    ("oam", TNL_F_OAM),
)

CT_STATE_NAMES = {
    0x01: "new",
    0x02: "est",
    0x04: "rel",
    0x08: "rpl",
    0x10: "inv",
    0x20: "trk",
    0x40: "snat",
    0x80: "dnat",
}
TCP_FLAG_NAMES = {
    0x001: "fin",
    0x002: "syn",
    0x004: "rst",
    0x008: "psh",
    0x010: "ack",
    0x020: "urg",
    0x040: "ece",
    0x080: "cwr",
    0x100: "ns",
}
FRAG_NAMES = {0: "no", 1: "first", 2: "later"}

VLAN_CFI = 0x1000
GTPU_ATTR = "gtpu_opts"
"""OVS userspace's OVS_TUNNEL_KEY_ATTR_GTPU_OPTS (tunnel key attribute 16 with a 2-byte payload;
the codec tells it from the kernel's 0-byte IPV4_INFO_BRIDGE flag by length)."""

# --- attribute names ----------------------------------------------------------------------------

TEXT_NAMES: dict[str, str] = {
    "encap": "encap",
    "priority": "skb_priority",
    "in_port": "in_port",
    "ethernet": "eth",
    "vlan": "vlan",
    "ethertype": "eth_type",
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "tcp": "tcp",
    "udp": "udp",
    "icmp": "icmp",
    "icmpv6": "icmpv6",
    "arp": "arp",
    "nd": "nd",
    "skb_mark": "skb_mark",
    "tunnel": "tunnel",
    "sctp": "sctp",
    "tcp_flags": "tcp_flags",
    "dp_hash": "dp_hash",
    "recirc_id": "recirc_id",
    "mpls": "mpls",
    "ct_state": "ct_state",
    "ct_zone": "ct_zone",
    "ct_mark": "ct_mark",
    "ct_labels": "ct_label",
    "ct_orig_tuple_ipv4": "ct_tuple4",
    "ct_orig_tuple_ipv6": "ct_tuple6",
    "nsh": "nsh",
    "packet_type": "packet_type",
    "nd_extensions": "nd_ext",
}
"""Codec attribute name -> ODP text name, for every attribute OVS userspace knows."""

KEY_NUMBERS: dict[str, int] = dict(CODECS["ovs_key"].numbers)

ZERO: dict[str, Any] = {
    "ethernet": OvsKeyEthernet(src=bytes(6), dst=bytes(6)),
    "ipv4": OvsKeyIpv4(src=0, dst=0, proto=0, tos=0, ttl=0, frag=0),
    "ipv6": OvsKeyIpv6(src=bytes(16), dst=bytes(16), label=0, proto=0, tclass=0, hlimit=0, frag=0),
    "tcp": OvsKeyPorts(src=0, dst=0),
    "udp": OvsKeyPorts(src=0, dst=0),
    "sctp": OvsKeyPorts(src=0, dst=0),
    "icmp": OvsKeyIcmp(type=0, code=0),
    "icmpv6": OvsKeyIcmp(type=0, code=0),
    "arp": OvsKeyArp(sip=0, tip=0, op=0, sha=bytes(6), tha=bytes(6)),
    "nd": OvsKeyNd(target=bytes(16), sll=bytes(6), tll=bytes(6)),
    "ct_orig_tuple_ipv4": OvsKeyCtTupleIpv4(src=0, dst=0, src_port=0, dst_port=0, proto=0),
    "ct_orig_tuple_ipv6": OvsKeyCtTupleIpv6(
        src=bytes(16), dst=bytes(16), src_port=0, dst_port=0, proto=0
    ),
    "nd_extensions": OvsKeyNdExtensions(nd_reserved=0, nd_options_type=0),
}
"""An all-zero value of every struct-valued key attribute."""

# (text name, struct field, kind) of the struct-valued attributes, in text order
_ETH = (("src", "src", "eth"), ("dst", "dst", "eth"))
_PORTS = (("src", "src", "be16"), ("dst", "dst", "be16"))
_ICMP = (("type", "type", "u8u"), ("code", "code", "u8u"))
STRUCT_FIELDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "ethernet": _ETH,
    "ipv4": (
        ("src", "src", "ipv4"),
        ("dst", "dst", "ipv4"),
        ("proto", "proto", "u8u"),
        ("tos", "tos", "u8x"),
        ("ttl", "ttl", "u8u"),
        ("frag", "frag", "frag"),
    ),
    "ipv6": (
        ("src", "src", "in6"),
        ("dst", "dst", "in6"),
        ("label", "label", "label"),
        ("proto", "proto", "u8u"),
        ("tclass", "tclass", "u8x"),
        ("hlimit", "hlimit", "u8u"),
        ("frag", "frag", "frag"),
    ),
    "tcp": _PORTS,
    "udp": _PORTS,
    "sctp": _PORTS,
    "icmp": _ICMP,
    "icmpv6": _ICMP,
    "arp": (
        ("sip", "sip", "ipv4"),
        ("tip", "tip", "ipv4"),
        ("op", "op", "be16"),
        ("sha", "sha", "eth"),
        ("tha", "tha", "eth"),
    ),
    "nd": (("target", "target", "in6"), ("sll", "sll", "eth"), ("tll", "tll", "eth")),
    "ct_orig_tuple_ipv4": (
        ("src", "src", "ipv4"),
        ("dst", "dst", "ipv4"),
        ("proto", "proto", "u8u"),
        ("tp_src", "src_port", "be16"),
        ("tp_dst", "dst_port", "be16"),
    ),
    # OVS prints src_port/dst_port here but its parser wants tp_src/tp_dst: we read both.
    "ct_orig_tuple_ipv6": (
        ("src", "src", "in6"),
        ("dst", "dst", "in6"),
        ("proto", "proto", "u8u"),
        ("src_port", "src_port", "be16"),
        ("dst_port", "dst_port", "be16"),
    ),
}
_FIELD_ALIASES = {"ct_orig_tuple_ipv6": {"tp_src": "src_port", "tp_dst": "dst_port"}}

_KIND_BITS = {
    "u8u": 8,
    "u8x": 8,
    "be16": 16,
    "be16x": 16,
    "be32": 32,
    "ipv4": 32,
    "label": 20,
    "be64": 64,
}
_KIND_FULL = {
    "u8u": 0xFF,
    "u8x": 0xFF,
    "be16": 0xFFFF,
    "be16x": 0xFFFF,
    "be32": 0xFFFFFFFF,
    "ipv4": 0xFFFFFFFF,
    "label": 0xFFFFF,
    "be64": (1 << 64) - 1,
    "frag": 0xFF,
    "eth": b"\xff" * 6,
    "in6": b"\xff" * 16,
}


# --- payload bytes (the C code's view of a value) -------------------------------------------------


def attr_payload(space: str, name: Any, value: Any) -> bytes:
    """The netlink payload bytes of one attribute ``name`` of codec space ``space``."""
    raw = CODECS[space].encode({name: value})
    length = int.from_bytes(raw[0:2], "little")
    return raw[4:length]


def _attr_number(name: Any) -> int:
    return name if isinstance(name, int) else KEY_NUMBERS[name]


_SCALAR_ONES = {
    name: (1 << (8 * len(attr_payload("ovs_key", name, 0)))) - 1
    for name in (
        "priority",
        "in_port",
        "vlan",
        "ethertype",
        "skb_mark",
        "dp_hash",
        "recirc_id",
        "ct_state",
        "ct_zone",
        "ct_mark",
        "packet_type",
    )
}


_STRUCT_ONES: dict[str, Any] = {}


def _mask_is_const(name: Any, mask: Any, exact: bool) -> bool:
    """OVS's test of a mask attribute: all-ones (``exact``) or all-zeros (wildcard)."""
    if name == "encap" or name not in TEXT_NAMES:
        return False
    c = 0xFF if exact else 0
    if name == "tcp_flags":
        return (mask & 0x0FFF) == (0x0FFF if exact else 0)
    if name == "ipv6":
        addr = bytes([c]) * 16
        return (
            (mask.label & 0xFFFFF) == (0xFFFFF if exact else 0)
            and mask.proto == c
            and mask.tclass == c
            and mask.hlimit == c
            and mask.frag == c
            and mask.src == addr
            and mask.dst == addr
        )
    if isinstance(mask, int) and name in _SCALAR_ONES:
        return bool(mask == (_SCALAR_ONES[name] if exact else 0))
    if name in ZERO:
        # struct attributes: every field (OVS skips the padding of arp and the ct tuples)
        if not exact:
            return bool(mask == ZERO[name])
        ones = _STRUCT_ONES.get(name)
        if ones is None:
            ones = _STRUCT_ONES[name] = _struct_ones(ZERO[name])
        return bool(mask == ones)
    data = attr_payload("ovs_key", name, mask)
    if name == "arp":
        data = data[:22]
    elif name == "ct_orig_tuple_ipv4":
        data = data[:13]
    elif name == "ct_orig_tuple_ipv6":
        data = data[:37]
    return all(b == c for b in data)


def mask_is_exact(name: Any, mask: Any) -> bool:
    """True if ``mask`` fully matches the key attribute ``name`` (OVS's notion of exact)."""
    return _mask_is_const(name, mask, True)


def mask_is_wildcard(name: Any, mask: Any) -> bool:
    """True if ``mask`` matches nothing of the key attribute ``name``."""
    return _mask_is_const(name, mask, False)


def _zero_like(value: Any) -> Any:
    """A value of the same shape as ``value`` with every field zero (flags stay present)."""
    if value is True:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return 0
    if isinstance(value, (bytes, bytearray)):
        return bytes(len(value))
    if isinstance(value, dict):
        return {k: _zero_like(v) for k, v in value.items()}
    if hasattr(value, "_fields"):
        return type(value)(*(_zero_like(v) for v in value))
    if isinstance(value, (tuple, list)):
        return tuple(_zero_like(v) for v in value)
    return value


def zero_mask(key: Key) -> Key:
    """An all-wildcard mask for ``key`` (same attributes, every value zero)."""
    return {name: _zero_like(value) for name, value in key.items()}


def exact_mask(key: Key) -> Key:
    """The mask that matches every field of ``key`` exactly: what OVS's parser produces for the
    key's verbose text (no ``/mask``; a tunnel's ``flags(...)`` then masks all three flags)."""
    mask = {
        name: (exact_mask(value) if name == "encap" else _ones_like("ovs_key", name, value))
        for name, value in key.items()
    }
    if "tunnel" in mask:
        for attr, _bit in TUNNEL_FLAG_ATTRS:
            mask["tunnel"][attr] = True
    if "nsh" in mask and "md1" not in mask["nsh"]:
        mask["nsh"]["md1"] = OvsNshKeyMd1(0, 0, 0, 0)  # OVS's NSH masks always carry MD1
    return mask


_NESTED_SPACES = {
    "encap": "ovs_key",
    "tunnel": "ovs_tunnel_key",
    "vxlan_opts": "ovs_vxlan_ext_key",
    "nsh": "ovs_nsh_key",
}


def _ones_like(space: str, name: Any, value: Any) -> Any:
    if name == "ipv6":
        return value._replace(
            src=b"\xff" * 16,
            dst=b"\xff" * 16,
            label=0xFFFFF,
            proto=0xFF,
            tclass=0xFF,
            hlimit=0xFF,
            frag=0xFF,
        )
    if name == "erspan_opts":
        return ErspanMetadata(version=-1, word1=0xFFFFFFFF, sgt=0xFFFF, bits=0xFFFF)
    if name == "geneve_opts":
        return _geneve_exact_mask(value)
    if name == "gbp" and space == "ovs_vxlan_ext_key":
        return 0xFFFFFF  # group id (16 bits) and flags (8 bits)
    if isinstance(value, bool):
        return value
    if isinstance(value, dict):
        inner = _NESTED_SPACES.get(name, space)
        return {k: _ones_like(inner, k, v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return b"\xff" * len(value)
    if hasattr(value, "_fields"):
        return _struct_ones(value)
    if isinstance(value, tuple):
        return tuple(0xFFFFFFFF for _ in value)
    if isinstance(value, int):
        return (1 << (8 * len(attr_payload(space, name, value)))) - 1
    return value


_STRUCT_WIDTHS: dict[str, dict[str, int]] = {}


def _struct_ones(value: Any) -> Any:
    """All-ones of a codec struct (integer fields get their declared width)."""
    cls = type(value)
    widths = _STRUCT_WIDTHS.get(cls.__name__)
    if widths is None:
        widths = {}
        for sub in cls.__construct__.subcons:
            fname = getattr(sub, "name", None)
            if fname:
                widths[fname] = sub.sizeof() * 8
        _STRUCT_WIDTHS[cls.__name__] = widths
    fields: dict[str, Any] = {}
    for fname, fval in zip(cls._fields, value, strict=True):
        if isinstance(fval, bytes):
            fields[fname] = b"\xff" * len(fval)
        else:
            fields[fname] = (1 << widths[fname]) - 1
    return cls(**fields)


def _geneve_exact_mask(data: bytes) -> bytes:
    out = bytearray(b"\xff" * len(data))
    pos = 0
    while pos + 4 <= len(data):
        out[pos + 3] = 0x1F
        pos += 4 + (data[pos + 3] & 0x1F) * 4
    return bytes(out)


# --- parsing ------------------------------------------------------------------------------------


class ParseContext:
    """What the key and action parsers share: the port-name map."""

    def __init__(self, port_names: PortNames | None) -> None:
        self.port_names = port_names or {}


def parse_key(text: str, port_names: PortNames | None = None) -> tuple[Key, Key]:
    """Parse ODP key text into ``(key, mask)`` dicts of the ``ovs_key`` space.

    Fields written without ``/mask`` are exact; struct fields not written are wildcarded.  A
    leading ``ufid:<uuid>`` is skipped.  ``port_names`` maps names usable in ``in_port(name)``.
    Raises :class:`OdpParseError` saying what is wrong and where.
    """
    sc = Scanner(text)
    ctx = ParseContext(port_names)
    key: Key = {}
    mask: Key = {}
    while True:
        sc.skip_delimiters()
        if sc.eof():
            break
        if sc.take("<empty>"):
            continue
        if sc.at("ufid:"):
            start = sc.pos
            sc.pos += 5
            token = sc.until(DELIMS_END)
            try:
                parse_ufid(token)
            except OdpParseError as exc:
                raise sc.error(exc.reason, start) from None
            continue
        parse_key_attr(sc, ctx, key, mask, 1)
    return key, mask


DELIMS_END = ", \t\r\n)"


def parse_key_attr(sc: Scanner, ctx: ParseContext, key: Key, mask: Key, depth: int) -> Any:
    """Parse one ``name(...)`` key attribute at the cursor into ``key``/``mask``; returns its
    attribute name."""
    if depth >= MAX_NESTED:
        raise sc.error(f"key attributes nested deeper than {MAX_NESTED - 1} levels")
    start = sc.pos
    word = sc.ident()
    sc.expect("(", f"after {word!r}")
    handler = _KEY_PARSERS.get(word)
    if handler is not None:
        name, kvalue, mvalue = handler(sc, ctx, depth)
    elif re.fullmatch(r"key[0-9]+", word):
        name, kvalue, mvalue = _parse_generic(sc, int(word[3:]), start)
    else:
        raise sc.error(f"unknown key attribute {word!r}", start)
    if name in key:
        raise sc.error(f"duplicate {word!r} attribute", start)
    key[name] = kvalue
    mask[name] = mvalue
    return name


def _parse_generic(sc: Scanner, number: int, start: int) -> tuple[Any, Any, Any]:
    if number > 0x3FFF:
        raise sc.error(f"attribute number {number} out of range", start)
    value = sc.hex_bytes()
    mvalue = sc.hex_bytes() if sc.take("/") else b"\xff" * len(value)
    sc.expect(")")
    codec = CODECS["ovs_key"]
    if number in codec.by_type:
        name = codec.by_type[number][0]
        try:
            return (
                name,
                codec.decode(_raw_attr(number, value))[name],
                codec.decode(_raw_attr(number, mvalue))[name],
            )
        except Exception as exc:
            raise sc.error(f"key{number}: {exc}", start) from None
    return number, value, mvalue


def _raw_attr(number: int, payload: bytes) -> bytes:
    alen = 4 + len(payload)
    return alen.to_bytes(2, "little") + number.to_bytes(2, "little") + payload + bytes(-alen & 3)


def _scan_value(sc: Scanner, kind: str, what: str) -> Any:
    if kind == "ipv4":
        return sc.ipv4()
    if kind == "in6":
        return sc.ipv6()
    if kind == "eth":
        return sc.mac()
    if kind == "frag":
        start = sc.pos
        word = sc.until(",)/").lower()
        for value, fname in FRAG_NAMES.items():
            if word == fname:
                return value
        raise sc.error(f"unknown frag type {word!r} (no, first or later)", start)
    return sc.c_int(_KIND_BITS[kind], what)


def scan_masked(sc: Scanner, kind: str, what: str, default_mask: Any = None) -> tuple[Any, Any]:
    """A value and its optional ``/mask`` (default: exact)."""
    value = _scan_value(sc, kind, what)
    if kind != "frag" and sc.take("/"):
        return value, _scan_value(sc, kind, what + " mask")
    return value, _KIND_FULL[kind] if default_mask is None else default_mask


def _parse_fields(
    sc: Scanner,
    table: tuple[tuple[str, str, str], ...],
    what: str,
    aliases: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``field=value[/mask],...)`` of a struct attribute; returns the written fields."""
    specs = {text: (field, kind) for text, field, kind in table}
    values: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    while not sc.take(")"):
        start = sc.pos
        fname = sc.ident()
        fname = (aliases or {}).get(fname, fname)
        spec = specs.get(fname)
        if spec is None:
            raise sc.error(f"unknown field {fname!r} in {what}", start)
        sc.expect("=", f"after {fname!r}")
        field, kind = spec
        values[field], masks[field] = scan_masked(sc, kind, f"{what} {fname}")
        if not sc.take(","):
            sc.expect(")", f"to close {what}(")
            break
    return values, masks


def _struct_parser(name: str) -> Callable[[Scanner, ParseContext, int], tuple[Any, Any, Any]]:
    table = STRUCT_FIELDS[name]
    zero = ZERO[name]
    text = TEXT_NAMES[name]
    aliases = _FIELD_ALIASES.get(name)

    def parse(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
        values, masks = _parse_fields(sc, table, text, aliases)
        return name, zero._replace(**values), zero._replace(**masks)

    return parse


def _scalar_parser(
    name: str, bits: int, maskable: bool = True
) -> Callable[[Scanner, ParseContext, int], tuple[Any, Any, Any]]:
    text = TEXT_NAMES[name]

    def parse(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
        value = sc.c_int(bits, text)
        mvalue = (1 << bits) - 1
        if maskable and sc.take("/"):
            mvalue = sc.c_int(bits, text + " mask")
        sc.expect(")", f"to close {text}(")
        return name, value, mvalue

    return parse


def parse_flag_set(
    sc: Scanner,
    names: Mapping[int, str],
    allowed: int,
    what: str,
    masked: bool = True,
    end: str = ")",
    seps: str = "|",
) -> tuple[int, int]:
    """A flag set: ``a|b|0x4``, or (if ``masked``) ``+a-b`` or ``N/M``; stops before ``end``.

    The mask of an unmasked set is all ones (32 bits), as in OVS."""
    start = sc.pos
    if masked:
        m = re.compile(
            r"([+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*))/"
            r"([+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*))"
        ).match(sc.text, sc.pos)
        if m is not None:
            bits, mask = c_value(m.group(1)), c_value(m.group(2))
            if bits & ~allowed or mask & ~allowed:
                raise sc.error(f"unknown {what} flag(s)", start)
            sc.pos = m.end()
            return bits, mask
        if sc.peek() in ("+", "-") and sc.peek():
            bits = mask = 0
            while not sc.at(end):
                sign = sc.peek()
                if sign not in ("+", "-"):
                    raise sc.error(f"{what} flags must be preceded by '+' (set) or '-' (not set)")
                sc.pos += 1
                bit = _match_flag(sc, names, "+-" + end)
                if bit is None:
                    raise sc.error(f"unknown {what} flag")
                if mask & bit:
                    raise sc.error(f"each {what} flag can be given only once")
                if not bit & allowed:
                    raise sc.error(f"{what} flag {names[bit]!r} not allowed here")
                if sign == "+":
                    bits |= bit
                mask |= bit
            return bits, mask
    bits = 0
    while not sc.at(end):
        if sc.eof():
            raise sc.error(f"unterminated {what} flags")
        m = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)").match(sc.text, sc.pos)
        if m is not None and (m.end() == len(sc.text) or sc.text[m.end()] in seps + end):
            value = c_value(m.group(0))
            if value & ~allowed:
                raise sc.error(f"unknown {what} flag(s) {m.group(0)}")
            bits |= value
            sc.pos = m.end()
        else:
            bit = _match_flag(sc, names, seps + end)
            if bit is None or not bit & allowed:
                raise sc.error(f"unknown {what} flag")
            bits |= bit
        if sc.peek() and sc.peek() in seps:
            sc.pos += 1
    return bits, 0xFFFFFFFF


def _match_flag(sc: Scanner, names: Mapping[int, str], followers: str) -> int | None:
    for bit in sorted(names):
        fname = names[bit]
        if sc.at(fname):
            nxt = sc.text[sc.pos + len(fname) : sc.pos + len(fname) + 1]
            if nxt and nxt in followers:
                sc.pos += len(fname)
                return bit
    return None


def _p_ct_state(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    value, mvalue = parse_flag_set(sc, CT_STATE_NAMES, 0xFF, "ct_state")
    sc.expect(")", "to close ct_state(")
    return "ct_state", value, mvalue


def _p_tcp_flags(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    value, mvalue = parse_flag_set(sc, TCP_FLAG_NAMES, 0x0FFF, "tcp_flags")
    sc.expect(")", "to close tcp_flags(")
    return "tcp_flags", value, mvalue & 0xFFFF


def _p_ct_label(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    value = sc.int_string(16, "ct_label")
    mvalue = sc.int_string(16, "ct_label mask") if sc.take("/") else b"\xff" * 16
    sc.expect(")", "to close ct_label(")
    # the attribute holds the 128-bit number in host (little-endian) order
    return "ct_labels", value[::-1], mvalue[::-1]


def scan_port(sc: Scanner, ctx: ParseContext, what: str, end: str = ")") -> int:
    """A port number, or a name from the port-name map."""
    start = sc.pos
    if sc.peek().isdigit() or sc.peek() in "+-":
        return sc.c_int(32, what)
    word = sc.until(end + ", \t\r\n")
    if word in ctx.port_names:
        return int(ctx.port_names[word])
    raise sc.error(f"unknown port name {word!r}" if word else f"expected {what}", start)


def _p_in_port(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    if sc.peek().isdigit():
        value = sc.c_int(32, "in_port")
        mvalue = sc.c_int(32, "in_port mask") if sc.take("/") else 0xFFFFFFFF
    else:
        value, mvalue = scan_port(sc, ctx, "in_port"), 0xFFFFFFFF
    sc.expect(")", "to close in_port(")
    return "in_port", value, mvalue


def _p_vlan(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    value = mvalue = VLAN_CFI
    fields = {"vid": (12, 0), "pcp": (3, 13), "cfi": (1, 12)}
    while not sc.take(")"):
        start = sc.pos
        fname = sc.ident()
        if fname not in fields:
            raise sc.error(f"unknown field {fname!r} in vlan", start)
        sc.expect("=")
        bits, shift = fields[fname]
        field_mask = ((1 << bits) - 1) << shift
        start = sc.pos
        v = sc.c_int(16, f"vlan {fname}")
        if v >> bits:
            raise sc.error(f"vlan {fname} {v} does not fit in {bits} bits", start)
        value = (value & ~field_mask) | (v << shift)
        if sc.take("/"):
            start = sc.pos
            m = sc.c_int(16, f"vlan {fname} mask")
            if m >> bits:
                raise sc.error(f"vlan {fname} mask {m:#x} does not fit in {bits} bits", start)
            mvalue = (mvalue & ~field_mask) | (m << shift)
        else:
            mvalue |= field_mask
        if not sc.take(","):
            sc.expect(")", "to close vlan(")
            break
    return "vlan", value, mvalue


_MPLS_FIELDS = {"label": (20, 12), "tc": (3, 9), "ttl": (8, 0), "bos": (1, 8)}
MAX_MPLS_LABELS = 3


def _p_mpls(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    keys = [0]
    masks = [0]
    seen: set[str] = set()
    while not sc.take(")"):
        start = sc.pos
        fname = sc.ident()
        if fname not in _MPLS_FIELDS:
            raise sc.error(f"unknown field {fname!r} in mpls", start)
        if fname in seen:
            if len(keys) == MAX_MPLS_LABELS:
                raise sc.error(f"more than {MAX_MPLS_LABELS} MPLS labels", start)
            keys.append(0)
            masks.append(0)
            seen = set()
        seen.add(fname)
        sc.expect("=")
        bits, shift = _MPLS_FIELDS[fname]
        field_mask = ((1 << bits) - 1) << shift
        start = sc.pos
        v = sc.c_int(32, f"mpls {fname}")
        if v >> bits:
            raise sc.error(f"mpls {fname} {v} does not fit in {bits} bits", start)
        keys[-1] = (keys[-1] & ~field_mask) | (v << shift)
        if sc.take("/"):
            start = sc.pos
            m = sc.c_int(32, f"mpls {fname} mask")
            if m >> bits:
                raise sc.error(f"mpls {fname} mask does not fit in {bits} bits", start)
            masks[-1] = (masks[-1] & ~field_mask) | (m << shift)
        else:
            masks[-1] |= field_mask
        if not sc.take(","):
            sc.expect(")", "to close mpls(")
            break
    return "mpls", tuple(keys), tuple(masks)


def _p_eth_type(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    value = sc.c_int(16, "eth_type")
    mvalue = sc.c_int(16, "eth_type mask") if sc.take("/") else 0xFFFF
    sc.expect(")", "to close eth_type(")
    return "ethertype", value, mvalue


def _p_packet_type(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    table = (("ns", "ns", "be16"), ("id", "id", "be16"))
    values, masks = _parse_fields(sc, table, "packet_type")
    value = (values.get("ns", 0) << 16) | values.get("id", 0)
    mvalue = (masks.get("ns", 0) << 16) | masks.get("id", 0)
    return "packet_type", value, mvalue


def _p_nd_ext(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    table = (("nd_reserved", "nd_reserved", "be32"), ("nd_options_type", "nd_options_type", "u8u"))
    values, masks = _parse_fields(sc, table, "nd_ext")
    zero = ZERO["nd_extensions"]
    return "nd_extensions", zero._replace(**values), zero._replace(**masks)


_NSH_FIELDS = (
    ("flags", "flags", "u8u"),
    ("ttl", "ttl", "u8u"),
    ("mdtype", "mdtype", "u8u"),
    ("np", "np", "u8u"),
    ("spi", "spi", "be32"),
    ("si", "si", "u8u"),
    ("c1", "c1", "be32"),
    ("c2", "c2", "be32"),
    ("c3", "c3", "be32"),
    ("c4", "c4", "be32"),
)


def _p_nsh(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    start = sc.pos
    values, masks = _parse_fields(sc, _NSH_FIELDS, "nsh")
    if values.get("spi", 0) >> 24 or (masks.get("spi", 0) >> 24 and masks["spi"] != 0xFFFFFFFF):
        raise sc.error("nsh spi does not fit in 24 bits", start)
    spi_mask = masks.get("spi", 0) & 0xFFFFFF
    base = OvsNshKeyBase(
        flags=values.get("flags", 0),
        ttl=values.get("ttl", 0),
        mdtype=values.get("mdtype", 0),
        np=values.get("np", 0),
        path_hdr=(values.get("spi", 0) << 8) | values.get("si", 0),
    )
    mbase = OvsNshKeyBase(
        flags=masks.get("flags", 0),
        ttl=masks.get("ttl", 0),
        mdtype=masks.get("mdtype", 0),
        np=masks.get("np", 0),
        path_hdr=(spi_mask << 8) | masks.get("si", 0),
    )
    md1 = OvsNshKeyMd1(*(values.get(f"c{i}", 0) for i in range(1, 5)))
    mmd1 = OvsNshKeyMd1(*(masks.get(f"c{i}", 0) for i in range(1, 5)))
    value: Key = {"base": base}
    if base.mdtype == 1:
        value["md1"] = md1
    return "nsh", value, {"base": mbase, "md1": mmd1}


def _p_encap(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    inner: Key = {}
    minner: Key = {}
    while True:
        sc.skip_delimiters()
        if sc.eof():
            raise sc.error("unterminated encap(")
        if sc.take(")"):
            break
        parse_key_attr(sc, ctx, inner, minner, depth + 1)
    return "encap", inner, minner


# -- tunnel --------------------------------------------------------------------------------------

_TUNNEL_SCALARS = {
    "tun_id": ("id", "be64"),
    "src": ("ipv4_src", "ipv4"),
    "dst": ("ipv4_dst", "ipv4"),
    "ipv6_src": ("ipv6_src", "in6"),
    "ipv6_dst": ("ipv6_dst", "in6"),
    "tos": ("tos", "u8x"),
    "ttl": ("ttl", "u8u"),
    "tp_src": ("tp_src", "be16"),
    "tp_dst": ("tp_dst", "be16"),
}


def _p_tunnel(sc: Scanner, ctx: ParseContext, depth: int) -> tuple[Any, Any, Any]:
    value: Key = {}
    mvalue: Key = {}

    def put(name: Any, v: Any, m: Any, start: int) -> None:
        if name in value:
            raise sc.error(f"duplicate tunnel field {name!r}", start)
        value[name] = v
        mvalue[name] = m

    while not sc.take(")"):
        start = sc.pos
        fname = sc.ident()
        if fname in _TUNNEL_SCALARS:
            sc.expect("=")
            name, kind = _TUNNEL_SCALARS[fname]
            v, m = scan_masked(sc, kind, f"tunnel {fname}")
            put(name, v, m, start)
        elif fname == "flags":
            sc.expect("(")
            bits, fmask = parse_flag_set(sc, TUNNEL_FLAG_NAMES, TNL_F_MASK, "tunnel")
            sc.expect(")")
            for attr, bit in TUNNEL_FLAG_ATTRS:
                if bits & bit:
                    put(attr, True, True, start)
            for attr, bit in TUNNEL_FLAG_ATTRS:
                if fmask & bit:
                    mvalue[attr] = True
        elif fname == "vxlan":
            sc.expect("(")
            sc.expect("gbp(", "in vxlan(")
            gbp, gmask = _scan_gbp(sc)
            # OVS leaves the option out when it is all zero (in the key and in the mask alike)
            if gbp:
                put("vxlan_opts", {"gbp": gbp}, {"gbp": gmask} if gmask else {}, start)
            elif gmask:
                mvalue["vxlan_opts"] = {"gbp": gmask}
        elif fname == "geneve":
            sc.expect("(")
            opts, omask = _scan_geneve(sc)
            put("geneve_opts", opts, omask, start)
        elif fname == "erspan":
            sc.expect("(")
            md, mmd = _scan_erspan(sc)
            put("erspan_opts", md, mmd, start)
        elif fname == "gtpu":
            sc.expect("(")
            gv, gm = _scan_gtpu(sc)
            put(GTPU_ATTR, gv, gm, start)
        else:
            raise sc.error(f"unknown tunnel field {fname!r}", start)
        if not sc.take(","):
            sc.expect(")", "to close tunnel(")
            break
    return "tunnel", value, mvalue


def _scan_gbp(sc: Scanner) -> tuple[int, int]:
    gid = gid_mask = flags = flags_mask = 0
    if sc.take("id="):
        gid, gid_mask = scan_masked(sc, "be16", "vxlan gbp id")
    sc.take(",")
    if sc.take("flags="):
        flags, flags_mask = scan_masked(sc, "u8u", "vxlan gbp flags")
    sc.expect("))", "to close vxlan(gbp(")
    return (flags << 16) | gid, (flags_mask << 16) | gid_mask


def _scan_geneve(sc: Scanner) -> tuple[bytes, bytes]:
    data = bytearray()
    mdata = bytearray()
    room = 252
    while sc.take("{"):
        if room < 4:
            raise sc.error("too many geneve options")
        room -= 4
        cls = cls_m = typ = typ_m = 0
        length = 0
        len_m = 0x1F
        if sc.take("class="):
            cls, cls_m = scan_masked(sc, "be16", "geneve class")
        sc.take(",")
        if sc.take("type="):
            typ, typ_m = scan_masked(sc, "u8u", "geneve type")
        sc.take(",")
        if sc.take("len="):
            start = sc.pos
            length, lm = scan_masked(sc, "u8u", "geneve len")
            if length > 124 or length % 4 or length > room:
                raise sc.error(f"bad geneve option length {length}", start)
            len_m = lm & 0x1F
        body = bytes(length)
        body_m = b"\xff" * length
        if sc.take(","):
            body = sc.int_string(length, "geneve option data")
        if sc.take("/"):
            body_m = sc.int_string(length, "geneve option mask")
        sc.expect("}", "to close a geneve option")
        room -= length
        data += cls.to_bytes(2, "big") + bytes([typ, length // 4]) + body
        mdata += cls_m.to_bytes(2, "big") + bytes([typ_m, len_m]) + body_m
    sc.expect(")", "to close geneve(")
    return bytes(data), bytes(mdata)


def _scan_erspan(sc: Scanner) -> tuple[Any, Any]:
    start = sc.pos
    ver = 0
    if sc.take("ver="):
        ver, _ = scan_masked(sc, "u8u", "erspan ver")
    sc.take(",")
    if ver == 1:
        idx = idx_m = 0
        if sc.take("idx="):
            idx, idx_m = scan_masked(sc, "be32", "erspan idx")
        sc.expect(")", "to close erspan(")
        return (
            ErspanMetadata(version=1, word1=idx, sgt=0, bits=0),
            ErspanMetadata(version=-1, word1=idx_m, sgt=0xFFFF, bits=0xFFFF),
        )
    if ver == 2:
        direction = dir_m = hwid = hwid_m = 0
        if sc.take("dir="):
            direction, dir_m = scan_masked(sc, "u8u", "erspan dir")
        sc.take(",")
        if sc.take("hwid="):
            hwid, hwid_m = scan_masked(sc, "u8u", "erspan hwid")
        sc.expect(")", "to close erspan(")
        bits = ((hwid & 0xF) << 4) | ((direction & 1) << 3)
        mbits = (0xFFFF & ~0xF8) | ((hwid_m & 0xF) << 4) | ((dir_m & 1) << 3)
        return (
            ErspanMetadata(version=2, word1=0, sgt=0, bits=bits),
            ErspanMetadata(version=-1, word1=0xFFFFFFFF, sgt=0xFFFF, bits=mbits),
        )
    raise sc.error("erspan needs ver=1 or ver=2", start)


def _scan_gtpu(sc: Scanner) -> tuple[Any, Any]:
    flags = flags_m = msgtype = msgtype_m = 0
    if sc.take("flags="):
        flags, flags_m = scan_masked(sc, "u8u", "gtpu flags")
    sc.take(",")
    if sc.take("msgtype="):
        msgtype, msgtype_m = scan_masked(sc, "u8u", "gtpu msgtype")
    sc.expect(")", "to close gtpu(")
    return GtpuMetadata(flags, msgtype), GtpuMetadata(flags_m, msgtype_m)


_KEY_PARSERS: dict[str, Callable[[Scanner, ParseContext, int], tuple[Any, Any, Any]]] = {
    "skb_priority": _scalar_parser("priority", 32),
    "skb_mark": _scalar_parser("skb_mark", 32),
    "recirc_id": _scalar_parser("recirc_id", 32, maskable=False),
    "dp_hash": _scalar_parser("dp_hash", 32),
    "ct_state": _p_ct_state,
    "ct_zone": _scalar_parser("ct_zone", 16),
    "ct_mark": _scalar_parser("ct_mark", 32),
    "ct_label": _p_ct_label,
    "ct_tuple4": _struct_parser("ct_orig_tuple_ipv4"),
    "ct_tuple6": _struct_parser("ct_orig_tuple_ipv6"),
    "tunnel": _p_tunnel,
    "in_port": _p_in_port,
    "eth": _struct_parser("ethernet"),
    "vlan": _p_vlan,
    "eth_type": _p_eth_type,
    "mpls": _p_mpls,
    "ipv4": _struct_parser("ipv4"),
    "ipv6": _struct_parser("ipv6"),
    "tcp": _struct_parser("tcp"),
    "tcp_flags": _p_tcp_flags,
    "udp": _struct_parser("udp"),
    "sctp": _struct_parser("sctp"),
    "icmp": _struct_parser("icmp"),
    "icmpv6": _struct_parser("icmpv6"),
    "arp": _struct_parser("arp"),
    "nd": _struct_parser("nd"),
    "nd_ext": _p_nd_ext,
    "packet_type": _p_packet_type,
    "nsh": _p_nsh,
    "encap": _p_encap,
}


# --- formatting ---------------------------------------------------------------------------------


def _is_full(kind: str, m: Any) -> bool:
    if kind == "label":
        return bool((m & 0xFFFFF) == 0xFFFFF)
    return bool(m == _KIND_FULL[kind])


def _is_zero(m: Any) -> bool:
    if isinstance(m, (bytes, bytearray)):
        return not any(m)
    return not m


def format_field(kind: str, name: str, v: Any, m: Any, verbose: bool) -> str:
    """One ``name=value[/mask]`` field ('' when a wildcarded field is left out)."""
    if kind == "frag":
        if m is not None and m == 0:
            return ""
        if m is None or m == 0xFF:
            return f"{name}={FRAG_NAMES.get(v, '<error>')}"
        return f"error: partial mask not supported for frag ({fmt.cx(m)})"
    if not verbose and m is not None and _is_zero(m):
        return ""
    full = m is None or _is_full(kind, m)
    if kind == "ipv4":
        text = fmt.ip4(v)
        mtext = "" if full else "/" + fmt.ip4(m)
    elif kind == "in6":
        text = fmt.ip6(v)
        mtext = "" if full else "/" + fmt.ip6(m)
    elif kind == "eth":
        text = fmt.mac(v)
        mtext = "" if full else "/" + fmt.mac(m)
    elif kind == "be64":
        text = f"0x{v:x}"
        mtext = "" if full else "/" + fmt.cx(m)
    elif kind in ("u8x", "be16x", "label"):
        text = fmt.cx(v)
        mtext = "" if full else "/" + fmt.cx(m)
    else:
        text = str(v)
        mtext = "" if full else "/" + fmt.cx(m)
    return f"{name}={text}{mtext}"


def _join(parts: list[str]) -> str:
    return ",".join(p for p in parts if p)


def _format_struct(name: str, v: Any, m: Any, verbose: bool) -> str:
    return _join(
        [
            format_field(
                kind, text, getattr(v, field), None if m is None else getattr(m, field), verbose
            )
            for text, field, kind in STRUCT_FIELDS[name]
        ]
    )


def format_vlan_tci(tci: int, mask: int, verbose: bool) -> str:
    """vid/pcp (and cfi=0 when the CFI bit is clear) of a VLAN TCI and mask."""
    parts = []
    if verbose or tci & 0xFFF or mask & 0xFFF:
        parts.append(
            f"vid={tci & 0xFFF}" + ("" if mask & 0xFFF == 0xFFF else f"/0x{mask & 0xFFF:x}")
        )
    if verbose or tci >> 13 or mask >> 13:
        parts.append(f"pcp={tci >> 13}" + ("" if mask >> 13 == 7 else f"/0x{mask >> 13:x}"))
    if not tci & VLAN_CFI:
        parts.append("cfi=0")
    return ",".join(parts)


def format_mpls_lse(lse: int) -> str:
    """label=,tc=,ttl=,bos= of one MPLS label stack entry."""
    return f"label={lse >> 12},tc={(lse >> 9) & 7},ttl={lse & 0xFF},bos={(lse >> 8) & 1}"


def _format_mpls(lses: Any, masks: Any) -> str:
    out = []
    for i, lse in enumerate(lses):
        if masks is None:
            out.append(format_mpls_lse(lse))
        else:
            m = masks[i] if i < len(masks) else 0
            out.append(
                f"label={lse >> 12}/0x{m >> 12:x},tc={(lse >> 9) & 7}/{(m >> 9) & 7:x},"
                f"ttl={lse & 0xFF}/0x{m & 0xFF:x},bos={(lse >> 8) & 1}/{(m >> 8) & 1:x}"
            )
    return ",".join(out)


def format_u128(value: bytes, mask: bytes | None, verbose: bool) -> str:
    """A 128-bit value (host/little-endian bytes) as hex, with a mask unless exact."""
    if not (verbose or (mask is not None and any(mask))):
        return ""
    text = fmt.hex_blob(bytes(value)[::-1])
    if mask is not None and mask != b"\xff" * 16:
        text += "/" + fmt.hex_blob(bytes(mask)[::-1])
    return text


def format_key(
    key: Key, mask: Key | None = None, verbose: bool = False, port_names: PortNames | None = None
) -> str:
    """Format a key (and optional mask) the way OVS's ``odp_flow_format`` does.

    Without ``verbose`` fully wildcarded fields and attributes are left out and exact fields
    print without ``/mask``; ``verbose`` prints everything.  A mask of None (or empty) means
    every field is exact.  ``port_names`` (name -> number) prints in_port by name."""
    names = {int(number): name for name, number in (port_names or {}).items()}
    return _format_flow(key, mask, verbose, names)


def _format_flow(key: Key, mask: Key | None, verbose: bool, names: Mapping[int, str]) -> str:
    if not key:
        return "<empty>"
    use_mask = bool(mask)
    parts = []
    has_ethertype = has_packet_type = False
    for name, value in key.items():
        if name == "ethertype":
            has_ethertype = True
        elif name == "packet_type":
            has_packet_type = True
        ma = mask.get(name) if use_mask and mask is not None else None
        nested = name in ("encap", "tunnel", "nsh")
        wildcard = False
        if use_mask and mask is not None:
            wildcard = name not in mask or mask_is_wildcard(name, mask[name])
        if verbose or not wildcard or nested:
            if wildcard and ma is None:
                ma = _zero_like(value)
            parts.append(format_key_attr(name, value, ma, verbose, names))
        elif name == "ethernet" and not has_packet_type:
            parts.append("eth()")
    text = ",".join(parts)
    if use_mask and mask is not None and not has_ethertype and "ethertype" in mask:
        text += f",eth_type(0/0x{mask['ethertype']:04x})"
    return text


def _text_name(name: Any) -> str:
    if name in TEXT_NAMES:
        return TEXT_NAMES[name]
    return f"key{_attr_number(name)}"


def format_key_attr(
    name: Any, v: Any, m: Any, verbose: bool, names: Mapping[int, str] | None = None
) -> str:
    """One key attribute as ``text_name(...)``; ``m`` None means exact."""
    return f"{_text_name(name)}({_format_attr_body(name, v, m, verbose, names or {})})"


def _format_attr_body(name: Any, v: Any, m: Any, verbose: bool, names: Mapping[int, str]) -> str:
    exact = m is None or mask_is_exact(name, m)
    if name in ("priority", "skb_mark", "dp_hash", "recirc_id"):
        return fmt.cx(v) + ("" if exact else "/" + fmt.cx(m))
    if name in ("ct_mark", "ct_zone"):
        if verbose or not (m is None or _is_zero(m)):
            return fmt.cx(v) + ("" if exact else "/" + fmt.cx(m))
        return ""
    if name == "ct_state":
        mval = 0 if m is None or _is_zero(m) else m
        if verbose:
            return fmt.cx(v) + ("" if exact else "/" + fmt.cx(mval))
        if not exact:
            return fmt.flags_masked(v, mval, 0xFFFFFFFF, CT_STATE_NAMES)
        return fmt.flags(v, CT_STATE_NAMES)
    if name == "ct_labels":
        return format_u128(v, m, verbose)
    if name in STRUCT_FIELDS:
        return _format_struct(name, v, m, verbose)
    if name == "tunnel":
        return format_tunnel(v, m, verbose)
    if name == "in_port":
        if exact:
            return names.get(v, str(v))
        return f"{v}/{fmt.cx(m)}"
    if name == "packet_type":
        pm = 0xFFFFFFFF if m is None else m
        return _join(
            [
                format_field("be16", "ns", v >> 16, pm >> 16, verbose),
                format_field("be16x", "id", v & 0xFFFF, pm & 0xFFFF, verbose),
            ]
        )
    if name == "vlan":
        return format_vlan_tci(v, 0xFFFF if m is None else m, verbose)
    if name == "mpls":
        return _format_mpls(v, None if exact else m)
    if name == "ethertype":
        return f"0x{v:04x}" + ("" if exact else f"/0x{m:04x}")
    if name == "tcp_flags":
        if not exact:
            return fmt.flags_masked(v, m & 0x0FFF, 0x0FFF, TCP_FLAG_NAMES)
        return fmt.flags(v, TCP_FLAG_NAMES)
    if name == "nd_extensions":
        return _join(
            [
                f"nd_reserved=0x{v.nd_reserved:x}",
                format_field(
                    "u8u",
                    "nd_options_type",
                    v.nd_options_type,
                    None if m is None else m.nd_options_type,
                    verbose,
                ),
            ]
        )
    if name == "nsh":
        return format_nsh(v, m)
    if name == "encap":
        if m and v:
            return _format_flow(v, m, verbose, names)
        if v:
            return _format_flow(v, None, verbose, names)
        return ""
    # attributes OVS userspace does not know: generic hex
    text = fmt.hex_spaced(_payload_of(name, v))
    if m is not None and not exact:
        text += "/" + fmt.hex_spaced(_payload_of(name, m))
    return text


def _payload_of(name: Any, value: Any) -> bytes:
    if isinstance(name, int):
        return bytes(value)
    return attr_payload("ovs_key", name, value)


# -- tunnel formatting ---------------------------------------------------------------------------


def format_tunnel(tun: Key, tmask: Key | None, verbose: bool) -> str:
    """The inside of ``tunnel(...)``: fields in attribute order, then ``flags(...)``."""
    parts = []
    bits = mbits = 0
    for name, v in tun.items():
        m = None
        if tmask is not None:
            m = tmask[name] if name in tmask else _zero_like(v)
        if name == "id":
            parts.append(format_field("be64", "tun_id", v, m, verbose))
            bits |= TNL_F_KEY
            if tmask is not None:
                mbits |= TNL_F_KEY
        elif name in ("ipv4_src", "ipv4_dst"):
            parts.append(format_field("ipv4", name[5:], v, m, verbose))
        elif name in ("ipv6_src", "ipv6_dst"):
            parts.append(format_field("in6", name, v, m, verbose))
        elif name == "tos":
            parts.append(format_field("u8x", "tos", v, m, verbose))
        elif name == "ttl":
            parts.append(format_field("u8u", "ttl", v, m, verbose))
        elif name in ("tp_src", "tp_dst"):
            parts.append(format_field("be16", name, v, m, verbose))
        elif name == "dont_fragment":
            bits |= TNL_F_DONT_FRAGMENT
        elif name == "csum":
            bits |= TNL_F_CSUM
        elif name == "oam":
            bits |= TNL_F_OAM
        elif name == "vxlan_opts":
            parts.append(f"vxlan({_format_vxlan(v, m, verbose)})")
        elif name == "geneve_opts":
            parts.append(f"geneve({format_geneve(v, m, verbose)})")
        elif name == "erspan_opts":
            parts.append(f"erspan({_format_erspan(v, m, verbose)})")
        elif name == GTPU_ATTR:
            parts.append(
                "gtpu("
                + _join(
                    [
                        format_field(
                            "u8x", "flags", v.flags, None if m is None else m.flags, verbose
                        ),
                        format_field(
                            "u8u", "msgtype", v.msgtype, None if m is None else m.msgtype, verbose
                        ),
                    ]
                )
                + ")"
            )
        elif name == "pad":
            continue
        else:
            parts.append(_format_unknown("ovs_tunnel_key", name, v, m))
    if tmask is not None:
        for attr, bit in TUNNEL_FLAG_ATTRS:
            if attr in tmask:
                mbits |= bit
    parts.append(_format_tun_flags(bits, mbits if tmask is not None else None, verbose))
    return _join(parts)


def _format_unknown(space: str, name: Any, v: Any, m: Any) -> str:
    number = name if isinstance(name, int) else CODECS[space].numbers[name]
    data = bytes(v) if isinstance(name, int) else attr_payload(space, name, v)
    text = f"key{number}({fmt.hex_spaced(data)}"
    if m is not None:
        mdata = bytes(m) if isinstance(name, int) else attr_payload(space, name, m)
        if any(b != 0xFF for b in mdata):
            text += "/" + fmt.hex_spaced(mdata)
    return text + ")"


def _format_tun_flags(bits: int, mbits: int | None, verbose: bool) -> str:
    if not verbose and mbits is not None and not mbits:
        return ""
    if mbits is not None:
        body = fmt.flags_masked(bits, mbits & TNL_F_MASK, TNL_F_MASK, TUNNEL_FLAG_NAMES)
    else:
        body = fmt.flags(bits, TUNNEL_FLAG_NAMES)
    return f"flags({body})"


def _format_vxlan(v: Key, m: Key | None, verbose: bool) -> str:
    parts = []
    for name, value in v.items():
        sub = None
        if m is not None:
            sub = m[name] if name in m else _zero_like(value)
        if name == "gbp":
            gid, gflags = value & 0xFFFF, (value >> 16) & 0xFF
            parts.append(
                "gbp("
                + _join(
                    [
                        format_field(
                            "be16", "id", gid, None if sub is None else sub & 0xFFFF, verbose
                        ),
                        format_field(
                            "u8x",
                            "flags",
                            gflags,
                            None if sub is None else (sub >> 16) & 0xFF,
                            verbose,
                        ),
                    ]
                )
                + ")"
            )
        else:
            parts.append(_format_unknown("ovs_vxlan_ext_key", name, value, sub))
    return _join(parts)


def _format_erspan(v: Any, m: Any, verbose: bool) -> str:
    parts = [
        format_field(
            "u8u", "ver", v.version & 0xFF, None if m is None else m.version & 0xFF, verbose
        )
    ]
    if v.version == 1:
        if m is not None:
            parts.append(f"idx={fmt.cx(v.word1)}/{fmt.cx(m.word1)}")
        else:
            parts.append(f"idx={fmt.cx(v.word1)}")
    elif v.version == 2:
        parts.append(
            format_field(
                "u8u", "dir", (v.bits >> 3) & 1, None if m is None else (m.bits >> 3) & 1, verbose
            )
        )
        parts.append(
            format_field(
                "u8x",
                "hwid",
                (v.bits >> 4) & 0xF,
                None if m is None else (m.bits >> 4) & 0xF,
                verbose,
            )
        )
    return _join(parts)


def format_geneve(data: bytes, mdata: bytes | None, verbose: bool) -> str:
    """Geneve options as ``{class=,type=,len=,0xDATA[/mask]}...``."""
    data = bytes(data)
    if mdata is not None and len(mdata) != len(data):
        return f"value len {len(data)} different from mask len {len(mdata)}"
    out = []
    pos = 0
    while pos < len(data):
        left = len(data) - pos
        if left < 4:
            out.append(f"opt len {left} less than minimum 4")
            break
        data_len = (data[pos + 3] & 0x1F) * 4
        size = 4 + data_len
        if size > left:
            out.append(f"opt len {size} greater than remaining {left}")
            break
        m = None if mdata is None else mdata[pos : pos + size]
        len_mask = None
        if m is not None:
            len_mask = 0xFF if m[3] & 0x1F == 0x1F else m[3] & 0x1F
        body = data[pos + 4 : pos + size]
        mbody = None if m is None else m[4:]
        parts = [
            format_field(
                "be16x",
                "class",
                int.from_bytes(data[pos : pos + 2], "big"),
                None if m is None else int.from_bytes(m[0:2], "big"),
                verbose,
            ),
            format_field("u8x", "type", data[pos + 2], None if m is None else m[2], verbose),
            format_field("u8u", "len", data_len, len_mask, verbose),
        ]
        if data_len and (verbose or mbody is None or any(mbody)):
            text = fmt.hex_blob(body)
            if mbody is not None and any(b != 0xFF for b in mbody):
                text += "/" + fmt.hex_blob(mbody)
            parts.append(text)
        out.append("{" + _join(parts) + "}")
        pos += size
    return "".join(out)


# -- nsh formatting ------------------------------------------------------------------------------


def _nsh_fields(value: Key) -> tuple[Any, tuple[int, ...]]:
    base = value.get("base") or OvsNshKeyBase(0, 0, 0, 0, 0)
    md1 = value.get("md1")
    return base, tuple(md1) if md1 is not None else (0, 0, 0, 0)


def format_nsh_key(base: Any, ctx: tuple[int, ...]) -> str:
    """An NSH key without mask."""
    text = (
        f"flags={base.flags},ttl={base.ttl},mdtype={base.mdtype},np={base.np},"
        f"spi=0x{base.path_hdr >> 8:x},si={base.path_hdr & 0xFF}"
    )
    if base.mdtype == 1:
        text += "".join(f",c{i + 1}=0x{c:x}" for i, c in enumerate(ctx))
    return text


def format_nsh_masked(base: Any, ctx: tuple[int, ...], mbase: Any, mctx: tuple[int, ...]) -> str:
    """An NSH key with its mask (masked fields ``0xV/0xM``, wildcarded ones left out)."""

    def u8(name: str, v: int, m: int) -> str:
        if not m:
            return ""
        return f"{name}={v}" if m == 0xFF else f"{name}=0x{v:02x}/0x{m:02x}"

    def be32(name: str, v: int, m: int) -> str:
        if not m:
            return ""
        return f"{name}=0x{v:x}" if m == 0xFFFFFFFF else f"{name}=0x{v:x}/0x{m:08x}"

    spi_mask = mbase.path_hdr >> 8
    if spi_mask == 0xFFFFFF:
        spi_mask = 0xFFFFFFFF
    parts = [
        u8("flags", base.flags, mbase.flags),
        u8("ttl", base.ttl, mbase.ttl),
        u8("mdtype", base.mdtype, mbase.mdtype),
        u8("np", base.np, mbase.np),
        be32("spi", base.path_hdr >> 8, spi_mask),
        u8("si", base.path_hdr & 0xFF, mbase.path_hdr & 0xFF),
    ]
    parts += [be32(f"c{i + 1}", ctx[i], mctx[i]) for i in range(4)]
    return _join(parts)


def format_nsh(value: Key, mask: Key | None) -> str:
    """The inside of ``nsh(...)`` for a key attribute and its (optional) mask."""
    base, ctx = _nsh_fields(value)
    if mask is None:
        return format_nsh_key(base, ctx)
    mbase = OvsNshKeyBase(0xFF, 0xFF, 0xFF, 0xFF, 0xFFFFFFFF)
    mctx: tuple[int, ...] = (0xFFFFFFFF,) * 4
    if "base" in value and "base" in mask:
        mbase = mask["base"]
    if "md1" in value and "md1" in mask:
        mctx = tuple(mask["md1"])
    return format_nsh_masked(base, ctx, mbase, mctx)
