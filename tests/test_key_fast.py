"""The fast paths of attrs_to_key / metadata_from_attrs against the reference implementation.

``attrs_to_key`` runs compiled shape functions, else the generic loops of
:mod:`ovsdp.flowtable.key_fast`, else the reference (``_attrs_to_key_reference``).  Every tier
must give exactly the reference's (key, mask) or decline (None); the public function must give
the reference's result or raise its error (same errno, same reason).  Inputs: valid keys of every
protocol shape (random scapy frames through extract_key + key_to_attrs, with the attributes
ovs-vswitchd adds), random masks derived from them, and random mutations of both (attributes
dropped, duplicated, zeroed, moved into ENCAP, wrong values, wrong types).
:func:`check_attrs_to_key` is also what tests/test_flow_key_netlink.py calls instead of
attrs_to_key, so its hand-written cases go through every tier too.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import ARP, LLC, Dot1AD, Dot1Q, Dot3, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw

from ovsdp.flowtable import key_fast
from ovsdp.flowtable.flow_key import extract_key
from ovsdp.flowtable.key_fast import (
    MISS,
    clear_shapes,
    fast_attrs_to_key,
    fast_metadata_from_attrs,
    generic_attrs_to_key,
    install_shapes,
)
from ovsdp.flowtable.key_netlink import (
    _attrs_to_key_reference,
    _key_to_attrs_reference,
    _mask_to_attrs_reference,
    _metadata_from_attrs_reference,
    attrs_to_key,
    flow_to_attrs,
    key_to_attrs,
    mask_to_attrs,
    metadata_from_attrs,
)
from ovsdp.flowtable.layout import (
    KEY_SIZE,
    NO_IN_PORT,
    Metadata,
    TunnelKey,
    mask_key,
    metadata_prefix,
)
from ovsdp.netlink import schema
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.structs import (
    OvsKeyArp,
    OvsKeyCtTupleIpv4,
    OvsKeyEthernet,
    OvsKeyIcmp,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyNd,
    OvsKeyPorts,
)

U32 = 0xFFFFFFFF
FF6 = b"\xff" * 6
CT_ZERO = {"ct_state": 0, "ct_zone": 0, "ct_mark": 0, "ct_labels": bytes(16)}

# --- the agreement checks ---------------------------------------------------------------------


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """("ok", result) or ("error", errno, reason); any other exception propagates."""
    try:
        return ("ok", fn(*args))
    except NetlinkError as exc:
        return ("error", exc.errno, exc.reason)


def _quiet(fn: Callable[..., Any], *args: Any) -> Any:
    """A tier's raw answer; an exception counts as declining (the caller catches them)."""
    try:
        return fn(*args)
    except Exception:
        return None


