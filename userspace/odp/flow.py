"""How well a flow key fits, and its canonical form: OVS's key -> flow -> key round trip.

OVS userspace reads a datapath key into its ``struct flow`` (``odp_flow_key_to_flow``), judging
how well it fits what the packet would need, and writes keys back from that struct
(``odp_flow_key_from_flow``) in one canonical order with every metadata field present.  This
module does both on the ``ovs_key`` value model:

* :func:`key_fitness` -> :class:`Fitness` (PERFECT, TOO_MUCH, TOO_LITTLE, ERROR);
* :func:`normalize_key` -> the canonical key (recirc_id, dp_hash, skb_priority, tunnel, in_port,
  skb_mark, ct_state, ct_zone, ct_mark, ct_label, ct tuple, packet_type, eth, VLANs, eth_type,
  L3, L4), as OVS writes it with recirculation and conntrack support enabled.

What a key must hold: an IPv4/IPv6/ARP/MPLS/NSH ethertype needs that header, TCP/UDP/SCTP/ICMP
protocols need their L4 header (unless a later fragment), ICMPv6 neighbour discovery needs ND,
a VLAN ethertype needs VLAN and ENCAP.  Missing ones make the fit TOO_LITTLE (so does an MPLS
stack shorter than three labels without bottom-of-stack); attributes nothing asked for make it
TOO_MUCH; inconsistent values (CFI clear in a nonzero TCI, BOS above the innermost label, an
ethertype below 0x600, a tunnel without TTL, ...) are an ERROR.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ovsdp.netlink.structs import (
    ErspanMetadata,
    GtpuMetadata,
    OvsKeyArp,
    OvsKeyEthernet,
    OvsKeyIcmp,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyNd,
    OvsKeyNdExtensions,
    OvsKeyPorts,
    OvsNshKeyBase,
)

from .errors import OdpParseError
from .keys import GTPU_ATTR, TEXT_NAMES, TNL_F_CSUM, TNL_F_DONT_FRAGMENT, TNL_F_KEY, TNL_F_OAM, Key

ETH_TYPE_MIN = 0x600
DL_TYPE_NONE = 0x5FF
ETH_TYPE_IP = 0x0800
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_ARP = 0x0806
ETH_TYPE_RARP = 0x8035
ETH_TYPE_MPLS = 0x8847
ETH_TYPE_MPLS_MCAST = 0x8848
ETH_TYPE_NSH = 0x894F
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_VLAN_8021AD = 0x88A8
PT_ETH = 0
OFPHTN_ETHERTYPE = 1
VLAN_CFI = 0x1000
MPLS_BOS = 0x100
MAX_VLAN_HEADERS = 2
MAX_MPLS_LABELS = 3
IPPROTO_ICMP = 1
IPPROTO_IGMP = 2
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
FRAG_ANY = 1
FRAG_LATER = 2


class Fitness(enum.Enum):
    """How a key fits what OVS userspace expects (values are OVS's names)."""

    PERFECT = "ODP_FIT_PERFECT"
    TOO_MUCH = "ODP_FIT_TOO_MUCH"
    TOO_LITTLE = "ODP_FIT_TOO_LITTLE"
    ERROR = "ODP_FIT_ERROR"


class _Error(Exception):
    """An ERROR fit, with OVS's reason."""


@dataclass
class _Tunnel:
    tun_id: int = 0
    ip_src: int = 0
    ip_dst: int = 0
    ipv6_src: bytes = bytes(16)
    ipv6_dst: bytes = bytes(16)
    tos: int = 0
    ttl: int = 0
    flags: int = 0
    tp_src: int = 0
    tp_dst: int = 0
    gbp: int = 0
    geneve: bytes = b""
    erspan_ver: int = 0
    erspan_idx: int = 0
    erspan_dir: int = 0
    erspan_hwid: int = 0
    gtpu: bytes = bytes(2)


@dataclass
class _Flow:
    """The subset of OVS's struct flow a datapath key maps onto."""

    recirc_id: int = 0
    dp_hash: int = 0
    priority: int = 0
    skb_mark: int = 0
    ct_state: int = 0
    ct_zone: int = 0
    ct_mark: int = 0
    ct_labels: bytes = bytes(16)
    ct_tuple4: Any = None
    ct_tuple6: Any = None
    tunnel: _Tunnel | None = None
    in_port: int | None = None
    packet_type: int = PT_ETH
    eth: Any = None
    vlans: list[tuple[int, int]] = field(default_factory=list)
    dl_type: int = 0
    mpls: list[int] = field(default_factory=lambda: [0, 0, 0])
    nw_src: Any = 0
    nw_dst: Any = 0
    ipv6_label: int = 0
    nw_proto: int = 0
    nw_tos: int = 0
    nw_ttl: int = 0
    nw_frag: int = 0
    arp_sha: bytes = bytes(6)
    arp_tha: bytes = bytes(6)
    tp_src: int = 0
    tp_dst: int = 0
    tcp_flags: int = 0
    nd_target: bytes = bytes(16)
    nd_reserved: int = 0
    nsh_base: Any = None
    nsh_ctx: Any = None


def _is_vlan(dl_type: int) -> bool:
    return dl_type in (ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD)


def _is_mpls(dl_type: int) -> bool:
    return dl_type in (ETH_TYPE_MPLS, ETH_TYPE_MPLS_MCAST)


def _check(present: set[Any], out_of_range: bool, expected: set[Any]) -> Fitness:
    if expected - present:
        return Fitness.TOO_LITTLE
    if present - expected or out_of_range:
        return Fitness.TOO_MUCH
    return Fitness.PERFECT


def _split(key: Key) -> tuple[dict[Any, Any], bool]:
    """The attributes OVS userspace knows, and whether any others were there."""
    known = {name: value for name, value in key.items() if name in TEXT_NAMES}
    return known, len(known) != len(key)


def _tunnel_from_attr(tun: Key) -> tuple[Fitness, _Tunnel]:
    t = _Tunnel()
    unknown = False
    has_ttl = False
    for name, v in tun.items():
        if name == "id":
            t.tun_id = v
            t.flags |= TNL_F_KEY
        elif name == "ipv4_src":
            t.ip_src = v
        elif name == "ipv4_dst":
            t.ip_dst = v
        elif name == "ipv6_src":
            t.ipv6_src = v
        elif name == "ipv6_dst":
            t.ipv6_dst = v
        elif name == "tos":
            t.tos = v
        elif name == "ttl":
            t.ttl = v
            has_ttl = True
        elif name == "dont_fragment":
            t.flags |= TNL_F_DONT_FRAGMENT
        elif name == "csum":
            t.flags |= TNL_F_CSUM
        elif name == "oam":
            t.flags |= TNL_F_OAM
        elif name == "tp_src":
            t.tp_src = v
        elif name == "tp_dst":
            t.tp_dst = v
        elif name == "vxlan_opts":
            t.gbp = v.get("gbp", 0)
        elif name == "geneve_opts":
            t.geneve = bytes(v)
        elif name == "erspan_opts":
            t.erspan_ver = v.version
            if v.version == 1:
                t.erspan_idx = v.word1
            elif v.version == 2:
                t.erspan_dir = (v.bits >> 3) & 1
                t.erspan_hwid = (((v.bits >> 8) & 3) << 4) | ((v.bits >> 4) & 0xF)
        elif name == GTPU_ATTR:
            t.gtpu = bytes((v.flags, v.msgtype))
        else:
            unknown = True
    if not has_ttl:
        raise _Error("tunnel options missing TTL")
    return (Fitness.TOO_MUCH if unknown else Fitness.PERFECT), t


def _tunnel_to_attr(t: _Tunnel) -> Key:
    out: Key = {}
    if t.tun_id or t.flags & TNL_F_KEY:
        out["id"] = t.tun_id
    if t.ip_src:
        out["ipv4_src"] = t.ip_src
    if t.ip_dst:
        out["ipv4_dst"] = t.ip_dst
    if any(t.ipv6_src):
        out["ipv6_src"] = t.ipv6_src
    if any(t.ipv6_dst):
        out["ipv6_dst"] = t.ipv6_dst
    if t.tos:
        out["tos"] = t.tos
    out["ttl"] = t.ttl
    if t.flags & TNL_F_DONT_FRAGMENT:
        out["dont_fragment"] = True
    if t.flags & TNL_F_CSUM:
        out["csum"] = True
    if t.tp_src:
        out["tp_src"] = t.tp_src
    if t.tp_dst:
        out["tp_dst"] = t.tp_dst
    if t.flags & TNL_F_OAM:
        out["oam"] = True
    if t.gbp:
        out["vxlan_opts"] = {"gbp": t.gbp}
    if t.geneve:
        out["geneve_opts"] = t.geneve
    if t.erspan_ver == 1:
        out["erspan_opts"] = ErspanMetadata(version=1, word1=t.erspan_idx, sgt=0, bits=0)
    elif t.erspan_ver == 2:
        bits = ((t.erspan_hwid >> 4) << 8) | ((t.erspan_hwid & 0xF) << 4) | (t.erspan_dir << 3)
        out["erspan_opts"] = ErspanMetadata(version=2, word1=0, sgt=0, bits=bits)
    if t.gtpu[0] and t.gtpu[1]:
        out[GTPU_ATTR] = GtpuMetadata(t.gtpu[0], t.gtpu[1])
    return out


def _parse_ethertype(attrs: dict[Any, Any], expected: set[Any], f: _Flow) -> None:
    if "ethertype" in attrs:
        f.dl_type = attrs["ethertype"]
        if f.dl_type < ETH_TYPE_MIN:
            raise _Error(f"invalid Ethertype {f.dl_type} in flow key")
        expected.add("ethertype")
    elif "ipv4" in attrs:
        f.dl_type = ETH_TYPE_IP
    elif "ipv6" in attrs:
        f.dl_type = ETH_TYPE_IPV6
    elif "mpls" in attrs:
        f.dl_type = ETH_TYPE_MPLS
    else:
        f.dl_type = DL_TYPE_NONE


def _frag_from_odp(frag: int) -> int:
    if frag > 2:
        raise _Error(f"invalid frag {frag} in flow key")
    return (0, FRAG_ANY, FRAG_ANY | FRAG_LATER)[frag]


def _frag_to_odp(nw_frag: int) -> int:
    if not nw_frag & FRAG_ANY:
        return 0
    return 2 if nw_frag & FRAG_LATER else 1


def _is_nd(f: _Flow) -> bool:
    return (
        f.dl_type == ETH_TYPE_IPV6
        and f.nw_proto == IPPROTO_ICMPV6
        and f.tp_dst == 0
        and f.tp_src in (135, 136)
    )


def _parse_l2_5_onward(
    attrs: dict[Any, Any], out_of_range: bool, expected: set[Any], f: _Flow, need_check: bool
) -> Fitness:
    dl = f.dl_type
    if _is_mpls(dl):
        expected.add("mpls")
        if "mpls" in attrs:
            lses = list(attrs["mpls"])
            n = len(lses)
            if not n:
                raise _Error("MPLS LSEs have invalid length 0")
            for i in range(min(n, MAX_MPLS_LABELS)):
                f.mpls[i] = lses[i]
            if n > MAX_MPLS_LABELS:
                return Fitness.TOO_MUCH
            if any(lse & MPLS_BOS for lse in lses[:-1]):
                raise _Error("MPLS BOS set in non-innermost label")
            if n < MAX_MPLS_LABELS and not lses[-1] & MPLS_BOS:
                return Fitness.TOO_LITTLE
        return _check(set(attrs), out_of_range, expected) if need_check else Fitness.PERFECT
    if dl == ETH_TYPE_IP:
        expected.add("ipv4")
        if "ipv4" in attrs:
            v = attrs["ipv4"]
            f.nw_src, f.nw_dst, f.nw_proto = v.src, v.dst, v.proto
            f.nw_tos, f.nw_ttl, f.nw_frag = v.tos, v.ttl, _frag_from_odp(v.frag)
    elif dl == ETH_TYPE_IPV6:
        expected.add("ipv6")
        if "ipv6" in attrs:
            v = attrs["ipv6"]
            f.nw_src, f.nw_dst, f.ipv6_label, f.nw_proto = v.src, v.dst, v.label, v.proto
            f.nw_tos, f.nw_ttl, f.nw_frag = v.tclass, v.hlimit, _frag_from_odp(v.frag)
    elif dl in (ETH_TYPE_ARP, ETH_TYPE_RARP):
        expected.add("arp")
        if "arp" in attrs:
            v = attrs["arp"]
            if v.op & 0xFF00:
                raise _Error(f"unsupported ARP opcode {v.op} in flow key")
            f.nw_src, f.nw_dst, f.nw_proto = v.sip, v.tip, v.op
            f.arp_sha, f.arp_tha = v.sha, v.tha
    elif dl == ETH_TYPE_NSH:
        expected.add("nsh")
        if "nsh" in attrs:
            nsh = attrs["nsh"]
            base = nsh.get("base") or OvsNshKeyBase(0, 0, 0, 0, 0)
            if "md1" in nsh and base.mdtype != 1:
                raise _Error(
                    f"OVS_NSH_KEY_ATTR_MD1 present but declared mdtype {base.mdtype} "
                    "is not 1 (NSH_M_TYPE1)"
                )
            f.nsh_base = base
            f.nsh_ctx = nsh.get("md1")
    else:
        return _check(set(attrs), out_of_range, expected) if need_check else Fitness.PERFECT

    is_ip = dl in (ETH_TYPE_IP, ETH_TYPE_IPV6)
    later = bool(f.nw_frag & FRAG_LATER)
    proto = f.nw_proto
    if is_ip and not later and proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP):
        name = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}[proto]
        expected.add(name)
        if name in attrs:
            f.tp_src, f.tp_dst = attrs[name].src, attrs[name].dst
        if proto == IPPROTO_TCP and "tcp_flags" in attrs:
            expected.add("tcp_flags")
            f.tcp_flags = attrs["tcp_flags"]
    elif dl == ETH_TYPE_IP and not later and proto == IPPROTO_ICMP:
        expected.add("icmp")
        if "icmp" in attrs:
            f.tp_src, f.tp_dst = attrs["icmp"].type, attrs["icmp"].code
    elif dl == ETH_TYPE_IPV6 and not later and proto == IPPROTO_ICMPV6:
        expected.add("icmpv6")
        if "icmpv6" in attrs:
            f.tp_src, f.tp_dst = attrs["icmpv6"].type, attrs["icmpv6"].code
            if _is_nd(f):
                expected.add("nd")
                if "nd" in attrs:
                    nd = attrs["nd"]
                    f.nd_target, f.arp_sha, f.arp_tha = nd.target, nd.sll, nd.tll
                if "nd_extensions" in attrs:
                    expected.add("nd_extensions")
                    ext = attrs["nd_extensions"]
                    f.nd_reserved, f.tcp_flags = ext.nd_reserved, ext.nd_options_type
    elif dl == ETH_TYPE_IP and proto == IPPROTO_IGMP:
        # OVS parses IGMP type, code and group; datapaths do not: always missing information
        return Fitness.TOO_LITTLE
    return _check(set(attrs), out_of_range, expected) if need_check else Fitness.PERFECT


