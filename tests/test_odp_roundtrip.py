"""userspace.odp round trips: text -> attributes -> netlink bytes (the ovsdp codec) -> attributes
-> text, OVS's own Python flow parser (ovs.flow.odp) as a second reader of everything we print,
UFIDs, port names, errors, and property tests of key text round trips."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

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
from userspace.odp import (
    Fitness,
    OdpParseError,
    exact_mask,
    format_actions,
    format_key,
    format_ufid,
    normalize_key,
    parse_actions,
    parse_key,
    parse_ufid,
)

VECTORS = Path(os.environ.get("OVSDP_ODP_VECTORS", Path(__file__).parent / "vectors"))
KEY_CODEC = CODECS["ovs_key"]
ACTION_CODEC = CODECS["ovs_action"]


def _lines(name: str) -> list[str]:
    path = VECTORS / name
    if not path.exists():
        raise FileNotFoundError(f"ODP vector file {path} is missing (set OVSDP_ODP_VECTORS)")
    return path.read_text().splitlines()


EXACT = _lines("odp-keys-exact.txt")
EXACT_EXPECTED = [
    line.split(": ", 1)[1] if line.startswith("ODP_FIT_") else line
    for line in _lines("odp-keys-exact.expected.txt")
]
WILDCARDED = _lines("odp-keys-wildcarded.txt")
ACTIONS = _lines("odp-actions.txt")

# Attributes the Linux datapath knows (the rest exist only in OVS's userspace datapath).
USERSPACE_ONLY_KEYS = {"packet_type", "nd_extensions"}
USERSPACE_ONLY_TUNNEL = {"gtpu_opts"}  # attribute 16 with 2 bytes; the kernel's 16 is a flag
USERSPACE_ONLY_ACTIONS = {"tunnel_push", "tunnel_pop", "lb_output"}


def _kernel_key(key: dict[Any, Any]) -> bool:
    for name, value in key.items():
        if name in USERSPACE_ONLY_KEYS:
            return False
        if name == "tunnel" and USERSPACE_ONLY_TUNNEL & set(value):
            return False
        if name == "encap" and not _kernel_key(value):
            return False
    return True


def _kernel_actions(actions: list[Any]) -> bool:
    for name, value in actions:
        if name in USERSPACE_ONLY_ACTIONS:
            return False
        if name == "clone" and not _kernel_actions(value):
            return False
        if name == "sample" and not _kernel_actions(value.get("actions", [])):
            return False
        if name == "check_pkt_len" and not (
            _kernel_actions(value["actions_if_greater"])
            and _kernel_actions(value["actions_if_less_equal"])
        ):
            return False
        if name == "dec_ttl" and not _kernel_actions(value["action"]):
            return False
    return True


def _through_bytes(key: dict[Any, Any]) -> dict[Any, Any]:
    decoded: dict[Any, Any] = KEY_CODEC.decode(KEY_CODEC.encode(key))
    return decoded


# --- keys and masks through the codec -------------------------------------------------------------

KERNEL_EXACT = [i for i, line in enumerate(EXACT) if _kernel_key(parse_key(line)[0])]
OTHER_EXACT = [i for i in range(len(EXACT)) if i not in KERNEL_EXACT]


def test_kernel_subset_sizes() -> None:
    # the 11 nd_ext lines are the only exact vectors with userspace-only attributes
    assert len(KERNEL_EXACT) == 257 and len(OTHER_EXACT) == 11


@pytest.mark.parametrize("index", KERNEL_EXACT)
def test_exact_kernel_key_through_netlink_bytes(index: int) -> None:
    key, mask = parse_key(EXACT[index])
    key2, mask2 = _through_bytes(key), _through_bytes(mask)
    assert key2 == key and mask2 == mask
    assert format_key(key2, None, verbose=True) == EXACT[index]
    # and the canonical (OVS-normalized) key formats the same from bytes as from text
    fitness, canonical = normalize_key(key2)
    prefix = "" if fitness is Fitness.PERFECT else f"{fitness.value}: "
    assert (
        prefix + format_key(_through_bytes(canonical), None, True)
        == (_lines("odp-keys-exact.expected.txt")[index])
    )


@pytest.mark.parametrize("index", OTHER_EXACT)
def test_exact_userspace_key_through_netlink_bytes(index: int) -> None:
    # nd_ext (userspace-only) is declared by the codec too, so these survive as well
    key, mask = parse_key(EXACT[index])
    assert _through_bytes(key) == key and _through_bytes(mask) == mask
    assert format_key(_through_bytes(key), None, verbose=True) == EXACT[index]


@pytest.mark.parametrize("index", range(len(WILDCARDED)))
def test_wildcarded_key_and_mask_through_netlink_bytes(index: int) -> None:
    key, mask = parse_key(WILDCARDED[index])
    assert _kernel_key(key)
    key2, mask2 = _through_bytes(key), _through_bytes(mask)
    assert key2 == key and mask2 == mask
    assert format_key(key2, mask2) == WILDCARDED[index]


# --- actions through the codec --------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(ACTIONS)))
def test_actions_through_netlink_bytes(index: int) -> None:
    actions = parse_actions(ACTIONS[index])
    decoded = ACTION_CODEC.decode(ACTION_CODEC.encode(actions))
    assert decoded == actions
    assert format_actions(decoded) == ACTIONS[index]


TNL_PUSH = [line for line in ACTIONS if line.startswith("tnl_push(")]


@pytest.mark.parametrize("index", range(len(TNL_PUSH)))
def test_tnl_push_bytes_are_what_ovs_sends(index: int) -> None:
    # odp_put_tnl_push_action sends offsetof(struct ovs_action_push_tnl, header) + header_len
    # bytes: tnl_port, out_port, header_len, tnl_type (u32, host order), then the header
    line = TNL_PUSH[index]
    ((name, push),) = parse_actions(line)
    raw = ACTION_CODEC.encode([(name, push)])
    alen, atype = struct.unpack_from("=HH", raw)
    assert (atype, alen) == (26, 4 + 16 + push.header_len)
    prefix = struct.pack("<IIII", push.tnl_port, push.out_port, push.header_len, push.tnl_type)
    assert raw[4:alen] == prefix + push.header
    # bytes put together the way OVS does it read back to the same text
    ovs = struct.pack("=HH", alen, 26) + prefix + push.header + bytes(-alen & 3)
    assert format_actions(ACTION_CODEC.decode(ovs)) == line


def test_tnl_push_vectors_count() -> None:
    assert len(TNL_PUSH) == 14


GTPU_KEYS = [
    "tunnel(tun_id=0x7f10354,dst=10.10.10.10,ttl=64,gtpu(flags=0x30,msgtype=255),"
    "flags(csum|key)),in_port(1)",
    "tunnel(dst=1.1.1.1,ttl=64,gtpu(flags=0x30/0xf0,msgtype=255),flags(-df-csum)),in_port(1)",
]


@pytest.mark.parametrize("text", GTPU_KEYS)
def test_gtpu_tunnel_key_through_netlink_bytes(text: str) -> None:
    key, mask = parse_key(text)
    assert format_key(key, mask) == text
    gtpu = key["tunnel"]["gtpu_opts"]
    assert type(gtpu) is GtpuMetadata and gtpu == (0x30, 255)
    assert not _kernel_key(key)  # userspace-only: attribute 16 with a payload
    raw = KEY_CODEC.encode(key)
    # attribute 16 of the tunnel nest carries 2 bytes: flags, msgtype
    assert struct.pack("=HH", 6, 16) + bytes([0x30, 255]) in raw
    key2, mask2 = _through_bytes(key), _through_bytes(mask)
    assert key2 == key and mask2 == mask
    assert format_key(key2, mask2) == text


def test_action_vectors_kernel_split() -> None:
    kernel = [line for line in ACTIONS if _kernel_actions(parse_actions(line))]
    assert len(ACTIONS) - len(kernel) == 16  # 14 tnl_push, tnl_pop, lb_output


# --- OVS's Python parser reads everything we print ------------------------------------------------


def _ovs_flow(line: str) -> Any:
    odp = pytest.importorskip("ovs.flow.odp", reason="the ovs package is a test dependency")
    return odp.ODPFlow(line)


@pytest.mark.parametrize("text", EXACT_EXPECTED + WILDCARDED)
def test_ovs_python_parser_reads_formatted_keys(text: str) -> None:
    key, _mask = parse_key(text)
    flow = _ovs_flow(f"{text}, packets:0, bytes:0, used:never, actions:1")
    names = [kv.key for kv in flow.match_kv]
    ours = [format_key({name: value}, None, True).split("(", 1)[0] for name, value in key.items()]
    assert names == ours
    assert [kv.key for kv in flow.actions_kv] == ["output"]


@pytest.mark.parametrize("text", ACTIONS)
def test_ovs_python_parser_reads_formatted_actions(text: str) -> None:
    actions = parse_actions(text)
    ufid = format_ufid(bytes(range(16)))
    line = (
        f"{ufid}, recirc_id(0),in_port(1),eth(),eth_type(0x0800), packets:0, bytes:0, "
        f"used:never, actions:{format_actions(actions)}"
    )
    flow = _ovs_flow(line)
    assert len(flow.actions_kv) == len(actions)
    assert flow.ufid == {"ufid": ufid[5:]}


# --- UFIDs ----------------------------------------------------------------------------------------


def test_ufid_words_are_host_order() -> None:
    raw = (
        (0x12345678).to_bytes(4, "little")
        + (0x9ABCDEF0).to_bytes(4, "little")
        + (0x11223344).to_bytes(4, "little")
        + (0x55667788).to_bytes(4, "little")
    )
    assert format_ufid(raw) == "ufid:12345678-9abc-def0-1122-334455667788"
    assert parse_ufid("ufid:12345678-9abc-def0-1122-334455667788") == raw
    assert parse_ufid("12345678-9abc-def0-1122-334455667788") == raw


@given(st.binary(min_size=16, max_size=16))
def test_ufid_round_trip(raw: bytes) -> None:
    assert parse_ufid(format_ufid(raw)) == raw


def test_bad_ufid() -> None:
    with pytest.raises(OdpParseError, match="invalid UFID"):
        parse_ufid("ufid:1234")
    with pytest.raises(OdpParseError):
        format_ufid(b"\0" * 15)


def test_key_text_may_start_with_a_ufid() -> None:
    key, _ = parse_key("ufid:12345678-9abc-def0-1122-334455667788, in_port(1)")
    assert key == {"in_port": 1}


# --- port names, drop, set vs masked set ----------------------------------------------------------


def test_port_names() -> None:
    names = {"eth0": 3, "vxlan_sys_4789": 4}
    key, mask = parse_key("in_port(eth0),eth_type(0x0800)", names)
    assert key["in_port"] == 3 and mask["in_port"] == 0xFFFFFFFF
    assert format_key(key, mask, port_names=names) == "in_port(eth0),eth_type(0x0800)"
    actions = parse_actions("eth0,clone(tnl_pop(vxlan_sys_4789),2)", names)
    assert actions == [("output", 3), ("clone", [("tunnel_pop", 4), ("output", 2)])]
    assert format_actions(actions, names) == "eth0,clone(tnl_pop(vxlan_sys_4789),2)"
    with pytest.raises(OdpParseError, match="unknown port name 'eth9'"):
        parse_key("in_port(eth9)", names)


def test_drop() -> None:
    assert parse_actions("drop") == [("drop", 0)]
    assert format_actions([("drop", 0)]) == "drop"
    assert format_actions([]) == "drop"
    assert parse_actions("check_pkt_len(size=200,gt(drop),le(5))")[0][1]["actions_if_greater"] == []


def test_set_versus_masked_set() -> None:
    ((name, value),) = parse_actions(
        "set(ipv4(src=1.2.3.4,dst=5.6.7.8,proto=6,tos=0,ttl=9,frag=no))"
    )
    assert name == "set" and value["ipv4"].ttl == 9
    ((name, value),) = parse_actions("set(ipv4(ttl=9))")
    assert name == "set_masked"
    v, m = value["ipv4"]
    assert (v.ttl, m.ttl, m.src) == (9, 0xFF, 0)
    # a tunnel key is always set unmasked (the kernel has no masked tunnel set)
    ((name, _),) = parse_actions("set(tunnel(tun_id=0x1,dst=1.1.1.1,ttl=64,flags(key)))")
    assert name == "set"


def test_userdata_size_limits() -> None:
    # as in odp.at: the userspace nest must fit a netlink attribute (65535 bytes)
    ok = parse_actions(f"userspace(pid=1234567,userdata({'aa' * 65512}),actions)")
    assert len(ok[0][1]["userdata"]) == 65512
    with pytest.raises(OdpParseError, match="cannot be encoded"):
        parse_actions(f"userspace(pid=1234567,userdata({'aa' * 65513}),actions)")
    parse_actions(f"userspace(pid=1234567,userdata({'aa' * 65508}),tunnel_out_port=10)")
    with pytest.raises(OdpParseError, match="cannot be encoded"):
        parse_actions(f"userspace(pid=1234567,userdata({'aa' * 65509}),tunnel_out_port=10)")


def test_short_userdata_is_padded_to_8_bytes() -> None:
    ((_, value),) = parse_actions("userspace(pid=1,userdata(0102))")
    assert value["userdata"] == bytes.fromhex("0102000000000000")


# --- errors say what and where --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("in_port(1),bogus(2)", "unknown key attribute 'bogus'"),
        ("in_port(1),in_port(2)", "duplicate 'in_port' attribute"),
        ("eth_type(0x12345)", "does not fit in 16 bits"),
        ("ipv4(src=1.2.3.400)", "IPv4 address octet out of range"),
        ("ipv6(src=1::2::3)", "invalid IPv6 address"),
        ("ipv4(frag=maybe)", "unknown frag type 'maybe'"),
        ("ipv4(bogus=1)", "unknown field 'bogus' in ipv4"),
        ("recirc_id(1/0xff)", "expected ')'"),
        ("tcp(src=1", "expected ')'"),
        ("ct_state(+trk+trk)", "each ct_state flag can be given only once"),
        ("tcp_flags(syn|bogus)", "unknown tcp_flags flag"),
        ("mpls(label=1,label=2,label=3,label=4)", "more than 3 MPLS labels"),
        ("tunnel(erspan(ver=3))", "erspan needs ver=1 or ver=2"),
        ("encap(" * 32 + ")" * 32, "nested deeper than 31 levels"),
    ],
)
def test_key_errors(text: str, reason: str) -> None:
    with pytest.raises(OdpParseError) as info:
        parse_key(text)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.pos is not None


def test_31_nested_encaps_are_fine_33_are_not() -> None:
    key, _ = parse_key("encap(" * 31 + ")" * 31)
    depth = 0
    while key:
        key = key["encap"]
        depth += 1
    assert depth == 31
    with pytest.raises(OdpParseError):
        parse_key("encap(" * 33 + ")" * 33)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1,bogus", "unknown action 'bogus'"),
        ("push_vlan(vid=5000,pcp=0)", "vid 5000 does not fit in 12 bits"),
        ("ct(commit,force_commit)", "commit or force_commit, not both"),
        ("ct(nat(src=1.1.1.1,dst))", "nat takes src or dst, not both"),
        ("ct(nat(src=10.0.0.9-10.0.0.1))", "address range max below min"),
        ("sample(sample=101%,actions(1))", "not within 0-100"),
        ("clone(1", "unterminated clone("),
        ("userspace(pid=1,slow_path(bogus))", "unknown slow_path flag"),
        ("set(encap())", "not an action"),
        ("clone(" * 32 + "1" + ")" * 32, "nested deeper than 31 levels"),
    ],
)
def test_action_errors(text: str, reason: str) -> None:
    with pytest.raises(OdpParseError) as info:
        parse_actions(text)
    assert reason in str(info.value)


def test_ct_tuple6_reads_both_port_spellings() -> None:
    # OVS prints src_port/dst_port but its own parser only reads tp_src/tp_dst
    a, _ = parse_key("ct_tuple6(src=::1,dst=::2,proto=6,tp_src=1,tp_dst=2)")
    b, _ = parse_key("ct_tuple6(src=::1,dst=::2,proto=6,src_port=1,dst_port=2)")
    assert a == b
    assert format_key(a, None, True) == "ct_tuple6(src=::1,dst=::2,proto=6,src_port=1,dst_port=2)"


def test_verbose_prints_wildcards_as_zero_masks() -> None:
    key, mask = parse_key("skb_mark(0x5/0),in_port(1),ipv4(src=1.2.3.4)")
    assert format_key(key, mask) == "in_port(1),ipv4(src=1.2.3.4)"
    assert format_key(key, mask, verbose=True) == (
        "skb_mark(0x5/0),in_port(1),ipv4(src=1.2.3.4,dst=0.0.0.0/0.0.0.0,proto=0/0,tos=0/0,ttl=0/0)"
    )


def test_all_wildcarded_ethernet_still_prints() -> None:
    key, mask = parse_key("in_port(1),eth(),eth_type(0x0800)")
    assert format_key(key, mask) == "in_port(1),eth(),eth_type(0x0800)"


def test_exact_mask_matches_what_the_parser_makes() -> None:
    for line in EXACT + [line for line in WILDCARDED if "/" not in line]:
        key, mask = parse_key(line)
        assert exact_mask(key) == mask, line


# --- property tests: any key survives text and bytes ----------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
mac = st.binary(min_size=6, max_size=6)
in6 = st.binary(min_size=16, max_size=16)
frag = st.integers(0, 2)


@st.composite
def geneve_options(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        words = draw(st.integers(0, 4))
        out += (
            draw(u16).to_bytes(2, "big")
            + bytes([draw(u8), words])
            + draw(st.binary(min_size=4 * words, max_size=4 * words))
        )
    return out


erspan = st.one_of(
    st.builds(ErspanMetadata, version=st.just(1), word1=u32, sgt=st.just(0), bits=st.just(0)),
    st.builds(
        lambda hwid, d: ErspanMetadata(version=2, word1=0, sgt=0, bits=(hwid << 4) | (d << 3)),
        st.integers(0, 15),
        st.integers(0, 1),
    ),
)
tunnels = st.fixed_dictionaries(
    {"ttl": u8},
    optional={
        "id": st.integers(0, 2**64 - 1),
        "ipv4_src": u32,
        "ipv4_dst": u32,
        "ipv6_src": in6,
        "ipv6_dst": in6,
        "tos": u8,
        "tp_src": u16,
        "tp_dst": u16,
        "dont_fragment": st.just(True),
        "csum": st.just(True),
        "oam": st.just(True),
        "vxlan_opts": st.builds(lambda g: {"gbp": g}, st.integers(1, 0xFFFFFF)),
        "geneve_opts": geneve_options(),
        "erspan_opts": erspan,
    },
)
nsh = st.one_of(
    st.builds(
        lambda b, m: {"base": b._replace(mdtype=1), "md1": m},
        st.builds(OvsNshKeyBase, u8, u8, u8, u8, u32),
        st.builds(OvsNshKeyMd1, u32, u32, u32, u32),
    ),
    st.builds(
        lambda b: {"base": b},
        st.builds(OvsNshKeyBase, u8, u8, u8.filter(lambda x: x != 1), u8, u32),
    ),
)
FLAT_ATTRS: dict[Any, st.SearchStrategy[Any]] = {
    "recirc_id": u32,
    "dp_hash": u32,
    "priority": u32,
    "tunnel": tunnels,
    "in_port": u32,
    "skb_mark": u32,
    "ct_state": u8,
    "ct_zone": u16,
    "ct_mark": u32,
    "ct_labels": in6,
    "ct_orig_tuple_ipv4": st.builds(OvsKeyCtTupleIpv4, u32, u32, u16, u16, u8),
    "ct_orig_tuple_ipv6": st.builds(OvsKeyCtTupleIpv6, in6, in6, u16, u16, u8),
    "packet_type": u32,
    "ethernet": st.builds(OvsKeyEthernet, mac, mac),
    "vlan": u16,
    "ethertype": u16,
    "mpls": st.lists(u32, min_size=1, max_size=3).map(tuple),
    "ipv4": st.builds(OvsKeyIpv4, u32, u32, u8, u8, u8, frag),
    "ipv6": st.builds(OvsKeyIpv6, in6, in6, st.integers(0, 0xFFFFF), u8, u8, u8, frag),
    "tcp": st.builds(OvsKeyPorts, u16, u16),
    "tcp_flags": st.integers(0, 0x0FFF),
    "udp": st.builds(OvsKeyPorts, u16, u16),
    "sctp": st.builds(OvsKeyPorts, u16, u16),
    "icmp": st.builds(OvsKeyIcmp, u8, u8),
    "icmpv6": st.builds(OvsKeyIcmp, u8, u8),
    "arp": st.builds(OvsKeyArp, u32, u32, u16, mac, mac),
    "nd": st.builds(OvsKeyNd, in6, mac, mac),
    "nd_extensions": st.builds(OvsKeyNdExtensions, u32, u8),
    "nsh": nsh,
    "ipv6_exthdrs": u16,
    40: st.binary(max_size=8),
}
flat_keys = st.fixed_dictionaries({}, optional=FLAT_ATTRS)
keys = st.builds(
    lambda outer, inner: {**outer, "encap": inner} if inner is not None else outer,
    flat_keys,
    st.none() | flat_keys,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys)
def test_any_key_survives_text_and_bytes(key: dict[Any, Any]) -> None:
    text = format_key(key, None, verbose=True)
    parsed, mask = parse_key(text)
    assert parsed == key, text
    assert mask == exact_mask(key)
    assert _through_bytes(parsed) == key
    assert format_key(_through_bytes(parsed), None, True) == text
