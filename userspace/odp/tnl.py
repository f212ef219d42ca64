"""``tnl_push(...)``: the tunnel header template of OVS_ACTION_ATTR_TUNNEL_PUSH.

The text describes the header fields (Ethernet, IPv4 or IPv6, then UDP+VXLAN, UDP+Geneve,
UDP+GTP-U, GRE, ERSPAN v1/v2 over GRE, or an SRv6 routing header); the action carries them in
``OvsActionPushTnl``: tunnel port, output port, ``header_len``, tunnel (vport) type and exactly
``header_len`` header bytes, which is what OVS sends (``offsetof(struct ovs_action_push_tnl,
header) + header_len`` bytes, never the whole 512-byte array).  Lengths, checksums and the like
that are only known per packet are zero, except the IPv4 header checksum, which covers the
template.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from ovsdp.netlink.structs import OvsActionPushTnl

from . import fmt
from .keys import ParseContext, format_geneve, scan_port
from .scanner import Scanner

HEADER_SIZE = 512
"""The most header bytes a tunnel push carries (OVS's TNL_PUSH_HEADER_SIZE)."""

VPORT_GRE = 3
VPORT_VXLAN = 4
VPORT_GENEVE = 5
VPORT_ERSPAN = 107
VPORT_IP6ERSPAN = 108
VPORT_IP6GRE = 109
VPORT_GTPU = 110
VPORT_SRV6 = 112

GRE_CSUM = 0x8000
GRE_KEY = 0x2000
GRE_SEQ = 0x1000
ETH_TYPE_ERSPAN1 = 0x88BE
ETH_TYPE_ERSPAN2 = 0x22EB
ETH_TYPE_TEB = 0x6558
ETH_TYPE_IP = 0x0800
IPV6_LABEL_MASK = 0xFFFFF
SRH_TYPE = 4


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse_tnl_push(sc: Scanner, ctx: ParseContext) -> Any:
    """The rest of ``tnl_push(`` (already consumed) up to and including its ``)``."""
    start = sc.pos - len("tnl_push(")
    sc.expect("tnl_port(")
    tnl_port = scan_port(sc, ctx, "tnl_port")
    sc.expect("),header(size=")
    size = sc.c_int(32, "header size")
    sc.expect(",type=")
    tnl_type = sc.c_int(32, "tunnel type")
    sc.expect(",eth(dst=")
    dst = sc.mac()
    sc.expect(",src=")
    src = sc.mac()
    sc.expect(",dl_type=0x")
    dl_type = sc.hex_int(16, "dl_type")
    sc.expect("),")
    hdr = bytearray(dst + src + struct.pack("!H", dl_type))

    if dl_type == ETH_TYPE_IP:
        sc.expect("ipv4(src=")
        sip = sc.ipv4()
        sc.expect(",dst=")
        dip = sc.ipv4()
        sc.expect(",proto=")
        proto = sc.c_int(8, "ipv4 proto")
        sc.expect(",tos=")
        tos = sc.c_int(8, "ipv4 tos")
        sc.expect(",ttl=")
        ttl = sc.c_int(8, "ipv4 ttl")
        sc.expect(",frag=0x")
        frag = sc.hex_int(16, "ipv4 frag")
        sc.expect("),")
        ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, tos, 0, 0, frag, ttl, proto, 0, sip, dip))
        struct.pack_into("!H", ip, 10, _ip_checksum(bytes(ip)))
        is_ipv4 = True
    else:
        sc.expect("ipv6(src=")
        sip6 = sc.ipv6()
        sc.expect(",dst=")
        dip6 = sc.ipv6()
        sc.expect(",label=")
        label_pos = sc.pos
        label = sc.c_int(32, "ipv6 label")
        if label & ~IPV6_LABEL_MASK:
            raise sc.error("ipv6 label does not fit in 20 bits", label_pos)
        sc.expect(",proto=")
        proto = sc.c_int(8, "ipv6 proto")
        sc.expect(",tclass=0x")
        tclass = sc.hex_int(8, "ipv6 tclass")
        sc.expect(",hlimit=")
        hlimit = sc.c_int(8, "ipv6 hlimit")
        sc.expect("),")
        flow = (6 << 28) | (tclass << 20) | label
        ip = bytearray(struct.pack("!IHBB", flow, 0, proto, hlimit) + sip6 + dip6)
        is_ipv4 = False
    hdr += ip

    if sc.take("udp(src="):
        udp_src = sc.c_int(16, "udp src")
        sc.expect(",dst=")
        udp_dst = sc.c_int(16, "udp dst")
        sc.expect(",csum=0x")
        udp_csum = sc.hex_int(16, "udp csum")
        sc.expect("),")
        hdr += struct.pack("!HHHH", udp_src, udp_dst, 0, udp_csum)
        if sc.take("vxlan(flags=0x"):
            vx_flags = sc.hex_int(32, "vxlan flags")
            sc.expect(",vni=0x")
            vni = sc.hex_int(24, "vxlan vni")
            sc.expect("))")
            hdr += struct.pack("!II", vx_flags, vni << 8)
            derived = VPORT_VXLAN
        elif sc.take("geneve("):
            oam = sc.take("oam,")
            crit = sc.take("crit,")
            sc.expect("vni=")
            vni = sc.c_int(24, "geneve vni")
            opts = b""
            if sc.take(",options("):
                opts = _scan_geneve_options(sc)
            sc.expect("))")
            hdr += (
                struct.pack(
                    "!BBHI", len(opts) // 4, (oam << 7) | (crit << 6), ETH_TYPE_TEB, vni << 8
                )
                + opts
            )
            derived = VPORT_GENEVE
        elif sc.take("gtpu(flags="):
            gflags = sc.c_int(8, "gtpu flags")
            sc.expect(",msgtype=")
            msgtype = sc.dec_int(8, "gtpu msgtype")
            sc.expect(",teid=0x")
            teid = sc.hex_int(32, "gtpu teid")
            sc.expect("))")
            hdr += struct.pack("!BBHI", gflags, msgtype, 0, teid)
            derived = VPORT_GTPU
        else:
            raise sc.error("expected vxlan(, geneve( or gtpu( after udp(...)")
    elif sc.take("gre((flags=0x"):
        gre_flags = sc.hex_int(16, "gre flags")
        sc.expect(",proto=0x")
        gre_proto = sc.hex_int(16, "gre proto")
        sc.expect(")")
        hdr += struct.pack("!HH", gre_flags, gre_proto)
        if gre_flags & GRE_CSUM:
            sc.expect(",csum=0x")
            hdr += struct.pack("!HH", sc.hex_int(16, "gre csum"), 0)
        if gre_flags & GRE_KEY:
            sc.expect(",key=0x")
            hdr += struct.pack("!I", sc.hex_int(32, "gre key"))
        if gre_flags & GRE_SEQ:
            sc.expect(",seq=0x")
            hdr += struct.pack("!I", sc.hex_int(32, "gre seq"))
        sc.expect("))")
        derived = VPORT_GRE if is_ipv4 else VPORT_IP6GRE
    elif sc.take("erspan(ver="):
        ver_pos = sc.pos
        ver = sc.dec_int(8, "erspan ver")
        sc.expect(",sid=0x")
        sid = sc.hex_int(10, "erspan sid")
        if ver == 1:
            sc.expect(",idx=0x")
            idx = sc.hex_int(20, "erspan idx")
            sc.expect("))")
            hdr += struct.pack("!HHI", GRE_SEQ, ETH_TYPE_ERSPAN1, 0)
            hdr += struct.pack("!HHI", 1 << 12, sid, idx)
        elif ver == 2:
            sc.expect(",dir=")
            direction = sc.dec_int(1, "erspan dir")
            sc.expect(",hwid=0x")
            hwid = sc.hex_int(6, "erspan hwid")
            sc.expect("))")
            hdr += struct.pack("!HHI", GRE_SEQ, ETH_TYPE_ERSPAN2, 0)
            hdr += struct.pack("!HH", 2 << 12, sid)
            hdr += struct.pack("!IHBB", 0, 0, hwid >> 4, ((hwid & 0xF) << 4) | (direction << 3))
        else:
            raise sc.error("erspan ver must be 1 or 2", ver_pos)
        derived = VPORT_ERSPAN if is_ipv4 else VPORT_IP6ERSPAN
    elif sc.take("srv6(segments_left="):
        left = sc.dec_int(8, "srv6 segments_left")
        sc.expect(",segs(")
        segs: list[bytes] = []
        while True:
            seg_pos = sc.pos
            segs.append(sc.ipv6())
            if len(segs) > left + 1:
                raise sc.error(f"more than segments_left+1 = {left + 1} SRv6 segments", seg_pos)
            if not sc.take(","):
                break
        sc.expect(")))")
        if len(segs) != left + 1:
            raise sc.error(
                f"srv6 segments_left={left} needs {left + 1} segments, got {len(segs)}", start
            )
        n = len(segs)
        # the routing header lists segments last first
        hdr += struct.pack("!BBBBBBH", 0, 2 * n, SRH_TYPE, left, n - 1, 0, 0)
        hdr += b"".join(reversed(segs))
        derived = VPORT_SRV6
    else:
        raise sc.error("expected udp(, gre(, erspan( or srv6( in tnl_push header")

    if tnl_type != derived:
        raise sc.error(
            f"tnl_push type={tnl_type} does not match the header (type {derived})", start
        )
    if size != len(hdr):
        raise sc.error(f"tnl_push size={size} does not match the header ({len(hdr)} bytes)", start)
    if len(hdr) > HEADER_SIZE:
        raise sc.error(f"tnl_push header of {len(hdr)} bytes exceeds {HEADER_SIZE}", start)
    sc.expect(",out_port(")
    out_port = scan_port(sc, ctx, "out_port")
    sc.expect("))")
    return OvsActionPushTnl(
        tnl_port=tnl_port,
        out_port=out_port,
        header_len=len(hdr),
        tnl_type=tnl_type,
        header=bytes(hdr),
    )


