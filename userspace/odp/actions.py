"""Action lists: ODP text <-> the ``ovs_action`` value model of :mod:`ovsdp.netlink`.

An action list is a list of ``(name, value)`` of the ``ovs_action`` space, e.g.
``[("output", 2), ("set", {"ipv4": ...}), ("set_masked", {"ipv4": (value, mask)})]``.
Syntax and formatting follow OVS's ``odp_actions_from_string`` / ``format_odp_actions``:
``drop`` alone is one DROP action and an empty list prints as ``drop``; ``set(...)`` becomes
SET_MASKED unless every byte of the written mask is set (tunnel keys always use SET, nested
NSH keys always SET_MASKED); userspace() cookies are encoded as OVS's 48-byte
``user_action_cookie`` (see :mod:`.cookies`); ``tnl_push`` builds the header template
(see :mod:`.tnl`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ovsdp.netlink import CODECS
from ovsdp.netlink.structs import (
    OvsActionAddMpls,
    OvsActionHash,
    OvsActionPushMpls,
    OvsActionPushVlan,
    OvsCtLabels,
    OvsCtMark,
    OvsKeyEthernet,
    OvsNshKeyBase,
    OvsNshKeyMd1,
)

from . import cookies, fmt, tnl
from .keys import (
    MAX_NESTED,
    Key,
    ParseContext,
    PortNames,
    attr_payload,
    format_key_attr,
    format_mpls_lse,
    format_nsh_masked,
    format_u128,
    format_vlan_tci,
    parse_flag_set,
    parse_key_attr,
    scan_port,
)
from .scanner import DELIMITERS, Scanner

Action = tuple[Any, Any]

UINT32_MAX = 0xFFFFFFFF
ETH_TYPE_VLAN = 0x8100
VLAN_CFI = 0x1000
NSH_M_TYPE1 = 1
NSH_M_TYPE2 = 2
NSH_P_ETHERNET = 3
MIN_USERDATA = 8
PSAMPLE_COOKIE_MAX = 16
HASH_ALGS = {0: "l4", 1: "sym_l4"}
_DELIMS_END = DELIMITERS + ")"


# --- parsing ------------------------------------------------------------------------------------


def parse_actions(text: str, port_names: PortNames | None = None) -> list[Action]:
    """Parse ODP action text into a list of ``(name, value)`` of the ``ovs_action`` space.

    ``drop`` (the whole text) is one DROP action; port numbers are OUTPUT actions and so are
    names found in ``port_names``.  Raises :class:`OdpParseError` saying what and where."""
    if text.strip().lower() == "drop":
        return [("drop", 0)]
    sc = Scanner(text)
    ctx = ParseContext(port_names)
    actions: list[Action] = []
    while True:
        sc.skip_delimiters()
        if sc.eof():
            break
        start = sc.pos
        action = _parse_action(sc, ctx, 1)
        _check_size(sc, action, start)
        actions.append(action)
        if not sc.eof() and sc.peek() not in DELIMITERS:
            raise sc.error("unexpected text after an action")
    return actions


def _check_size(sc: Scanner, action: Action, start: int) -> None:
    try:
        CODECS["ovs_action"].encode([action])
    except Exception as exc:
        raise sc.error(f"action cannot be encoded: {exc}", start) from None


def _parse_list(sc: Scanner, ctx: ParseContext, depth: int, what: str) -> list[Action]:
    """Actions up to (and including) the ``)`` closing a nested list."""
    out: list[Action] = []
    while True:
        sc.skip_delimiters()
        if sc.eof():
            raise sc.error(f"unterminated {what}")
        if sc.take(")"):
            return out
        out.append(_parse_action(sc, ctx, depth + 1))


def _parse_action(sc: Scanner, ctx: ParseContext, depth: int) -> Action:
    if depth >= MAX_NESTED:
        raise sc.error(f"actions nested deeper than {MAX_NESTED - 1} levels")
    start = sc.pos
    if sc.peek().isdigit():
        return "output", sc.c_int(32, "output port")
    word = sc.peek_ident()
    if word and word not in _ACTION_PARSERS and not re.fullmatch(r"action[0-9]+", word):
        end = sc.pos
        while end < len(sc.text) and sc.text[end] not in _DELIMS_END:
            end += 1
        name = sc.text[sc.pos : end]
        if name in ctx.port_names:
            sc.pos = end
            return "output", int(ctx.port_names[name])
    if not word:
        raise sc.error("expected an action")
    sc.pos += len(word)
    parser = _ACTION_PARSERS.get(word)
    if parser is None:
        if re.fullmatch(r"action[0-9]+", word):
            return _parse_generic(sc, int(word[6:]), start)
        raise sc.error(f"unknown action {word!r}", start)
    return parser(sc, ctx, depth, start)


def _parse_generic(sc: Scanner, number: int, start: int) -> Action:
    if number > 0x3FFF:
        raise sc.error(f"action number {number} out of range", start)
    data = b""
    if sc.take("("):
        data = sc.hex_bytes()
        sc.expect(")")
    codec = CODECS["ovs_action"]
    if number in codec.by_type:
        alen = 4 + len(data)
        raw = alen.to_bytes(2, "little") + number.to_bytes(2, "little") + data + bytes(-alen & 3)
        try:
            decoded = codec.decode(raw)[0]
            return decoded[0], decoded[1]
        except Exception as exc:
            raise sc.error(f"action{number}: {exc}", start) from None
    return number, data


Parser = Callable[[Scanner, ParseContext, int, int], Action]


def _single_u32(name: str) -> Parser:
    def parse(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
        sc.expect("(")
        value = sc.c_int(32, name)
        sc.expect(")")
        return name, value

    return parse


def _p_flag(name: str, parens: bool = False) -> Parser:
    def parse(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
        if parens:
            sc.expect("()")
        return name, True

    return parse


def _p_drop(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    return "drop", 0


def _p_tnl_pop(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    port = scan_port(sc, ctx, "tnl_pop port")
    sc.expect(")")
    return "tunnel_pop", port


def _p_userspace(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(pid=")
    value: dict[str, Any] = {"pid": sc.c_int(32, "pid")}
    # without any cookie text OVS still sends a zeroed (type 0) cookie
    userdata = bytes(cookies.COOKIE_SIZE)
    if sc.take(",sFlow(vid="):
        vid = sc.c_int(32, "sFlow vid")
        sc.expect(",pcp=")
        pcp = sc.c_int(32, "sFlow pcp")
        sc.expect(",output=")
        output = sc.c_int(32, "sFlow output")
        sc.expect(")")
        tci = (vid | (pcp << 13)) & 0xFFFF
        if tci:
            tci |= VLAN_CFI
        userdata = cookies.encode_cookie(cookies.Cookie(cookies.SFLOW, vlan_tci=tci, output=output))
    elif sc.take(",slow_path("):
        reason, _ = parse_flag_set(
            sc,
            cookies.SLOW_PATH_REASONS,
            cookies.SLOW_PATH_REASON_MASK,
            "slow_path",
            masked=False,
            seps="|,",
        )
        sc.expect(")")
        userdata = cookies.encode_cookie(cookies.Cookie(cookies.SLOW_PATH, reason=reason))
    elif sc.take(",flow_sample(probability="):
        prob = sc.c_int(16, "probability")
        sc.expect(",collector_set_id=")
        cset = sc.c_int(32, "collector_set_id")
        sc.expect(",obs_domain_id=")
        dom = sc.c_int(32, "obs_domain_id")
        sc.expect(",obs_point_id=")
        point = sc.c_int(32, "obs_point_id")
        sc.expect(",output_port=")
        out = scan_port(sc, ctx, "output_port")
        direction = 0
        if sc.take(",ingress"):
            direction = cookies.SAMPLE_INGRESS
        elif sc.take(",egress"):
            direction = cookies.SAMPLE_EGRESS
        sc.expect(")")
        userdata = cookies.encode_cookie(
            cookies.Cookie(
                cookies.FLOW_SAMPLE,
                probability=prob,
                collector_set_id=cset,
                obs_domain_id=dom,
                obs_point_id=point,
                output=out,
                direction=direction,
            )
        )
    elif sc.take(",ipfix(output_port="):
        out = scan_port(sc, ctx, "output_port")
        sc.expect(")")
        userdata = cookies.encode_cookie(cookies.Cookie(cookies.IPFIX, output=out))
    elif sc.take(",controller(reason="):
        reason = sc.dec_int(16, "reason")
        sc.expect(",dont_send=")
        dont_send = sc.dec_int(8, "dont_send")
        sc.expect(",continuation=")
        continuation = sc.dec_int(8, "continuation")
        sc.expect(",recirc_id=")
        recirc = sc.dec_int(32, "recirc_id")
        sc.expect(",rule_cookie=")
        rule = sc.hex_int(64, "rule_cookie")
        sc.expect(",controller_id=")
        cid = sc.dec_int(16, "controller_id")
        sc.expect(",max_len=")
        max_len = sc.dec_int(16, "max_len")
        sc.expect(")")
        userdata = cookies.encode_cookie(
            cookies.Cookie(
                cookies.CONTROLLER,
                dont_send=1 if dont_send else 0,
                continuation=1 if continuation else 0,
                reason=reason,
                recirc_id=recirc,
                rule_cookie=rule,
                controller_id=cid,
                max_len=max_len,
            )
        )
    elif sc.take(",userdata("):
        userdata = sc.hex_bytes("userdata")
        sc.expect(")", "to close userdata(")
    # OVS pads USERDATA to at least 8 bytes (old kernels required exactly 8)
    value["userdata"] = userdata.ljust(MIN_USERDATA, b"\0")
    include_actions = sc.take(",actions")
    if sc.take(",tunnel_out_port="):
        value["egress_tun_port"] = scan_port(sc, ctx, "tunnel_out_port")
    if include_actions:
        value["actions"] = True
    sc.expect(")", "to close userspace(")
    return "userspace", value


def _p_set(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    key: Key = {}
    mask: Key = {}
    name = parse_key_attr(sc, ctx, key, mask, depth + 1)
    sc.expect(")", "to close set(")
    value, mvalue = key[name], mask[name]
    if name == "tunnel":
        return "set", {name: value}
    if name in ("encap", "nsh") or not _all_ones(name, mvalue):
        if name == "nsh":
            base = value.get("base")
            md1 = value.get("md1") or OvsNshKeyMd1(0, 0, 0, 0)
            return "set_masked", {
                "nsh": {"base": (base, mvalue["base"]), "md1": (md1, mvalue["md1"])}
            }
        if name == "encap":
            raise sc.error("set(encap(...)) is not an action", start)
        return "set_masked", {name: (value, mvalue)}
    return "set", {name: value}


def _all_ones(name: Any, mvalue: Any) -> bool:
    if isinstance(name, int):
        return all(b == 0xFF for b in mvalue)
    return all(b == 0xFF for b in attr_payload("ovs_key", name, mvalue))


def _p_push_vlan(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    tpid = ETH_TYPE_VLAN
    if sc.take("tpid="):
        tpid = sc.c_int(16, "tpid")
        sc.expect(",")
    sc.expect("vid=")
    vid_pos = sc.pos
    vid = sc.c_int(32, "vid")
    sc.expect(",pcp=")
    pcp_pos = sc.pos
    pcp = sc.c_int(32, "pcp")
    cfi = 1
    if sc.take(",cfi="):
        cfi = sc.c_int(32, "cfi")
    sc.expect(")", "to close push_vlan(")
    if vid >> 12:
        raise sc.error(f"vid {vid} does not fit in 12 bits", vid_pos)
    if pcp >> 3:
        raise sc.error(f"pcp {pcp} does not fit in 3 bits", pcp_pos)
    tci = vid | (pcp << 13) | (VLAN_CFI if cfi else 0)
    return "push_vlan", OvsActionPushVlan(tpid=tpid, tci=tci)


def _p_meter(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    meter = sc.c_int(32, "meter id")
    sc.expect(")")
    return "meter", meter


def _p_sample(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(sample=")
    pos = sc.pos
    m = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?").match(sc.text, sc.pos)
    if m is None:
        raise sc.error("expected a percentage")
    sc.pos = m.end()
    percent = float(m.group(0))
    if not 0.0 <= percent <= 100.0:
        raise sc.error(f"sample percentage {percent} not within 0-100", pos)
    sc.expect("%,actions(")
    probability = math.floor(UINT32_MAX * (percent / 100.0) + 0.5)
    probability = max(0, min(UINT32_MAX, probability))
    inner = _parse_list(sc, ctx, depth, "sample actions(")
    sc.expect(")", "to close sample(")
    return "sample", {"probability": probability, "actions": inner}


def _p_clone(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    return "clone", _parse_list(sc, ctx, depth, "clone(")


def _p_check_pkt_len(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(size=")
    size = sc.c_int(16, "size")
    sc.expect(",gt(")
    greater = _parse_branch(sc, ctx, depth, "gt(")
    sc.expect(",le(")
    less = _parse_branch(sc, ctx, depth, "le(")
    sc.expect(")", "to close check_pkt_len(")
    return "check_pkt_len", {
        "pkt_len": size,
        "actions_if_greater": greater,
        "actions_if_less_equal": less,
    }


def _parse_branch(sc: Scanner, ctx: ParseContext, depth: int, what: str) -> list[Action]:
    if sc.text[sc.pos : sc.pos + 4].lower() == "drop" and sc.text[sc.pos + 4 : sc.pos + 5] == ")":
        sc.pos += 5
        return []
    return _parse_list(sc, ctx, depth, what)


def _p_dec_ttl(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(le_1(")
    inner = _parse_branch(sc, ctx, depth, "le_1(")
    sc.expect(")", "to close dec_ttl(")
    return "dec_ttl", {"action": inner}


def _p_hash(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    pos = sc.pos
    alg_name = sc.ident()
    algs = {v: k for k, v in HASH_ALGS.items()}
    if alg_name not in algs:
        raise sc.error(f"unknown hash algorithm {alg_name!r}", pos)
    sc.expect("(")
    basis = sc.c_int(32, "hash basis")
    sc.expect("))")
    return "hash", OvsActionHash(alg=algs[alg_name], basis=basis)


def _scan_mpls_lse(sc: Scanner) -> tuple[int, int]:
    sc.expect("(label=")
    label = sc.c_int(20, "label")
    sc.expect(",tc=")
    tc = sc.c_int(3, "tc")
    sc.expect(",ttl=")
    ttl = sc.c_int(8, "ttl")
    sc.expect(",bos=")
    bos = sc.c_int(1, "bos")
    sc.expect(",eth_type=")
    eth_type = sc.c_int(16, "eth_type")
    sc.expect(")")
    return (label << 12) | (tc << 9) | (bos << 8) | ttl, eth_type


def _p_push_mpls(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    lse, eth_type = _scan_mpls_lse(sc)
    return "push_mpls", OvsActionPushMpls(lse=lse, ethertype=eth_type)


def _p_add_mpls(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    lse, eth_type = _scan_mpls_lse(sc)
    return "add_mpls", OvsActionAddMpls(lse=lse, ethertype=eth_type, tun_flags=0)


def _p_pop_mpls(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(eth_type=")
    eth_type = sc.c_int(16, "eth_type")
    sc.expect(")")
    return "pop_mpls", eth_type


def _p_push_eth(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(src=")
    src = sc.mac()
    sc.expect(",dst=")
    dst = sc.mac()
    if sc.take(",type="):
        sc.c_int(16, "type")  # OVS's parser wants it; the action has no such field
    sc.expect(")")
    return "push_eth", OvsKeyEthernet(src=src, dst=dst)


def _p_trunc(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    max_len = sc.c_int(32, "trunc length")
    sc.expect(")")
    return "trunc", max_len


def _p_recirc(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    recirc = sc.c_int(32, "recirc id")
    sc.expect(")")
    return "recirc", recirc


def _p_psample(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    value: dict[str, Any] = {}
    while not sc.take(")"):
        pos = sc.pos
        field = sc.ident()
        if field in value:
            raise sc.error(f"duplicate psample field {field!r}", pos)
        sc.expect("=", f"after {field!r}")
        if field == "group":
            value["group"] = sc.c_int(32, "psample group")
        elif field == "cookie":
            cpos = sc.pos
            if not sc.take("0x") and not sc.take("0X"):
                raise sc.error("psample cookie must be hex (0x...)", cpos)
            cookie = sc.hex_bytes("psample cookie")
            if not cookie:
                raise sc.error("empty psample cookie", cpos)
            if len(cookie) > PSAMPLE_COOKIE_MAX:
                raise sc.error(f"psample cookie longer than {PSAMPLE_COOKIE_MAX} bytes", cpos)
            value["cookie"] = cookie
        else:
            raise sc.error(f"unknown psample field {field!r}", pos)
        if not sc.take(","):
            sc.expect(")", "to close psample(")
            break
    if "group" not in value:
        raise sc.error("psample needs group=", start)
    return "psample", {k: value[k] for k in ("group", "cookie") if k in value}


def _p_ct(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    value: dict[str, Any] = {}
    if not sc.take("("):
        return "ct", value
    commit = force = False
    zone = 0
    mark = None
    labels = None
    helper = timeout = None
    nat = None
    while not sc.take(")"):
        sc.skip_delimiters()
        pos = sc.pos
        if sc.take(")"):
            break
        word = sc.ident()
        if word == "commit":
            commit = True
        elif word == "force_commit":
            force = True
        elif word == "zone":
            sc.expect("=")
            zone = sc.dec_int(16, "zone")
        elif word == "mark":
            sc.expect("=")
            mvalue = sc.hex_int(32, "mark")
            mmask = sc.hex_int(32, "mark mask") if sc.take("/") else UINT32_MAX
            mark = OvsCtMark(value=mvalue, mask=mmask)
        elif word == "label":
            sc.expect("=")
            lvalue = sc.int_string(16, "label")
            lmask = sc.int_string(16, "label mask") if sc.take("/") else b"\xff" * 16
            labels = OvsCtLabels(value=lvalue[::-1], mask=lmask[::-1])
        elif word in ("helper", "timeout"):
            sc.expect("=")
            text = sc.until(_DELIMS_END)
            limit = 15 if word == "helper" else 31
            if not text or len(text) > limit:
                raise sc.error(f"ct {word} must be 1 to {limit} characters", pos)
            if word == "helper":
                helper = text
            else:
                timeout = text
        elif word == "nat":
            nat = _scan_nat(sc)
        else:
            raise sc.error(f"unknown ct argument {word!r}", pos)
    if commit and force:
        raise sc.error("ct takes commit or force_commit, not both", start)
    if commit:
        value["commit"] = True
    elif force:
        value["force_commit"] = True
    if zone:
        value["zone"] = zone
    if mark is not None and mark.mask:
        value["mark"] = mark
    if labels is not None and any(labels.mask):
        value["labels"] = labels
    if helper is not None:
        value["helper"] = helper
    if timeout is not None:
        value["timeout"] = timeout
    if nat is not None:
        value["nat"] = nat
    return "ct", value


def _scan_nat(sc: Scanner) -> dict[str, Any]:
    start = sc.pos
    if not sc.take("("):
        return {}
    kind = None
    addr_min = addr_max = None
    proto_min = proto_max = 0
    flags = {"persistent": False, "hash": False, "random": False}
    while not sc.take(")"):
        sc.skip_delimiters()
        pos = sc.pos
        if sc.take(")"):
            break
        word = sc.ident()
        if word in ("src", "dst"):
            if kind is not None:
                raise sc.error("nat takes src or dst, not both", pos)
            kind = word
            if sc.take("="):
                addr_min, addr_max, proto_min, proto_max = _scan_nat_range(sc)
        elif word in flags:
            flags[word] = True
        else:
            raise sc.error(f"unknown nat argument {word!r}", pos)
    if flags["hash"] and flags["random"]:
        raise sc.error("nat takes hash or random, not both", start)
    if addr_min is not None and addr_max is not None and addr_max < addr_min:
        raise sc.error("nat address range max below min", start)
    if proto_max and proto_max < proto_min:
        raise sc.error("nat port range max below min", start)
    nat: dict[str, Any] = {}
    if kind is None:
        return nat
    nat[kind] = True
    if addr_min is not None:
        nat["ip_min"] = addr_min
        if addr_max is not None and addr_max > addr_min:
            nat["ip_max"] = addr_max
        if proto_min:
            nat["proto_min"] = proto_min
            if proto_max > proto_min:
                nat["proto_max"] = proto_max
        if flags["persistent"]:
            nat["persistent"] = True
        if flags["hash"]:
            nat["proto_hash"] = True
        if flags["random"]:
            nat["proto_random"] = True
    return nat


def _scan_nat_range(sc: Scanner) -> tuple[bytes, bytes | None, int, int]:
    def addr() -> bytes:
        if sc.take("["):
            a = sc.ipv6()
            sc.expect("]")
            return a
        m = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+").match(sc.text, sc.pos)
        if m is not None:
            return sc.ipv4().to_bytes(4, "big")
        return sc.ipv6()

    addr_min = addr()
    addr_max = None
    if sc.take("-"):
        addr_max = addr()
        if len(addr_max) != len(addr_min):
            raise sc.error("nat address range mixes IPv4 and IPv6")
    proto_min = proto_max = 0
    if sc.take(":"):
        proto_min = sc.dec_int(16, "nat port")
        if sc.take("-"):
            proto_max = sc.dec_int(16, "nat port")
    return addr_min, addr_max, proto_min, proto_max


def _p_push_nsh(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    flags, ttl, mdtype, np_, spi, si = 0, 63, NSH_M_TYPE1, NSH_P_ETHERNET, 0, 255
    ctxs = [0, 0, 0, 0]
    md2 = b""
    while True:
        sc.skip_delimiters()
        if sc.take(")"):
            break
        pos = sc.pos
        word = sc.ident()
        sc.expect("=")
        if word == "flags":
            flags = sc.c_int(8, "flags")
        elif word == "ttl":
            ttl = sc.c_int(8, "ttl")
        elif word == "mdtype":
            mdtype = sc.c_int(8, "mdtype")
            if mdtype not in (NSH_M_TYPE1, NSH_M_TYPE2):
                raise sc.error(f"unknown NSH mdtype {mdtype}", pos)
        elif word == "np":
            np_ = sc.c_int(8, "np")
        elif word == "spi":
            sc.take("0x")
            spi = sc.hex_int(24, "spi")
        elif word == "si":
            si = sc.c_int(8, "si")
        elif mdtype == NSH_M_TYPE1 and word in ("c1", "c2", "c3", "c4"):
            sc.take("0x")
            ctxs[int(word[1]) - 1] = sc.hex_int(32, word)
        elif mdtype == NSH_M_TYPE2 and word == "md2":
            sc.expect("0x")
            md2 = sc.hex_bytes("md2")
            md2 = md2.ljust(-(-len(md2) // 4) * 4, b"\0")
        else:
            raise sc.error(f"unknown push_nsh field {word!r}", pos)
    base = OvsNshKeyBase(flags=flags, ttl=ttl, mdtype=mdtype, np=np_, path_hdr=(spi << 8) | si)
    value: dict[str, Any] = {"base": base}
    if mdtype == NSH_M_TYPE1:
        value["md1"] = OvsNshKeyMd1(*ctxs)
    elif md2:
        value["md2"] = md2
    return "push_nsh", value


def _p_tnl_push(sc: Scanner, ctx: ParseContext, depth: int, start: int) -> Action:
    sc.expect("(")
    return "tunnel_push", tnl.parse_tnl_push(sc, ctx)


_ACTION_PARSERS: dict[str, Parser] = {
    "drop": _p_drop,
    "lb_output": _single_u32("lb_output"),
    "trunc": _p_trunc,
    "recirc": _p_recirc,
    "userspace": _p_userspace,
    "set": _p_set,
    "push_vlan": _p_push_vlan,
    "pop_vlan": _p_flag("pop_vlan"),
    "meter": _p_meter,
    "sample": _p_sample,
    "clone": _p_clone,
    "push_nsh": _p_push_nsh,
    "pop_nsh": _p_flag("pop_nsh", parens=True),
    "tnl_pop": _p_tnl_pop,
    "ct_clear": _p_flag("ct_clear"),
    "check_pkt_len": _p_check_pkt_len,
    "ct": _p_ct,
    "tnl_push": _p_tnl_push,
    "dec_ttl": _p_dec_ttl,
    "hash": _p_hash,
    "push_mpls": _p_push_mpls,
    "pop_mpls": _p_pop_mpls,
    "add_mpls": _p_add_mpls,
    "push_eth": _p_push_eth,
    "pop_eth": _p_flag("pop_eth"),
    "psample": _p_psample,
}


# --- formatting ---------------------------------------------------------------------------------


def format_actions(actions: list[Action], port_names: PortNames | None = None) -> str:
    """Format an action list the way OVS's ``format_odp_actions`` does (``drop`` if empty).

    ``port_names`` (name -> number) prints output ports by name."""
    names = {int(number): name for name, number in (port_names or {}).items()}
    return _format_list(actions, names)


def _format_list(actions: list[Action], names: Mapping[int, str]) -> str:
    if not actions:
        return "drop"
    return ",".join(_format_action(name, value, names) for name, value in actions)


def _port(number: int, names: Mapping[int, str]) -> str:
    return names.get(number, str(number))


def _format_action(name: Any, v: Any, names: Mapping[int, str]) -> str:
    if name == "output":
        return _port(v, names)
    if name in ("meter", "lb_output", "trunc"):
        return f"{name}({v})"
    if name == "tunnel_pop":
        return f"tnl_pop({_port(v, names)})"
    if name == "tunnel_push":
        return tnl.format_tnl_push(v, names)
    if name == "userspace":
        return _format_userspace(v, names)
    if name == "recirc":
        return f"recirc({fmt.cx(v)})"
    if name == "hash":
        alg = HASH_ALGS.get(v.alg)
        if alg is None:
            return f"hash(Unknown hash algorithm({v.alg}))"
        return f"hash({alg}({v.basis}))"
    if name == "set":
        ((kname, kvalue),) = v.items()
        return f"set({format_key_attr(kname, kvalue, None, True)})"
    if name == "set_masked":
        ((kname, kpair),) = v.items()
        if kname == "nsh":
            return f"set(nsh({_format_set_nsh(kpair)}))"
        kvalue, kmask = kpair
        return f"set({format_key_attr(kname, kvalue, kmask, False)})"
    if name == "push_eth":
        return f"push_eth(src={fmt.mac(v.src)},dst={fmt.mac(v.dst)})"
    if name in ("pop_eth", "pop_vlan", "ct_clear"):
        return name
    if name == "push_vlan":
        tpid = "" if v.tpid == ETH_TYPE_VLAN else f"tpid=0x{v.tpid:04x},"
        return f"push_vlan({tpid}{format_vlan_tci(v.tci, 0xFFFF, False)})"
    if name == "push_mpls":
        return f"push_mpls({format_mpls_lse(v.lse)},eth_type=0x{v.ethertype:x})"
    if name == "add_mpls":
        return f"add_mpls({format_mpls_lse(v.lse)},eth_type=0x{v.ethertype:x})"
    if name == "pop_mpls":
        return f"pop_mpls(eth_type=0x{v:x})"
    if name == "sample":
        percent = 100.0 * v.get("probability", 0) / UINT32_MAX
        return f"sample(sample={percent:.1f}%,actions({_format_list(v.get('actions', []), names)}))"
    if name == "ct":
        return _format_ct(v)
    if name == "clone":
        return f"clone({_format_list(v, names)})"
    if name == "push_nsh":
        return _format_push_nsh(v)
    if name == "pop_nsh":
        return "pop_nsh()"
    if name == "check_pkt_len":
        if "actions_if_greater" not in v or "actions_if_less_equal" not in v:
            return "check_pkt_len(error)"
        return (
            f"check_pkt_len(size={v.get('pkt_len', 0)},"
            f"gt({_format_list(v['actions_if_greater'], names)}),"
            f"le({_format_list(v['actions_if_less_equal'], names)}))"
        )
    if name == "dec_ttl":
        return f"dec_ttl(le_1({_format_list(v.get('action', []), names)}))"
    if name == "drop":
        return "drop"
    if name == "psample":
        text = f"psample(group={v.get('group', 0)}"
        if "cookie" in v:
            text += ",cookie=0x" + bytes(v["cookie"]).hex()
        return text + ")"
    # an action OVS does not know: its number and payload bytes
    number = name if isinstance(name, int) else CODECS["ovs_action"].numbers[name]
    data = bytes(v) if isinstance(name, int) else _action_payload(name, v)
    return f"action{number}" + (f"({fmt.hex_spaced(data)})" if data else "")


def _action_payload(name: str, value: Any) -> bytes:
    raw = CODECS["ovs_action"].encode([(name, value)])
    return raw[4 : int.from_bytes(raw[0:2], "little")]


def _format_userspace(v: Mapping[str, Any], names: Mapping[int, str]) -> str:
    text = f"userspace(pid={v.get('pid', 0)}"
    if "userdata" in v:
        data = bytes(v["userdata"])
        c = cookies.decode_cookie(data)
        if c is None:
            text += f",userdata({data.hex()})"
        elif c.type == cookies.SFLOW:
            text += f",sFlow(vid={c.vlan_tci & 0xFFF},pcp={c.vlan_tci >> 13},output={c.output})"
        elif c.type == cookies.SLOW_PATH:
            text += f",slow_path({fmt.flags(c.reason, cookies.SLOW_PATH_REASONS, ',')})"
        elif c.type == cookies.FLOW_SAMPLE:
            text += (
                f",flow_sample(probability={c.probability},"
                f"collector_set_id={c.collector_set_id},obs_domain_id={c.obs_domain_id},"
                f"obs_point_id={c.obs_point_id},output_port={_port(c.output, names)}"
            )
            if c.direction == cookies.SAMPLE_INGRESS:
                text += ",ingress"
            elif c.direction == cookies.SAMPLE_EGRESS:
                text += ",egress"
            text += ")"
        elif c.type == cookies.IPFIX:
            text += f",ipfix(output_port={_port(c.output, names)})"
        else:
            text += (
                f",controller(reason={c.reason},dont_send={int(bool(c.dont_send))},"
                f"continuation={int(bool(c.continuation))},recirc_id={c.recirc_id},"
                f"rule_cookie={fmt.cx(c.rule_cookie)},controller_id={c.controller_id},"
                f"max_len={c.max_len})"
            )
    if v.get("actions"):
        text += ",actions"
    if "egress_tun_port" in v:
        text += f",tunnel_out_port={_port(v['egress_tun_port'], names)}"
    return text + ")"


def _format_ct(v: Mapping[str, Any]) -> str:
    parts = []
    if v.get("commit"):
        parts.append("commit")
    if v.get("force_commit"):
        parts.append("force_commit")
    if v.get("zone"):
        parts.append(f"zone={v['zone']}")
    if "mark" in v:
        parts.append(f"mark={fmt.cx(v['mark'].value)}/{fmt.cx(v['mark'].mask)}")
    if "labels" in v:
        parts.append("label=" + format_u128(v["labels"].value, v["labels"].mask, True))
    if "helper" in v:
        parts.append(f"helper={v['helper']}")
    if "timeout" in v:
        parts.append(f"timeout={v['timeout']}")
    if "nat" in v:
        parts.append(_format_nat(v["nat"]))
    return "ct(" + ",".join(parts) + ")" if parts else "ct"


def _format_nat(nat: Mapping[str, Any]) -> str:
    src, dst = nat.get("src"), nat.get("dst")
    ip_min, ip_max = nat.get("ip_min"), nat.get("ip_max")
    proto_min, proto_max = nat.get("proto_min", 0), nat.get("proto_max", 0)
    options = (
        ip_min
        or ip_max
        or proto_min
        or proto_max
        or any(nat.get(k) for k in ("persistent", "proto_hash", "proto_random"))
    )
    if not (src or dst) and options:
        return 'nat(error: options allowed only with "src" or "dst")'
    if src and dst:
        return 'nat(error: Only one of "src" or "dst" may be present.)'
    if ip_min is None and proto_min:
        return "nat(error: proto but no IP.)"
    if (ip_min is None and ip_max is not None) or (not proto_min and proto_max):
        return "nat(error: range max without min.)"
    if ip_min is not None and (
        len(ip_min) not in (4, 16) or (ip_max is not None and len(ip_max) != len(ip_min))
    ):
        return "nat(error: IP address sizes do not match)"
    if (ip_max is not None and any(ip_max) and bytes(ip_min or b"") > bytes(ip_max)) or (
        proto_max and proto_min > proto_max
    ):
        return "nat(range error)"
    if not (src or dst):
        return "nat"
    text = "nat(" + ("src" if src else "dst")
    if ip_min is not None:
        text += "="
        if len(ip_min) == 4:
            text += fmt.ip4(int.from_bytes(ip_min, "big"))
            if ip_max is not None and any(ip_max) and ip_max != ip_min:
                text += "-" + fmt.ip4(int.from_bytes(ip_max, "big"))
        else:
            bracket = bool(proto_min)

            def addr(a: bytes) -> str:
                return f"[{fmt.ip6(a)}]" if bracket else fmt.ip6(a)

            text += addr(ip_min)
            if ip_max is not None and any(ip_max) and ip_max != ip_min:
                text += "-" + addr(ip_max)
        if proto_min:
            text += f":{proto_min}"
            if proto_max and proto_max != proto_min:
                text += f"-{proto_max}"
    flags = [
        word
        for attr, word in (
            ("persistent", "persistent"),
            ("proto_hash", "hash"),
            ("proto_random", "random"),
        )
        if nat.get(attr)
    ]
    return text + "".join("," + f for f in flags) + ")"


def _format_push_nsh(v: Mapping[str, Any]) -> str:
    base = v.get("base") or OvsNshKeyBase(0, 63, 0, 0, 0)
    text = (
        f"push_nsh(flags={base.flags},ttl={base.ttl},mdtype={base.mdtype},np={base.np},"
        f"spi=0x{base.path_hdr >> 8:x},si={base.path_hdr & 0xFF}"
    )
    if base.mdtype == NSH_M_TYPE1:
        md1 = v.get("md1") or OvsNshKeyMd1(0, 0, 0, 0)
        text += "".join(f",c{i + 1}=0x{c:x}" for i, c in enumerate(md1))
    elif base.mdtype == NSH_M_TYPE2:
        # all bytes, leading zeros included (OVS drops them, which its parser cannot undo)
        text += ",md2=0x" + bytes(v.get("md2", b"")).hex()
    else:
        text += ",<error: unknown mdtype>"
    return text + ")"


def _format_set_nsh(value: Mapping[str, Any]) -> str:
    base, mbase = OvsNshKeyBase(0, 0, 0, 0, 0), OvsNshKeyBase(0xFF, 0xFF, 0xFF, 0xFF, UINT32_MAX)
    ctx, mctx = (0, 0, 0, 0), (UINT32_MAX,) * 4
    if "base" in value:
        base, mbase = value["base"]
    if "md1" in value:
        md1, mmd1 = value["md1"]
        ctx, mctx = tuple(md1), tuple(mmd1)
    return format_nsh_masked(base, ctx, mbase, mctx)