def _parse_8021q_onward(
    attrs: dict[Any, Any], out_of_range: bool, expected: set[Any], f: _Flow
) -> Fitness:
    fitness = Fitness.ERROR
    encaps = 0
    while encaps < MAX_VLAN_HEADERS and _is_vlan(f.dl_type):
        expected |= {"vlan", "encap"}
        fitness = _check(set(attrs), out_of_range, expected)
        tci = attrs.get("vlan", 0)
        f.vlans.append((f.dl_type, tci))
        f.dl_type = 0
        if "vlan" not in attrs or "encap" not in attrs:
            return Fitness.TOO_LITTLE
        if tci == 0:
            # a truncated 802.1Q header
            if fitness == Fitness.PERFECT and attrs["encap"]:
                return Fitness.TOO_MUCH
            return fitness
        if not tci & VLAN_CFI:
            raise _Error(f"OVS_KEY_ATTR_VLAN 0x{tci:04x} is nonzero but CFI bit is not set")
        attrs, out_of_range = _split(attrs["encap"])
        expected = set()
        _parse_ethertype(attrs, expected, f)
        inner = _parse_l2_5_onward(attrs, out_of_range, expected, f, False)
        if inner != Fitness.PERFECT:
            return inner
        encaps += 1
    return _check(set(attrs), out_of_range, expected)