def _scan_geneve_options(sc: Scanner) -> bytes:
    out = bytearray()
    while sc.take("{"):
        cls = typ = length = 0
        if sc.take("class="):
            cls = sc.c_int(16, "geneve class")
        sc.take(",")
        if sc.take("type="):
            typ = sc.c_int(8, "geneve type")
        sc.take(",")
        if sc.take("len="):
            pos = sc.pos
            length = sc.c_int(8, "geneve len")
            if length > 124 or length % 4:
                raise sc.error(f"bad geneve option length {length}", pos)
        body = bytes(length)
        if sc.take(","):
            body = sc.int_string(length, "geneve option data")
        sc.expect("}")
        out += struct.pack("!HBB", cls, typ, length // 4) + body
    sc.expect(")", "to close options(")
    if len(out) > 252:
        raise sc.error("geneve options too long")
    return bytes(out)


def format_tnl_push(data: Any, names: Mapping[int, str]) -> str:
    """``tnl_push(tnl_port(N),header(...),out_port(N))`` of an OvsActionPushTnl."""

    def port(number: int) -> str:
        return names.get(number, str(number))

    return (
        f"tnl_push(tnl_port({port(data.tnl_port)}),{format_tnl_header(data)},"
        f"out_port({port(data.out_port)}))"
    )


def format_tnl_header(data: Any) -> str:
    """``header(size=,type=,eth(...),ipv4|ipv6(...),<tunnel>(...))``."""
    # zeros behind the header bytes, so that reading a field of a short header cannot fail
    h = bytes(data.header).ljust(HEADER_SIZE, b"\0")
    dl_type = struct.unpack_from("!H", h, 12)[0]
    out = [
        f"header(size={data.header_len},type={data.tnl_type},eth(dst={fmt.mac(h[0:6])},"
        f"src={fmt.mac(h[6:12])},dl_type=0x{dl_type:04x}),"
    ]
    if dl_type == ETH_TYPE_IP:
        tos, frag, ttl, proto, sip, dip = struct.unpack_from("!xB4xHBB2xII", h, 14)
        out.append(
            f"ipv4(src={fmt.ip4(sip)},dst={fmt.ip4(dip)},proto={proto},"
            f"tos={fmt.cx(tos)},ttl={ttl},frag=0x{frag:x}),"
        )
        l4 = 14 + 20
    else:
        flow, nxt, hlim = struct.unpack_from("!I2xBB", h, 14)
        out.append(
            f"ipv6(src={fmt.ip6(h[22:38])},dst={fmt.ip6(h[38:54])},"
            f"label={flow & IPV6_LABEL_MASK},proto={nxt},"
            f"tclass=0x{(flow >> 20) & 0xFF:x},hlimit={hlim}),"
        )
        l4 = 14 + 40
    t = data.tnl_type
    if t in (VPORT_VXLAN, VPORT_GENEVE, VPORT_GTPU):
        usrc, udst, ucsum = struct.unpack_from("!HH2xH", h, l4)
        out.append(f"udp(src={usrc},dst={udst},csum=0x{ucsum:x}),")
        p = l4 + 8
        if t == VPORT_VXLAN:
            vx_flags, vni = struct.unpack_from("!II", h, p)
            out.append(f"vxlan(flags=0x{vx_flags:x},vni=0x{vni >> 8:x})")
        elif t == VPORT_GENEVE:
            b0, b1, _proto, vni = struct.unpack_from("!BBHI", h, p)
            text = "geneve(" + ("oam," if b1 & 0x80 else "") + ("crit," if b1 & 0x40 else "")
            text += f"vni=0x{vni >> 8:x}"
            opt_len = (b0 & 0x3F) * 4
            if opt_len:
                text += ",options(" + format_geneve(h[p + 8 : p + 8 + opt_len], None, False) + ")"
            out.append(text + ")")
        else:
            gflags, msgtype, teid = struct.unpack_from("!BB2xI", h, p)
            out.append(f"gtpu(flags=0x{gflags:x},msgtype={msgtype},teid=0x{teid:x})")
    elif t in (VPORT_GRE, VPORT_IP6GRE):
        gflags, gproto = struct.unpack_from("!HH", h, l4)
        text = f"gre((flags=0x{gflags:x},proto=0x{gproto:x})"
        p = l4 + 4
        if gflags & GRE_CSUM:
            text += f",csum=0x{struct.unpack_from('!H', h, p)[0]:x}"
            p += 4
        if gflags & GRE_KEY:
            text += f",key=0x{struct.unpack_from('!I', h, p)[0]:x}"
            p += 4
        if gflags & GRE_SEQ:
            text += f",seq=0x{struct.unpack_from('!I', h, p)[0]:x}"
            p += 4
        out.append(text + ")")
    elif t in (VPORT_ERSPAN, VPORT_IP6ERSPAN):
        p = l4 + 8
        ver_vlan, cos_sid = struct.unpack_from("!HH", h, p)
        ver, sid = ver_vlan >> 12, cos_sid & 0x3FF
        if ver == 1:
            idx = struct.unpack_from("!I", h, p + 4)[0]
            out.append(f"erspan(ver=1,sid=0x{sid:x},idx=0x{idx:x})")
        elif ver == 2:
            b6, b7 = h[p + 4 + 6], h[p + 4 + 7]
            hwid = ((b6 & 3) << 4) | (b7 >> 4)
            out.append(f"erspan(ver=2,sid=0x{sid:x},dir={(b7 >> 3) & 1},hwid=0x{hwid:x})")
    elif t == VPORT_SRV6:
        left, last = h[l4 + 3], h[l4 + 4]
        n = last + 1
        segs = [fmt.ip6(h[l4 + 8 + 16 * i : l4 + 24 + 16 * i]) for i in range(n)]
        out.append(f"srv6(segments_left={left},segs({','.join(reversed(segs))}))")
    return "".join(out) + ")"