def check_tiers(
    key_attrs: Any, mask_attrs: Any, compile_from: tuple[Any, Any] | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Run every tier on one input and check each against the reference.

    Shapes are compiled from the input itself and, if given, from ``compile_from`` (a layout
    learned from other values: the valid input a mutation started from).  Returns the
    reference's outcome and what each tier answered (for coverage assertions).
    """
    ref = outcome(_attrs_to_key_reference, key_attrs, mask_attrs)
    expect = ref[1] if ref[0] == "ok" else None
    assert outcome(attrs_to_key, key_attrs, mask_attrs) == ref
    answers: dict[str, Any] = {"generic": generic_attrs_to_key(key_attrs, mask_attrs)}
    assert answers["generic"] is None or answers["generic"] == expect
    samples = [(key_attrs, mask_attrs)] + ([compile_from] if compile_from else [])
    for i, (key_sample, mask_sample) in enumerate(samples):
        clear_shapes()
        key_fn, mask_fn = install_shapes(key_sample, mask_sample)
        shaped = fast_attrs_to_key(key_attrs, mask_attrs)
        assert shaped is None or shaped == expect, (i, key_sample, mask_sample)
        if i == 0:
            answers.update(shaped=shaped, key_fn=key_fn, mask_fn=mask_fn)
        # the compiled functions' raw answers agree with the generic loops'
        raw_key = _quiet(key_fn, key_attrs, None) if key_fn else None
        generic_key = _quiet(key_fast._parse_key, key_attrs, mask_attrs is None)
        if raw_key is not None and raw_key is not MISS and generic_key is not None:
            assert (bytes(raw_key[0]), *raw_key[1:]) == (bytes(generic_key[0]), *generic_key[1:])
        if mask_fn is not None and expect is not None:
            raw_mask = _quiet(mask_fn, mask_attrs, expect[0])
            generic_mask = _quiet(key_fast._parse_mask, mask_attrs, expect[0])
            if raw_mask is not None and raw_mask is not MISS and generic_mask is not None:
                assert (raw_mask[0], bytes(raw_mask[1])) == (
                    generic_mask[0],
                    bytes(generic_mask[1]),
                )
    # and through the learning dispatch: a layout is compiled on its second sighting
    clear_shapes()
    for _ in range(key_fast.SHAPE_AFTER + 1):
        assert outcome(attrs_to_key, key_attrs, mask_attrs) == ref
    return ref, answers


def check_attrs_to_key(key_attrs: Any, mask_attrs: Any = None) -> tuple[bytes, bytes]:
    """attrs_to_key, after checking that every tier agrees with the reference."""
    ref, _ = check_tiers(key_attrs, mask_attrs)
    if ref[0] == "error":
        raise NetlinkError(ref[1], ref[2])
    result: tuple[bytes, bytes] = ref[1]
    return result


def _truncated_tag(attrs: Any) -> bool:
    """Whether a key has a VLAN tag without the CFI bit (the fast paths leave those to the
    reference) or an empty ENCAP."""
    level = attrs
    while isinstance(level, dict) and "encap" in level:
        if not isinstance(level.get("vlan"), int) or not level["vlan"] & 0x1000:
            return True
        level = level["encap"]
        if not level:
            return True
    return False


# --- valid inputs -----------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, U32)
ip4s = st.integers(0, U32).map(lambda n: str(ipaddress.IPv4Address(n)))
ip6s = st.binary(min_size=16, max_size=16).map(lambda b: str(ipaddress.IPv6Address(b)))
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@st.composite
def l4_packets(draw: st.DrawFn, v6: bool) -> Packet:
    kind = draw(st.sampled_from(["tcp", "udp", "sctp", "icmp", "nd", "none"]))
    if kind == "tcp":
        return TCP(sport=draw(u16), dport=draw(u16), flags=draw(st.integers(0, 0x1FF)))
    if kind == "udp":
        return UDP(sport=draw(u16), dport=draw(u16))
    if kind == "sctp":
        return SCTP(sport=draw(u16), dport=draw(u16))
    if kind == "icmp" and not v6:
        return ICMP(type=draw(u8), code=draw(u8))
    if kind == "icmp":
        return ICMPv6EchoRequest(id=draw(u16))
    if kind == "nd" and v6:
        if draw(st.booleans()):
            return ICMPv6ND_NS(tgt=draw(ip6s)) / ICMPv6NDOptSrcLLAddr(lladdr=draw(macs))
        return ICMPv6ND_NA(tgt=draw(ip6s)) / ICMPv6NDOptDstLLAddr(lladdr=draw(macs))
    return Raw(b"\0" * 20)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A random Ethernet frame of any protocol shape the datapath parses."""
    pkt: Packet = Ether(src=draw(macs), dst=draw(macs))
    tags = draw(st.sampled_from([0, 0, 0, 1, 2]))
    if tags == 2:
        pkt = pkt / Dot1AD(vlan=draw(st.integers(0, 4095)), prio=draw(st.integers(0, 7)))
    if tags:
        pkt = pkt / Dot1Q(vlan=draw(st.integers(0, 4095)), prio=draw(st.integers(0, 7)))
    l3 = draw(st.sampled_from(["ipv4", "ipv4", "ipv6", "ipv6", "arp", "mpls", "llc", "other"]))
    if l3 == "ipv4":
        frag = draw(st.sampled_from([0, 0, 0, 1, 5]))
        flags = "MF" if draw(st.booleans()) else 0
        ip = IP(src=draw(ip4s), dst=draw(ip4s), tos=draw(u8), ttl=draw(u8), frag=frag, flags=flags)
        pkt = pkt / ip / draw(l4_packets(False))
    elif l3 == "ipv6":
        ip6 = IPv6(
            src=draw(ip6s),
            dst=draw(ip6s),
            tc=draw(u8),
            fl=draw(st.integers(0, 0xFFFFF)),
            hlim=draw(u8),
        )
        if draw(st.integers(0, 5)) == 0:
            ip6 = ip6 / IPv6ExtHdrFragment(offset=draw(st.sampled_from([0, 3])), m=1)
        pkt = pkt / ip6 / draw(l4_packets(True))
    elif l3 == "arp":
        pkt = pkt / ARP(
            op=draw(st.integers(1, 4)),
            psrc=draw(ip4s),
            pdst=draw(ip4s),
            hwsrc=draw(macs),
            hwdst=draw(macs),
        )
    elif l3 == "mpls":
        n = draw(st.integers(1, 4))
        for i in range(n):
            pkt = pkt / MPLS(label=draw(st.integers(0, 0xFFFFF)), s=int(i == n - 1), ttl=draw(u8))
        pkt = pkt / IP()
    elif l3 == "llc":
        pkt = Dot3(src=draw(macs), dst=draw(macs)) / LLC() / Raw(b"\0" * 20)
    else:
        pkt = Ether(src=draw(macs), dst=draw(macs), type=draw(st.sampled_from([0x88CC, 0x9000])))
    return bytes(pkt)


tunnels = st.builds(
    TunnelKey,
    tun_id=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    ipv4_src=u32,
    ipv4_dst=st.integers(1, U32),
    tos=u8,
    ttl=u8,
    df=st.booleans(),
    csum=st.booleans(),
    oam=st.booleans(),
    tp_src=u16,
    tp_dst=u16,
)
metadatas = st.builds(
    Metadata,
    in_port=st.one_of(st.integers(0, 10), st.integers(0, NO_IN_PORT)),
    recirc_id=st.one_of(st.just(0), u32),
    dp_hash=st.one_of(st.just(0), u32),
    priority=st.one_of(st.just(0), u32),
    skb_mark=st.one_of(st.just(0), u32),
    tunnel=st.one_of(st.none(), st.none(), tunnels),
)


@st.composite
def valid_keys(draw: st.DrawFn) -> dict[str, Any]:
    """A key as the datapath emits it, sometimes with ovs-vswitchd's zero conntrack
    attributes, sometimes reordered (the kernel accepts any order)."""
    attrs = key_to_attrs(extract_key(draw(frames()), metadata_prefix(draw(metadatas))))
    if draw(st.booleans()):
        items = list(attrs.items())
        at = draw(st.integers(0, len(items)))
        attrs = dict(items[:at] + list(CT_ZERO.items()) + items[at:])
    if draw(st.integers(0, 3)) == 0:
        names = draw(st.permutations(list(attrs)))
        attrs = {name: attrs[name] for name in names}
    return attrs


@st.composite
def _mask_value(draw: st.DrawFn, width: int) -> int:
    return draw(st.sampled_from([(1 << width) - 1, 0, 0, draw(st.integers(0, (1 << width) - 1))]))


@st.composite
def _mask_bytes(draw: st.DrawFn, n: int) -> bytes:
    return draw(st.sampled_from([b"\xff" * n, bytes(n), draw(st.binary(min_size=n, max_size=n))]))


STRUCT_FIELDS = {
    "ethernet": (OvsKeyEthernet, ("6", "6")),
    "ipv4": (OvsKeyIpv4, (32, 32, 8, 8, 8, 8)),
    "ipv6": (OvsKeyIpv6, ("16", "16", 32, 8, 8, 8, 8)),
    "arp": (OvsKeyArp, (32, 32, 16, "6", "6")),
    "tcp": (OvsKeyPorts, (16, 16)),
    "udp": (OvsKeyPorts, (16, 16)),
    "sctp": (OvsKeyPorts, (16, 16)),
    "icmp": (OvsKeyIcmp, (8, 8)),
    "icmpv6": (OvsKeyIcmp, (8, 8)),
    "nd": (OvsKeyNd, ("16", "6", "6")),
}
SCALARS = {"recirc_id": 32, "dp_hash": 32, "priority": 32, "skb_mark": 32, "tcp_flags": 16}
SCALARS |= {"ct_state": 32, "ct_zone": 16, "ct_mark": 32}


@st.composite
def masks_for(draw: st.DrawFn, attrs: dict[str, Any]) -> dict[str, Any]:
    """A mask for ``attrs`` in the forms userspace sends: every header present with some
    fields wildcarded (zero), in_port / ethertype / TPIDs exact, sometimes attributes left out
    or the protocol not exact (which match_validate may refuse)."""
    mask: dict[str, Any] = {}
    for name, value in attrs.items():
        if draw(st.integers(0, 12)) == 0:
            continue  # left out
        if name == "in_port":
            mask[name] = draw(st.sampled_from([U32, U32, 0, 0xFFFF]))
        elif name == "ethertype":
            mask[name] = draw(st.sampled_from([0xFFFF, 0xFFFF, 0xFFFF, 0]))
        elif name == "vlan":
            mask[name] = draw(_mask_value(16)) | 0x1000
        elif name == "encap":
            mask[name] = draw(masks_for(value)) if value else {}
        elif name == "tunnel":
            tun: dict[str, Any] = {}
            for field, width in (
                ("id", 64),
                ("ipv4_src", 32),
                ("ipv4_dst", 32),
                ("tos", 8),
                ("ttl", 8),
                ("tp_src", 16),
                ("tp_dst", 16),
            ):
                if draw(st.booleans()):
                    tun[field] = draw(_mask_value(width))
            for flag in ("dont_fragment", "csum", "oam"):
                if draw(st.booleans()):
                    tun[flag] = True
            mask[name] = tun
        elif name == "mpls":
            mask[name] = tuple(draw(_mask_value(32)) for _ in value)
        elif name == "ct_labels":
            mask[name] = draw(_mask_bytes(16))
        elif name in SCALARS:
            mask[name] = draw(_mask_value(SCALARS[name]))
        elif name in STRUCT_FIELDS:
            cls, widths = STRUCT_FIELDS[name]
            fields = [
                draw(_mask_bytes(int(w))) if isinstance(w, str) else draw(_mask_value(w))
                for w in widths
            ]
            mask[name] = cls(*fields)
    for l3 in ("ipv4", "ipv6"):
        if l3 in mask and draw(st.integers(0, 3)):
            mask[l3] = mask[l3]._replace(proto=0xFF)
    if "icmpv6" in mask and draw(st.integers(0, 3)):
        mask["icmpv6"] = mask["icmpv6"]._replace(type=0xFF)
    return mask


@st.composite
def valid_inputs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any] | None]:
    key = draw(valid_keys())
    return key, draw(st.one_of(st.none(), masks_for(key)))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_inputs())