def _key_to_flow(key: Key) -> tuple[Fitness, _Flow]:
    f = _Flow()
    attrs, out_of_range = _split(key)
    expected: set[Any] = set()
    for name in (
        "recirc_id",
        "dp_hash",
        "priority",
        "skb_mark",
        "ct_state",
        "ct_zone",
        "ct_mark",
        "ct_labels",
    ):
        if name in attrs:
            setattr(f, name, attrs[name])
            expected.add(name)
    if "ct_orig_tuple_ipv4" in attrs:
        f.ct_tuple4 = attrs["ct_orig_tuple_ipv4"]
        expected.add("ct_orig_tuple_ipv4")
    if "ct_orig_tuple_ipv6" in attrs:
        f.ct_tuple6 = attrs["ct_orig_tuple_ipv6"]
        expected.add("ct_orig_tuple_ipv6")
    if "tunnel" in attrs:
        tfit, f.tunnel = _tunnel_from_attr(attrs["tunnel"])
        if tfit == Fitness.PERFECT:
            expected.add("tunnel")
    if "in_port" in attrs:
        f.in_port = attrs["in_port"]
        expected.add("in_port")
    if "packet_type" in attrs:
        f.packet_type = attrs["packet_type"]
        expected.add("packet_type")
        if f.packet_type >> 16 == OFPHTN_ETHERTYPE:
            f.dl_type = f.packet_type & 0xFFFF
    if "ethernet" in attrs:
        f.eth = attrs["ethernet"]
        f.packet_type = PT_ETH
        expected.add("ethernet")
    elif "ethertype" in attrs:
        f.packet_type = (OFPHTN_ETHERTYPE << 16) | attrs["ethertype"]
        expected.add("ethertype")
    _parse_ethertype(attrs, expected, f)
    if _is_vlan(f.dl_type):
        return _parse_8021q_onward(attrs, out_of_range, expected, f), f
    return _parse_l2_5_onward(attrs, out_of_range, expected, f, True), f