def test_valid_inputs_agree(inputs: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
    key_attrs, mask_attrs = inputs
    ref, answers = check_tiers(key_attrs, mask_attrs)
    if ref[0] != "ok":
        return
    # coverage: what userspace sends takes a fast path (except truncated tags)
    if not _truncated_tag(key_attrs):
        assert answers["generic"] is not None
    if answers["key_fn"] is not None and (mask_attrs is None or answers["mask_fn"] is not None):
        assert answers["shaped"] is not None


@pytest.mark.parametrize("with_mask", [False, True])
def test_typical_shapes_take_the_compiled_path(with_mask: bool) -> None:
    """The put shapes of ovs-vswitchd / ovsdp-handler compile, and their answers come from the
    compiled functions (not from the loops or the reference)."""
    for key_attrs, mask_attrs in TYPICAL:
        mask = mask_attrs if with_mask else None
        clear_shapes()
        key_fn, mask_fn = install_shapes(key_attrs, mask)
        assert key_fn is not None and (mask_fn is not None or not with_mask), key_attrs
        raw = key_fn(key_attrs, None)
        assert raw is not None and raw is not MISS
        if with_mask:
            assert mask_fn is not None and mask is not None
            raw_mask = mask_fn(mask, raw[0])
            assert raw_mask is not None and raw_mask is not MISS
        assert fast_attrs_to_key(key_attrs, mask) == _attrs_to_key_reference(key_attrs, mask)
        check_tiers(key_attrs, mask)


def _ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


SRC = bytes.fromhex("00155d000001")
DST = bytes.fromhex("00155d000002")
META = {"recirc_id": 0, "dp_hash": 0, "priority": 0, "in_port": 1, "skb_mark": 0, **CT_ZERO}
MMETA = {
    "recirc_id": U32,
    "dp_hash": 0,
    "priority": 0,
    "in_port": U32,
    "skb_mark": 0,
    "ct_state": 0,
    "ct_zone": 0,
    "ct_mark": 0,
    "ct_labels": bytes(16),
}
ETH = {"ethernet": OvsKeyEthernet(SRC, DST)}
METH = {"ethernet": OvsKeyEthernet(FF6, FF6)}
TUN = {"id": 5, "ipv4_src": 0xC0000201, "ipv4_dst": 0xC0000202, "ttl": 64, "dont_fragment": True}
TUN_MASK = {"id": 2**64 - 1, "ipv4_src": U32, "ipv4_dst": U32, "tos": 0, "ttl": 0}
IPV4 = OvsKeyIpv4(0x0A000001, 0x0A000002, 6, 0, 64, 0)
IPV6 = OvsKeyIpv6(_ip6("fe80::1"), _ip6("fe80::2"), 0x12345, 17, 0, 64, 0)
UDP_INNER = {"ethertype": 0x0800, "ipv4": IPV4._replace(proto=17), "udp": OvsKeyPorts(1000, 53)}
UDP_INNER_MASK = {
    "ethertype": 0xFFFF,
    "ipv4": OvsKeyIpv4(0, U32, 0xFF, 0, 0, 0xFF),
    "udp": OvsKeyPorts(0, 0xFFFF),
}
CVLAN_ARP = {
    "ethertype": 0x8100,
    "vlan": 0x3003,
    "encap": {"ethertype": 0x0806, "arp": OvsKeyArp(1, 2, 1, SRC, DST)},
}
CVLAN_ARP_MASK = {
    "ethertype": 0xFFFF,
    "vlan": 0x1FFF,
    "encap": {"ethertype": 0xFFFF, "arp": OvsKeyArp(0, U32, 0xFF, FF6, FF6)},
}
TYPICAL: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (  # TCP, headers wildcarded as zero masks
        META
        | ETH
        | {"ethertype": 0x0800, "ipv4": IPV4, "tcp": OvsKeyPorts(5201, 57674)}
        | {"tcp_flags": 0x10},
        MMETA
        | METH
        | {"ethertype": 0xFFFF, "ipv4": OvsKeyIpv4(0, 0, 0, 0, 0, 0xFF)}
        | {"tcp": OvsKeyPorts(0, 0), "tcp_flags": 0},
    ),
    (  # UDP over IPv6
        META | ETH | {"ethertype": 0x86DD, "ipv6": IPV6, "udp": OvsKeyPorts(5353, 5353)},
        MMETA
        | METH
        | {"ethertype": 0xFFFF}
        | {"ipv6": OvsKeyIpv6(bytes(16), b"\xff" * 16, 0, 0xFF, 0, 0, 0xFF)}
        | {"udp": OvsKeyPorts(0, 0xFFFF)},
    ),
    (  # ICMP
        META
        | ETH
        | {"ethertype": 0x0800, "ipv4": IPV4._replace(proto=1)}
        | {"icmp": OvsKeyIcmp(8, 0)},
        MMETA
        | METH
        | {"ethertype": 0xFFFF, "ipv4": OvsKeyIpv4(0, U32, 0xFF, 0, 0, 0xFF)}
        | {"icmp": OvsKeyIcmp(0xFF, 0xFF)},
    ),
    (  # a VLAN frame
        META | ETH | {"ethertype": 0x8100, "vlan": 0x1064, "encap": UDP_INNER},
        MMETA | METH | {"ethertype": 0xFFFF, "vlan": 0x1FFF, "encap": UDP_INNER_MASK},
    ),
    (  # QinQ
        META | ETH | {"ethertype": 0x88A8, "vlan": 0x1005, "encap": CVLAN_ARP},
        MMETA | METH | {"ethertype": 0xFFFF, "vlan": 0xFFFF, "encap": CVLAN_ARP_MASK},
    ),
    (  # a tunnel
        {"recirc_id": 0, "dp_hash": 0, "priority": 0, "tunnel": TUN, "in_port": 3}
        | {"skb_mark": 0, **ETH, "ethertype": 0x0800, "ipv4": IPV4}
        | {"tcp": OvsKeyPorts(1, 2), "tcp_flags": 2},
        {"recirc_id": U32, "dp_hash": 0, "priority": 0, "tunnel": TUN_MASK, "in_port": U32}
        | {"skb_mark": 0, **METH, "ethertype": 0xFFFF, "ipv4": OvsKeyIpv4(0, 0, 0, 0, 0, 0)}
        | {"tcp": OvsKeyPorts(0, 0), "tcp_flags": 0},
    ),
    (  # ARP
        META | ETH | {"ethertype": 0x0806, "arp": OvsKeyArp(1, 2, 1, SRC, bytes(6))},
        MMETA | METH | {"ethertype": 0xFFFF, "arp": OvsKeyArp(0, U32, 0xFF, bytes(6), bytes(6))},
    ),
    (  # neighbour discovery
        META
        | ETH
        | {"ethertype": 0x86DD, "ipv6": IPV6._replace(proto=58, label=0)}
        | {"icmpv6": OvsKeyIcmp(135, 0), "nd": OvsKeyNd(_ip6("fe80::7"), SRC, bytes(6))},
        MMETA
        | METH
        | {"ethertype": 0xFFFF}
        | {"ipv6": OvsKeyIpv6(bytes(16), bytes(16), 0, 0xFF, 0, 0, 0xFF)}
        | {"icmpv6": OvsKeyIcmp(0xFF, 0xFF), "nd": OvsKeyNd(b"\xff" * 16, bytes(6), bytes(6))},
    ),
    (  # the L2 megaflow of ovsdp-handler (bench/dpif_ops.py)
        {"recirc_id": 0, "in_port": 1, **ETH, "ethertype": 0x0800, "ipv4": IPV4}
        | {"tcp": OvsKeyPorts(40000, 80), "tcp_flags": 0},
        {"recirc_id": U32, "in_port": U32, **METH, "ethertype": 0xFFFF}
        | {"ipv4": OvsKeyIpv4(0, 0, 0, 0, 0, 0), "tcp": OvsKeyPorts(0, 0), "tcp_flags": 0},
    ),
    (  # a layer-3 key (no Ethernet header)
        {"in_port": 2, "ethertype": 0x0800, "ipv4": IPV4._replace(proto=17)}
        | {"udp": OvsKeyPorts(5, 6)},
        {"in_port": U32, "ethertype": 0xFFFF, "ipv4": OvsKeyIpv4(0, U32, 0xFF, 0, 0, 0)}
        | {"udp": OvsKeyPorts(0, 0)},
    ),
]


# --- mutations --------------------------------------------------------------------------------


class Index:
    """An integer-like object that is not an int (struct packs it through __index__)."""

    def __init__(self, value: int) -> None:
        self.value = int(value)

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return other == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Index({self.value})"


def _zero_like(value: Any) -> Any:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0
    if isinstance(value, bytes):
        return bytes(len(value))
    if isinstance(value, dict):
        return {}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_zero_like(v) for v in value))
    if isinstance(value, tuple | list):
        return type(value)(_zero_like(v) for v in value)
    return value


@st.composite
def odd_values(draw: st.DrawFn, value: Any) -> Any:
    """A wrong value or a value of a wrong type, derived from ``value``."""
    scalar = value if isinstance(value, int) else 0
    choices: list[Any] = [
        None,
        "x",
        0.0,
        float(scalar),
        True,
        False,
        Index(scalar),
        Index(0),
        -1,
        scalar + 1,
        1 << 16,
        1 << 32,
        1 << 64,
        0x05FF,
        0x8100,
        0x1000,
        b"",
        bytes(5),
        bytearray(6),
        memoryview(bytes(6)),
        [],
        {},
        {"in_port": 1},
        (1, 2, 3),
        _zero_like(value),
    ]
    if isinstance(value, tuple) and value:
        fields = list(value)
        i = draw(st.integers(0, len(fields) - 1))
        field = fields[i]
        fields[i] = draw(
            st.sampled_from(
                [
                    None,
                    0.0,
                    float(field) if isinstance(field, int) else 1.0,
                    Index(field if isinstance(field, int) else 0),
                    -1,
                    1 << 32,
                    True,
                    bytearray(len(field)) if isinstance(field, bytes) else 3,
                    (field[:-1] if isinstance(field, bytes) and field else b"\0"),
                    _zero_like(field),
                    3,
                    255,
                    256,
                    0x1FFFFF,
                ]
            )
        )
        rebuilt = type(value)(*fields) if hasattr(value, "_fields") else tuple(fields)
        choices += [list(value), tuple(value), rebuilt, fields, tuple(fields)]
        choices += [value[:-1], (*value, 0)]
    if isinstance(value, dict):
        choices += [list(value.items()), dict(value, bogus=1)]
    return draw(st.sampled_from(choices))