def _count_mpls(f: _Flow) -> int:
    count = 0
    for i, lse in enumerate(f.mpls):
        if lse & MPLS_BOS:
            return i + 1
        if lse:
            count += 1
    return count


def _flow_to_key(f: _Flow) -> Key:
    key: Key = {"recirc_id": f.recirc_id, "dp_hash": f.dp_hash, "priority": f.priority}
    t = f.tunnel
    if t is not None and (t.ip_dst or t.ip_src or any(t.ipv6_dst) or any(t.ipv6_src)):
        key["tunnel"] = _tunnel_to_attr(t)
    if f.in_port is not None:
        key["in_port"] = f.in_port
    key["skb_mark"] = f.skb_mark
    key["ct_state"] = f.ct_state & 0xFF
    key["ct_zone"] = f.ct_zone
    key["ct_mark"] = f.ct_mark
    key["ct_labels"] = f.ct_labels
    if f.dl_type == ETH_TYPE_IP and f.ct_tuple4 is not None and f.ct_tuple4.proto:
        key["ct_orig_tuple_ipv4"] = f.ct_tuple4
    elif f.dl_type == ETH_TYPE_IPV6 and f.ct_tuple6 is not None and f.ct_tuple6.proto:
        key["ct_orig_tuple_ipv6"] = f.ct_tuple6
    key["packet_type"] = f.packet_type
    cur = key
    if f.packet_type == PT_ETH:
        key["ethernet"] = f.eth if f.eth is not None else OvsKeyEthernet(bytes(6), bytes(6))
        for tpid, tci in f.vlans[:MAX_VLAN_HEADERS]:
            if tci == 0:
                if not _is_vlan(f.dl_type):
                    break
                tpid = f.dl_type
            inner: Key = {}
            cur["ethertype"] = tpid
            cur["vlan"] = tci
            cur["encap"] = inner
            cur = inner
            if tci == 0:
                return key
    if f.dl_type < ETH_TYPE_MIN:
        return key
    cur["ethertype"] = f.dl_type
    dl = f.dl_type
    if _is_vlan(dl):
        return key
    if dl == ETH_TYPE_IP:
        cur["ipv4"] = OvsKeyIpv4(
            src=f.nw_src,
            dst=f.nw_dst,
            proto=f.nw_proto,
            tos=f.nw_tos,
            ttl=f.nw_ttl,
            frag=_frag_to_odp(f.nw_frag),
        )
    elif dl == ETH_TYPE_IPV6:
        cur["ipv6"] = OvsKeyIpv6(
            src=f.nw_src or bytes(16),
            dst=f.nw_dst or bytes(16),
            label=f.ipv6_label,
            proto=f.nw_proto,
            tclass=f.nw_tos,
            hlimit=f.nw_ttl,
            frag=_frag_to_odp(f.nw_frag),
        )
    elif dl in (ETH_TYPE_ARP, ETH_TYPE_RARP):
        cur["arp"] = OvsKeyArp(
            sip=f.nw_src, tip=f.nw_dst, op=f.nw_proto, sha=f.arp_sha, tha=f.arp_tha
        )
    elif _is_mpls(dl):
        cur["mpls"] = tuple(f.mpls[: _count_mpls(f)])
    elif dl == ETH_TYPE_NSH:
        base = f.nsh_base or OvsNshKeyBase(0, 0, 0, 0, 0)
        nsh: Key = {"base": base}
        if base.mdtype == 1:
            from ovsdp.netlink.structs import OvsNshKeyMd1

            nsh["md1"] = f.nsh_ctx or OvsNshKeyMd1(0, 0, 0, 0)
        cur["nsh"] = nsh
    if dl in (ETH_TYPE_IP, ETH_TYPE_IPV6) and not f.nw_frag & FRAG_LATER:
        proto = f.nw_proto
        if proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP):
            name = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}[proto]
            cur[name] = OvsKeyPorts(src=f.tp_src, dst=f.tp_dst)
            if proto == IPPROTO_TCP and f.tcp_flags:
                cur["tcp_flags"] = f.tcp_flags
        elif dl == ETH_TYPE_IP and proto == IPPROTO_ICMP:
            cur["icmp"] = OvsKeyIcmp(type=f.tp_src & 0xFF, code=f.tp_dst & 0xFF)
        elif dl == ETH_TYPE_IPV6 and proto == IPPROTO_ICMPV6:
            cur["icmpv6"] = OvsKeyIcmp(type=f.tp_src & 0xFF, code=f.tp_dst & 0xFF)
            if _is_nd(f):
                cur["nd"] = OvsKeyNd(target=f.nd_target, sll=f.arp_sha, tll=f.arp_tha)
                if f.nd_reserved or f.tcp_flags:
                    cur["nd_extensions"] = OvsKeyNdExtensions(
                        nd_reserved=f.nd_reserved, nd_options_type=f.tcp_flags
                    )
    return key


def key_fitness(key: Key) -> Fitness:
    """How well ``key`` fits what OVS userspace expects (ERROR for an inconsistent key)."""
    try:
        return _key_to_flow(key)[0]
    except _Error:
        return Fitness.ERROR


def normalize_key(key: Key) -> tuple[Fitness, Key]:
    """``(fitness, canonical key)``: the key as OVS writes it back after reading it.

    Raises :class:`OdpParseError` with OVS's reason when the fit is ERROR."""
    try:
        fitness, flow = _key_to_flow(key)
    except _Error as exc:
        raise OdpParseError(f"invalid flow key: {exc}") from None
    return fitness, _flow_to_key(flow)