def _levels(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every nested dict of a key or mask (the top, ENCAP levels, tunnel nests)."""
    out = [attrs]
    for value in attrs.values():
        if isinstance(value, dict):
            out += _levels(value)
    return out


def _copy(attrs: Any) -> Any:
    if isinstance(attrs, dict):
        return {k: _copy(v) for k, v in attrs.items()}
    return attrs


NAMES = [
    "in_port",
    "recirc_id",
    "priority",
    "ethernet",
    "ethertype",
    "vlan",
    "encap",
    "ipv4",
    "ipv6",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "arp",
    "nd",
    "mpls",
    "tunnel",
    "tcp_flags",
    "ct_state",
    "ct_labels",
    "ct_orig_tuple_ipv4",
    "packet_type",
    "nsh",
    "ipv6_exthdrs",
]
TUNNEL_NAMES = ["id", "ipv4_src", "ipv4_dst", "ttl", "tos", "csum", "oam", "tp_src", "ipv6_src"]
TUNNEL_NAMES += ["pad", "geneve_opts", "vxlan_opts", "ipv4_info_bridge", "dont_fragment"]


@st.composite
def mutated(draw: st.DrawFn, attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """``attrs`` with one to three random mutations (a copy)."""
    if attrs is None:
        return None
    attrs = _copy(attrs)
    for _ in range(draw(st.integers(1, 3))):
        levels = _levels(attrs)
        level = draw(st.sampled_from(levels))
        names = list(level)
        op = draw(st.sampled_from(["drop", "zero", "odd", "odd", "add", "move", "swap", "empty"]))
        if op == "add" or not names:
            pool = TUNNEL_NAMES if any(n in TUNNEL_NAMES[:4] for n in names) else NAMES
            name = draw(st.sampled_from([*pool, 99]))
            donor = draw(st.sampled_from(levels))
            base = _copy(
                donor.get(name, draw(st.sampled_from([0, 1, True, bytes(16), 0x8100, {}])))
            )
            level[name] = draw(st.one_of(st.just(base), odd_values(base)))
            continue
        name = draw(st.sampled_from(names))
        if op == "drop":
            del level[name]
        elif op == "zero":
            level[name] = _zero_like(level[name])
        elif op == "odd":
            level[name] = draw(odd_values(level[name]))
        elif op == "move" and len(levels) > 1:
            other = draw(st.sampled_from(levels))
            other[name] = _copy(level[name])  # a duplicate across levels, or moved
            if draw(st.booleans()) and other is not level:
                del level[name]
        elif op == "swap" and len(names) > 1:
            other_name = draw(st.sampled_from(names))
            level[name], level[other_name] = level[other_name], level[name]
        elif op == "empty" and isinstance(level[name], dict):
            level[name] = {}
    return attrs


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_agree(data: st.DataObject) -> None:
    key_attrs, mask_attrs = data.draw(valid_inputs())
    if mask_attrs is None and data.draw(st.booleans()):
        mask_attrs = data.draw(masks_for(key_attrs))
    which = data.draw(st.sampled_from(["key", "mask", "both"]))
    bad_key = data.draw(mutated(key_attrs)) if which != "mask" else _copy(key_attrs)
    bad_mask = data.draw(mutated(mask_attrs)) if which != "key" else _copy(mask_attrs)
    # shapes learned from the valid input, then the mutated input arrives (and vice versa)
    check_tiers(bad_key, bad_mask, compile_from=(key_attrs, mask_attrs))
    check_tiers(key_attrs, mask_attrs, compile_from=(bad_key, bad_mask))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_typical_mutations_agree(data: st.DataObject) -> None:
    key_attrs, mask_attrs = data.draw(st.sampled_from(TYPICAL))
    mask_attrs = data.draw(st.sampled_from([mask_attrs, None]))
    bad_key = data.draw(st.one_of(st.just(_copy(key_attrs)), mutated(key_attrs)))
    bad_mask = data.draw(mutated(mask_attrs)) if mask_attrs is not None else None
    check_tiers(bad_key, bad_mask, compile_from=(key_attrs, mask_attrs))


@pytest.mark.parametrize(
    "value",
    [0.0, 1.0, Index(0), Index(5), True, False, memoryview(bytes(6)), bytearray(6), None, "a"],
)
def test_equal_but_different_values(value: Any) -> None:
    """Values equal to a valid one (0.0 == 0, Index(0) == 0, memoryview == bytes) behave as the
    reference says, whatever the caches hold."""
    key_attrs, mask_attrs = TYPICAL[0]
    for name in list(key_attrs):
        for attrs, which in ((key_attrs, "key"), (mask_attrs, "mask")):
            if name not in attrs:
                continue
            odd = dict(attrs, **{name: value})
            k, m = (odd, mask_attrs) if which == "key" else (key_attrs, odd)
            check_tiers(k, m, compile_from=(key_attrs, mask_attrs))
            if isinstance(attrs[name], tuple):
                for i in range(len(attrs[name])):
                    fields = list(attrs[name])
                    fields[i] = value
                    odd = dict(attrs, **{name: type(attrs[name])(*fields)})
                    k, m = (odd, mask_attrs) if which == "key" else (key_attrs, odd)
                    check_tiers(k, m, compile_from=(key_attrs, mask_attrs))


ODD_VALUES: list[Any] = [None, 0, 1, -1, True, False, 0.0, Index(0), Index(1), b"", {}, (), "x"]
ALL_NAMES = [*schema.ovs_key.numbers, 99]
ALL_TUNNEL_NAMES = [*schema.ovs_tunnel_key.numbers, 99]


def quick_check(key_attrs: Any, mask_attrs: Any) -> None:
    """Every tier against the reference, with whatever shapes are installed."""
    ref = outcome(_attrs_to_key_reference, key_attrs, mask_attrs)
    expect = ref[1] if ref[0] == "ok" else None
    assert outcome(attrs_to_key, key_attrs, mask_attrs) == ref
    for answer in (
        generic_attrs_to_key(key_attrs, mask_attrs),
        fast_attrs_to_key(key_attrs, mask_attrs),
    ):
        assert answer is None or answer == expect


def _variants(attrs: dict[str, Any], names: list[Any]) -> list[dict[str, Any]]:
    """``attrs`` with, at every nesting level, each name set to each odd value, and each field
    of each struct attribute replaced by each odd value."""
    out = []
    for value in ODD_VALUES:
        copy = _copy(attrs)
        for level in _levels(copy):
            for name in [*names, *level]:
                saved = level.get(name, _MISSING)
                level[name] = value
                out.append(_copy(copy))
                if saved is _MISSING:
                    del level[name]
                else:
                    level[name] = saved
            for name, field_value in list(level.items()):
                if isinstance(field_value, tuple):
                    for i in range(len(field_value)):
                        fields = list(field_value)
                        fields[i] = value
                        level[name] = type(field_value)(*fields)
                        out.append(_copy(copy))
                    level[name] = field_value
    return out


_MISSING = object()


@pytest.mark.parametrize("index", range(len(TYPICAL)))
def test_every_attribute_with_odd_values(index: int) -> None:
    """At every level of a key or mask whose layout is compiled, each attribute name and each
    struct field set to values of every odd kind: the same answer as the reference."""
    key_attrs, mask_attrs = TYPICAL[index]
    clear_shapes()
    install_shapes(key_attrs, mask_attrs)
    install_shapes(key_attrs, None)
    for odd_key in _variants(key_attrs, ALL_NAMES):
        quick_check(odd_key, mask_attrs)
        quick_check(odd_key, None)
        check_metadata(odd_key)
    for odd_mask in _variants(mask_attrs, ALL_NAMES):
        quick_check(key_attrs, odd_mask)
    tunnel_key = {**key_attrs, "tunnel": TUN}
    tunnel_mask = {**mask_attrs, "tunnel": TUN_MASK}
    install_shapes(tunnel_key, tunnel_mask)
    for odd_key in _variants(tunnel_key, ALL_TUNNEL_NAMES):
        quick_check(odd_key, tunnel_mask)
        quick_check(odd_key, None)
        check_metadata(odd_key)
    for odd_mask in _variants(tunnel_mask, ALL_TUNNEL_NAMES):
        quick_check(tunnel_key, odd_mask)


def test_regressions() -> None:
    """Inputs the long hypothesis runs found: absent and None told apart."""
    key_attrs, mask_attrs = TYPICAL[0]
    check_tiers({**key_attrs, "ethertype": None}, None)
    check_tiers({**key_attrs, "ethertype": None}, mask_attrs)
    check_metadata({"in_port": 1, "tunnel": None})
    check_metadata({"in_port": 1, "skb_mark": 5, "ct_orig_tuple_ipv4": 0})
    check_metadata({"in_port": 1, "skb_mark": 5, "ct_orig_tuple_ipv4": 1})


def test_errors_come_from_the_reference() -> None:
    """An invalid put raises the reference's exact error even when its layout is compiled."""
    key_attrs, mask_attrs = TYPICAL[0]
    clear_shapes()
    install_shapes(key_attrs, mask_attrs)
    bad = dict(key_attrs, ipv4=IPV4._replace(frag=3))
    with pytest.raises(NetlinkError) as fast_info:
        attrs_to_key(bad, mask_attrs)
    with pytest.raises(NetlinkError) as ref_info:
        _attrs_to_key_reference(bad, mask_attrs)
    assert fast_info.value.errno == ref_info.value.errno == errno.EINVAL
    assert fast_info.value.reason == ref_info.value.reason


def test_shape_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """More layouts than MAX_SHAPES (the same attributes in other orders): the oldest go, and
    every answer stays the reference's."""
    monkeypatch.setattr(key_fast, "COMPILE_FREE", float("inf"))  # whatever the tests spent
    clear_shapes()
    key_attrs, mask_attrs = TYPICAL[0]
    orders = itertools.islice(itertools.permutations(key_attrs), key_fast.MAX_SHAPES + 10)
    for order in orders:
        attrs = {name: key_attrs[name] for name in order}
        for _ in range(key_fast.SHAPE_AFTER):
            assert attrs_to_key(attrs, mask_attrs) == _attrs_to_key_reference(attrs, mask_attrs)
    assert len(key_fast._key_shapes.codecs) == key_fast.MAX_SHAPES
    for _ in range(key_fast.MAX_VARIANTS + 3):
        install_shapes(key_attrs)
    assert len(key_fast._key_shapes.codecs[tuple(key_attrs)]) == key_fast.MAX_VARIANTS
    clear_shapes()


def test_conntrack_tuples_and_mpls_are_left_to_the_loops_or_reference() -> None:
    tuple4 = OvsKeyCtTupleIpv4(0, 0, 0, 0, 0)
    key_attrs = dict(TYPICAL[0][0], ct_orig_tuple_ipv4=tuple4)
    assert install_shapes(key_attrs) == (None, None)
    check_tiers(key_attrs, None)
    check_tiers(key_attrs, TYPICAL[0][1])


# --- metadata_from_attrs ----------------------------------------------------------------------


def check_metadata_from_attrs(key_attrs: Any) -> Metadata:
    """metadata_from_attrs, after checking that the fast path agrees with the reference."""
    ref = check_metadata(key_attrs)
    if ref[0] == "error":
        raise NetlinkError(ref[1], ref[2])
    meta: Metadata = ref[1]
    return meta


def check_metadata(key_attrs: Any) -> tuple[Any, ...]:
    ref = outcome(_metadata_from_attrs_reference, key_attrs)
    assert outcome(metadata_from_attrs, key_attrs) == ref
    fast = _quiet(fast_metadata_from_attrs, key_attrs)
    assert fast is None or ref == ("ok", fast)
    if ref[0] == "ok":
        assert type(ref[1]) is Metadata
        assert all(type(v) is type(w) for v, w in zip(fast or ref[1], ref[1], strict=True))
    return ref


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_metadata_agrees(data: st.DataObject) -> None:
    key_attrs = data.draw(valid_keys())
    ref = check_metadata(key_attrs)
    if ref[0] == "ok" and "ct_orig_tuple_ipv4" not in key_attrs:
        assert fast_metadata_from_attrs(key_attrs) is not None
    check_metadata(data.draw(mutated(key_attrs)))
    meta_only = {k: v for k, v in key_attrs.items() if k in ("in_port", "priority", "skb_mark")}
    check_metadata(meta_only)
    check_metadata(data.draw(mutated(meta_only)))


# --- key_to_attrs / mask_to_attrs ---------------------------------------------------------------


def _ordered(value: Any) -> Any:
    """``value`` with dict order and every value's exact type made visible to ==."""
    if isinstance(value, dict):
        return ("dict", [(name, _ordered(v)) for name, v in value.items()])
    if isinstance(value, tuple):
        return (type(value), [_ordered(v) for v in value])
    return (type(value), value)


def check_emission(key: bytes, mask: bytes) -> None:
    """key_to_attrs, mask_to_attrs and flow_to_attrs against the first implementation: the same
    attributes in the same order with values of the same types."""
    ref_key = _key_to_attrs_reference(key)
    assert _ordered(key_to_attrs(key)) == _ordered(ref_key)
    masked = _key_to_attrs_reference(mask_key(key, mask))
    assert _ordered(key_to_attrs(key, mask)) == _ordered(masked)
    ref_mask = _mask_to_attrs_reference(key, mask)
    assert _ordered(mask_to_attrs(key, mask)) == _ordered(ref_mask)
    assert _ordered(key_to_attrs(key, mask, as_mask=True)) == _ordered(ref_mask)
    assert _ordered(flow_to_attrs(key, mask)) == _ordered((masked, ref_mask))


flat = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_emission_agrees(data: st.DataObject) -> None:
    key_attrs, mask_attrs = data.draw(valid_inputs())
    try:
        key, mask = attrs_to_key(key_attrs, mask_attrs)
    except NetlinkError:
        key = extract_key(data.draw(frames()), metadata_prefix(data.draw(metadatas)))
        mask = data.draw(flat)
    check_emission(key, mask)
    check_emission(key, data.draw(flat))
    check_emission(data.draw(flat), data.draw(flat))  # any bytes: the emitters never validate


def test_emission_errors() -> None:
    key = bytes(KEY_SIZE)
    for bad in (b"", bytes(KEY_SIZE - 1), bytes(KEY_SIZE + 1)):
        for fn, args in (
            (key_to_attrs, (bad,)),
            (mask_to_attrs, (key, bad)),
            (flow_to_attrs, (key, bad)),
        ):
            with pytest.raises(ValueError, match="a flat key has"):
                fn(*args)
    with pytest.raises(ValueError, match="as_mask needs the mask"):
        key_to_attrs(key, as_mask=True)


# --- the fast paths are the ones in use -----------------------------------------------------------


@pytest.mark.parametrize("index", range(len(TYPICAL)))
@pytest.mark.parametrize("with_mask", [True, False])
def test_typical_layouts_take_the_compiled_and_generic_paths(index: int, with_mask: bool) -> None:
    """Every typical flow put is answered by its compiled shape functions and by the generic
    loops, never left to the reference (which would be correct but ~7x slower: bench/flow_key.py
    measures it); a total fallback would pass every equivalence test above."""
    key_attrs, mask_attrs = TYPICAL[index]
    mask = mask_attrs if with_mask else None
    expected = _attrs_to_key_reference(key_attrs, mask)
    clear_shapes()
    try:
        assert generic_attrs_to_key(key_attrs, mask) == expected
        key_fn, mask_fn = install_shapes(key_attrs, mask)
        assert key_fn is not None and key_fn(key_attrs, None) is not MISS
        if with_mask:
            assert mask_fn is not None
        assert fast_attrs_to_key(key_attrs, mask) == expected
    finally:
        clear_shapes()
