"""Action validation: the kernel's rules (flow_netlink.c) with their errno, and the feature probes
ovs-vswitchd runs at start-up (they must get the right yes / no)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from ovsdp.flowtable.actions import MAX_ACTIONS_SIZE, validate_actions
from ovsdp.netlink.codec import CODECS
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.structs import (
    OvsActionAddMpls,
    OvsActionHash,
    OvsActionPushMpls,
    OvsActionPushTnl,
    OvsActionPushVlan,
    OvsCtMark,
    OvsKeyArp,
    OvsKeyEthernet,
    OvsKeyIcmp,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyNdExtensions,
    OvsKeyPorts,
)

ETH = OvsKeyEthernet(b"\x02" * 6, b"\x04" * 6)
Z6, Z16 = b"\0" * 6, b"\0" * 16


def ipv4_key(proto: int = 6, frag: int = 0, l4: str | None = "tcp") -> dict[str, Any]:
    key: dict[str, Any] = {
        "in_port": 1,
        "ethernet": ETH,
        "ethertype": 0x0800,
        "ipv4": OvsKeyIpv4(0x0A000001, 0x0A000002, proto, 0, 64, frag),
    }
    if l4:
        key[l4] = OvsKeyPorts(1, 2)
    if l4 == "tcp":
        key["tcp_flags"] = 2
    return key


def ipv6_key(proto: int = 17) -> dict[str, Any]:
    return {
        "in_port": 1,
        "ethernet": ETH,
        "ethertype": 0x86DD,
        "ipv6": OvsKeyIpv6(Z16, Z16, 0, proto, 0, 64, 0),
        "udp": OvsKeyPorts(1, 2),
    }


def vlan_key(inner: dict[str, Any] | None = None) -> dict[str, Any]:
    inner = inner or {"ethertype": 0x0800, "ipv4": OvsKeyIpv4(1, 2, 17, 0, 64, 0),
                      "udp": OvsKeyPorts(1, 2)}  # fmt: skip
    return {"in_port": 1, "ethernet": ETH, "ethertype": 0x8100, "vlan": 0x1005, "encap": inner}


def mpls_key(labels: int = 1) -> dict[str, Any]:
    lses = tuple((i + 16) << 12 | (1 << 8 if i == labels - 1 else 0) | 64 for i in range(labels))
    return {"in_port": 1, "ethernet": ETH, "ethertype": 0x8847, "mpls": lses}


ARP_KEY = {"in_port": 1, "ethernet": ETH, "ethertype": 0x0806,
           "arp": OvsKeyArp(1, 2, 1, Z6, Z6)}  # fmt: skip
L3_KEY = {"in_port": 1, "ethertype": 0x0800, "ipv4": OvsKeyIpv4(1, 2, 17, 0, 64, 0),
          "udp": OvsKeyPorts(1, 2)}  # fmt: skip


def ok(actions: list[Any], key: dict[str, Any] | None = None, mask: Any = None) -> None:
    validate_actions(_wire(actions), key if key is not None else ipv4_key(), mask)


def fails(actions: list[Any], key: dict[str, Any] | None = None, mask: Any = None,
          code: int = errno.EINVAL, wire: bool = True) -> str:  # fmt: skip
    with pytest.raises(NetlinkError) as exc:
        validate_actions(_wire(actions) if wire else actions,
                         key if key is not None else ipv4_key(), mask)  # fmt: skip
    assert exc.value.errno == code, exc.value
    assert "\n" not in exc.value.reason
    return exc.value.reason


def _wire(actions: list[Any]) -> list[Any]:
    """The list as a client's netlink message would carry it (encode, decode)."""
    codec = CODECS["ovs_action"]
    return codec.decode(codec.encode(actions))


def ip4_set(**fields: int) -> tuple[str, Any]:
    base = {"src": 1, "dst": 2, "proto": 6, "tos": 0, "ttl": 64, "frag": 0}
    base.update(fields)
    return ("set", {"ipv4": OvsKeyIpv4(**base)})


def masked(name: str, value: Any, mask: Any) -> tuple[str, Any]:
    return ("set_masked", {name: (value, mask)})


# --- simple actions ---


def test_empty_and_plain_lists() -> None:
    ok([])
    ok(
        [
            ("output", 0),
            ("output", 65534),
            ("recirc", 0),
            ("recirc", 0xFFFFFFFF),
            ("ct_clear", True),
        ]
    )


def test_output_port_range() -> None:
    assert "65535" in fails([("output", 65535)])
    fails([("output", 0xFFFFFFFF)])


def test_userspace_needs_nonzero_pid() -> None:
    ok([("userspace", {"pid": 1, "userdata": b"x" * 40, "egress_tun_port": 3, "actions": True})])
    ok([("userspace", {"pid": 0xFFFFFFFF})])
    fails([("userspace", {"pid": 0})])
    fails([("userspace", {"userdata": b"abc"})])


def test_trunc_minimum() -> None:
    ok([("trunc", 14), ("output", 1)])
    fails([("trunc", 13)])
    fails([("trunc", 0)])


@pytest.mark.parametrize(("alg", "good"), [(0, True), (1, True), (2, False), (99, False)])
def test_hash_algorithms(alg: int, good: bool) -> None:
    actions = [("hash", OvsActionHash(alg, 7)), ("recirc", 1)]
    if good:
        ok(actions)
    else:
        fails(actions)


def test_drop_must_be_last() -> None:
    ok([("drop", 0)])
    ok([("output", 1), ("drop", 3)])
    assert "last" in fails([("drop", 0), ("output", 1)])
    ok([("clone", [("output", 1), ("drop", 0)]), ("output", 2)])
    fails([("clone", [("drop", 0), ("output", 1)])])


def test_unknown_and_userspace_datapath_only_types() -> None:
    fails([(0, b"")])
    assert "unknown action type 40" in fails([(40, b"\0\0\0\0")])
    for action in (("tunnel_pop", 3), ("lb_output", 1),
                   ("tunnel_push", OvsActionPushTnl(1, 2, 0, 0, b"\0" * 512))):  # fmt: skip
        assert "userspace datapath" in fails([action])


@pytest.mark.parametrize(
    "action",
    [
        ("ct", {"commit": True, "zone": 1}),
        ("meter", 1),
        ("push_eth", OvsKeyEthernet(Z6, Z6)),
        ("pop_eth", True),
        ("push_nsh", {}),
        ("pop_nsh", True),
        ("add_mpls", OvsActionAddMpls(1 << 12 | 1 << 8, 0x8847, 0)),
        ("psample", {"group": 1}),
    ],
    ids=lambda a: a[0] if isinstance(a, tuple) else None,
)
def test_unimplemented_actions_are_eopnotsupp(action: Any) -> None:
    reason = fails([action], code=errno.EOPNOTSUPP)
    assert "not implemented" in reason or "EOPNOTSUPP" in reason
    fails([("clone", [action])], code=errno.EOPNOTSUPP)


def test_ct_reason_text() -> None:
    reason = fails([("ct", {"commit": True})], code=errno.EOPNOTSUPP)
    assert "dpif-netlink's probes see a clear no" in reason


# --- VLAN ---


def test_push_vlan_rules() -> None:
    ok([("push_vlan", OvsActionPushVlan(0x8100, 0x1001)), ("output", 1)])
    ok([("push_vlan", OvsActionPushVlan(0x88A8, 0xF123))])
    fails([("push_vlan", OvsActionPushVlan(0x9100, 0x1001))])
    assert "0x1000" in fails([("push_vlan", OvsActionPushVlan(0x8100, 0x0001))])
    assert "Ethernet" in fails([("push_vlan", OvsActionPushVlan(0x8100, 0x1001))], L3_KEY)
    fails([("pop_vlan", True)], L3_KEY)
    ok([("pop_vlan", True)], vlan_key())


def test_set_ethernet_needs_ethernet() -> None:
    ok([("set", {"ethernet": ETH})])
    fails([("set", {"ethernet": ETH})], L3_KEY)


# --- MPLS and the current ethertype ---


def test_push_mpls_rules() -> None:
    push = ("push_mpls", OvsActionPushMpls(1 << 12 | 1 << 8 | 64, 0x8847))
    ok([push])
    ok([push], ipv6_key())
    ok([push], ARP_KEY)
    ok([push, ("push_mpls", OvsActionPushMpls(2 << 12 | 64, 0x8848))])
    fails([("push_mpls", OvsActionPushMpls(1 << 12, 0x0800))])
    assert "VLAN" in fails([push], vlan_key())
    ok([("pop_vlan", True), push], vlan_key())  # the tag is gone
    fails([push], {"in_port": 1, "ethernet": ETH, "ethertype": 0x88CC})


def test_pop_mpls_needs_mpls_and_tracks_the_label_count() -> None:
    ok([("pop_mpls", 0x0800)], mpls_key())
    assert "not MPLS" in fails([("pop_mpls", 0x0800)])
    # after the last label, the ethertype is unknown: no second pop, no set(ipv4)
    fails([("pop_mpls", 0x8847), ("pop_mpls", 0x0800)], mpls_key(1))
    ok([("pop_mpls", 0x8847), ("pop_mpls", 0x0800)], mpls_key(2))
    fails([("pop_mpls", 0x0800), ip4_set(proto=0, frag=0)], mpls_key())
    # push then pop on an IP flow
    push = ("push_mpls", OvsActionPushMpls(1 << 12 | 1 << 8 | 64, 0x8847))
    ok([push, ("pop_mpls", 0x0800)])
    fails([push, ("pop_mpls", 0x0800), ("pop_mpls", 0x0800)])
    fails([("pop_mpls", 0x6558)], mpls_key())  # TEB needs a packet without Ethernet


def test_set_mpls_needs_mpls() -> None:
    ok([("set", {"mpls": (16 << 12 | 1 << 8 | 5,)})], mpls_key())
    ok([masked("mpls", (0x40,), (0xFF,))], mpls_key())
    fails([("set", {"mpls": (1,)})])
    fails([masked("mpls", (0x140,), (0xFF,))], mpls_key())


def test_nested_lists_get_a_copy_of_the_state() -> None:
    push = ("push_mpls", OvsActionPushMpls(1 << 12 | 1 << 8 | 64, 0x8847))
    # MPLS pushed inside a clone does not make the outer packet MPLS
    ok([("clone", [push]), ip4_set()])
    fails([("clone", [push, ip4_set()])])
    # a nested list starts from the outer state at that point
    ok([push, ("clone", [("pop_mpls", 0x0800)])])
    ok([("pop_vlan", True), ("sample", {"probability": 5, "actions": [push]})], vlan_key())


# --- SET / SET_MASKED ---


def test_set_ipv4_needs_ipv4_and_the_flows_proto_and_frag() -> None:
    ok([ip4_set()])
    assert "proto" in fails([ip4_set(proto=17)])
    fails([ip4_set(frag=1)])
    ok([ip4_set(proto=17, frag=1)], ipv4_key(17, 1, "udp"))
    fails([ip4_set()], ipv6_key())
    fails([ip4_set(proto=0)], ARP_KEY)


def test_set_ipv4_checked_against_the_masked_key() -> None:
    key = ipv4_key()
    mask = {"in_port": 0xFFFFFFFF, "ethernet": OvsKeyEthernet(Z6, Z6), "ethertype": 0xFFFF,
            "ipv4": OvsKeyIpv4(0, 0, 0, 0, 0, 0)}  # fmt: skip
    # proto wildcarded: the masked key's proto is 0, so an unmasked set must say 0
    ok([ip4_set(proto=0)], key, mask)
    fails([ip4_set(proto=6)], key, mask)
    fails([("set", {"tcp": OvsKeyPorts(1, 2)})], key, mask)
    mask["ipv4"] = OvsKeyIpv4(0, 0, 0xFF, 0, 0, 0xFF)
    mask["tcp"] = OvsKeyPorts(0, 0)
    ok([ip4_set(proto=6)], key, mask)
    ok([("set", {"tcp": OvsKeyPorts(1, 2)})], key, mask)
    # a mask without the ipv4 attribute wildcards it all
    del mask["ipv4"]
    fails([("set", {"tcp": OvsKeyPorts(1, 2)})], key, mask)


def test_set_masked_ipv4_rules() -> None:
    ok([masked("ipv4", OvsKeyIpv4(0x0A000000, 0, 0, 0, 0, 0),
               OvsKeyIpv4(0xFF000000, 0, 0, 0, 0, 0))])  # fmt: skip
    assert "outside" in fails([masked("ipv4", OvsKeyIpv4(0x0A000001, 0, 0, 0, 0, 0),
                                      OvsKeyIpv4(0xFF000000, 0, 0, 0, 0, 0))])  # fmt: skip
    fails([masked("ipv4", OvsKeyIpv4(0, 0, 6, 0, 0, 0), OvsKeyIpv4(0, 0, 0xFF, 0, 0, 0))])
    fails([masked("ipv4", OvsKeyIpv4(0, 0, 0, 0, 0, 0), OvsKeyIpv4(0, 0, 0, 0, 0, 1))])
    fails([masked("ipv4", OvsKeyIpv4(0, 0, 0, 0, 0, 0), OvsKeyIpv4(1, 0, 0, 0, 0, 0))],
          ipv6_key())  # fmt: skip


def test_set_ipv6_rules() -> None:
    good = OvsKeyIpv6(Z16, Z16, 0xFFFFF, 17, 0, 64, 0)
    ok([("set", {"ipv6": good})], ipv6_key())
    fails([("set", {"ipv6": good._replace(proto=6)})], ipv6_key())
    fails([("set", {"ipv6": good._replace(frag=2)})], ipv6_key())
    assert "label" in fails([("set", {"ipv6": good._replace(label=0x100000)})], ipv6_key())
    fails([("set", {"ipv6": good})])
    lmask = OvsKeyIpv6(Z16, Z16, 0xFFFFF, 0, 0, 0, 0)
    ok([masked("ipv6", lmask._replace(label=0x12345), lmask)], ipv6_key())
    assert "20" in fails([masked("ipv6", lmask._replace(label=0),
                                 lmask._replace(label=0x1FFFFF))], ipv6_key())  # fmt: skip
    fails([masked("ipv6", lmask._replace(label=0, proto=0), lmask._replace(proto=0xFF))],
          ipv6_key())  # fmt: skip


@pytest.mark.parametrize(("l4", "proto"), [("tcp", 6), ("udp", 17), ("sctp", 132)])
def test_set_l4_ports_need_the_matching_proto(l4: str, proto: int) -> None:
    action = ("set", {l4: OvsKeyPorts(5, 6)})
    ok([action], ipv4_key(proto, 0, l4))
    other = 17 if proto != 17 else 6
    assert str(proto) in fails([action], ipv4_key(other, 0, None))
    v6 = ipv6_key(proto)
    ok([action], v6)
    fails([action], ARP_KEY)
    ok([masked(l4, OvsKeyPorts(0, 0x100), OvsKeyPorts(0, 0xFF00))], ipv4_key(proto, 0, l4))
    fails([masked(l4, OvsKeyPorts(0, 0x101), OvsKeyPorts(0, 0xFF00))], ipv4_key(proto, 0, l4))


def test_set_l4_ports_inside_vlan_encap() -> None:
    ok([("set", {"udp": OvsKeyPorts(5, 6)})], vlan_key())
    fails([("set", {"tcp": OvsKeyPorts(5, 6)})], vlan_key())


def test_set_metadata_and_tunnel() -> None:
    ok([("set", {"priority": 5}), ("set", {"skb_mark": 7}), masked("skb_mark", 0x10, 0xF0)])
    fails([masked("priority", 0x11, 0xF0)])
    tun = {"id": 7, "ipv4_dst": 0x0A000002, "ttl": 64}
    ok([("set", {"tunnel": tun}), ("output", 2)])
    ok([("set", {"tunnel": {"ipv6_dst": b"\x20" + b"\0" * 14 + b"\1", "ttl": 1}})])
    assert "TTL" in fails([("set", {"tunnel": {"id": 7, "ipv4_dst": 1}})])
    fails([("set", {"tunnel": {"id": 7, "ttl": 64}})])
    fails([("set", {"tunnel": {"ipv4_dst": 0, "ttl": 64}})])
    fails([("set", {"tunnel": {"ipv4_dst": 1, "ipv6_src": Z16, "ttl": 64}})])
    fails([("set", {"tunnel": {**tun, "geneve_opts": b"\0\1\2"}})])
    ok([("set", {"tunnel": {**tun, "geneve_opts": b"\x01\x02\x03\x01abcd"}})])
    fails([("set", {"tunnel": {**tun, "geneve_opts": b"\x01\x02\x03\x02abcd"}})])
    fails([("set", {"tunnel": {**tun, "geneve_opts": b"", "vxlan_opts": {"gbp": 1}}})])
    assert "masked" in fails([("set_masked", {"tunnel": {"id": (1, 0xFF)}})])


@pytest.mark.parametrize(
    ("attr", "value", "code"),
    [
        ("vlan", 0x1001, errno.EINVAL),
        ("ethertype", 0x0800, errno.EINVAL),
        ("icmp", OvsKeyIcmp(8, 0), errno.EINVAL),
        ("arp", OvsKeyArp(1, 2, 1, Z6, Z6), errno.EINVAL),
        ("in_port", 3, errno.EINVAL),
        ("recirc_id", 3, errno.EINVAL),
        ("dp_hash", 3, errno.EINVAL),
        ("ct_state", 1, errno.EINVAL),
        ("nd_extensions", OvsKeyNdExtensions(0, 0), errno.EINVAL),
        ("ct_mark", 3, errno.EOPNOTSUPP),
        ("ct_labels", b"\1" * 16, errno.EOPNOTSUPP),
        ("nsh", {}, errno.EOPNOTSUPP),
    ],
)
def test_not_settable_keys(attr: str, value: Any, code: int) -> None:
    fails([("set", {attr: value})], code=code)


def test_set_needs_exactly_one_attribute() -> None:
    fails([("set", {})])
    fails([("set", {"priority": 1, "skb_mark": 2})])
    fails([("set", {60: b"\0\0\0\0"})])


# --- nested lists, depth, size ---


def _nest(kind: str, depth: int, inner: list[Any] | None = None) -> list[Any]:
    actions: list[Any] = inner if inner is not None else [("output", 1)]
    for _ in range(depth):
        if kind == "sample":
            actions = [("sample", {"probability": 0xFFFFFFFF, "actions": actions})]
        elif kind == "clone":
            actions = [("clone", actions)]
        elif kind == "dec_ttl":
            actions = [("dec_ttl", {"action": actions})]
        else:
            actions = [("check_pkt_len", {"pkt_len": 100, "actions_if_greater": actions,
                                          "actions_if_less_equal": []})]  # fmt: skip
    return actions


@pytest.mark.parametrize("kind", ["sample", "clone", "dec_ttl", "check_pkt_len"])
def test_nesting_depth_limit(kind: str) -> None:
    # built directly: ovsdp's netlink decoder caps attribute nesting at 32 levels, which a
    # 16-deep sample/dec_ttl/check_pkt_len list (two nests per level) exceeds inside a message
    validate_actions(_nest(kind, 16), ipv4_key())
    validate_actions(_nest(kind, 16, []), ipv4_key())
    reason = fails(_nest(kind, 17), code=errno.EOVERFLOW, wire=False)
    assert "16" in reason
    fails(_nest(kind, 17, []), code=errno.EOVERFLOW, wire=False)


def test_mixed_nesting_counts_every_level() -> None:
    mixed = _nest("sample", 6, _nest("clone", 6, _nest("dec_ttl", 4)))
    validate_actions(mixed, ipv4_key())
    fails(_nest("check_pkt_len", 1, mixed), code=errno.EOVERFLOW, wire=False)
    validate_actions(mixed, ipv4_key(), max_depth=16)
    with pytest.raises(NetlinkError) as exc:
        validate_actions(mixed, ipv4_key(), max_depth=10)
    assert exc.value.errno == errno.EOVERFLOW


def test_nested_errors_propagate() -> None:
    fails([("sample", {"probability": 1, "actions": [("output", 70000)]})])
    fails([("check_pkt_len", {"pkt_len": 10, "actions_if_greater": [("trunc", 1)],
                              "actions_if_less_equal": []})])  # fmt: skip
    fails([("dec_ttl", {"action": [("hash", OvsActionHash(3, 0))]})])


def test_sample_and_check_pkt_len_and_dec_ttl_parts() -> None:
    fails([("sample", {"probability": 5})])
    fails([("sample", {"actions": []})])
    fails([("sample", {"probability": 5, "actions": [], 9: b""})])
    ok([("check_pkt_len", {"pkt_len": 1500, "actions_if_greater": [],
                           "actions_if_less_equal": [("output", 1)]})])  # fmt: skip
    for missing in ("pkt_len", "actions_if_greater", "actions_if_less_equal"):
        value = {"pkt_len": 1500, "actions_if_greater": [], "actions_if_less_equal": []}
        del value[missing]
        fails([("check_pkt_len", value)])
    fails([("check_pkt_len", {"pkt_len": 0, "actions_if_greater": [],
                              "actions_if_less_equal": []})])  # fmt: skip
    fails([("dec_ttl", {})])
    ok([("dec_ttl", {"action": []})])
    ok([("dec_ttl", {"action": [], 7: b"\0\0\0\0"})])  # unknown dec_ttl attributes are ignored


def test_encoded_size_limit() -> None:
    per_output = 8
    n_ok = MAX_ACTIONS_SIZE // per_output
    ok([("output", 1)] * n_ok)
    assert "exceed" in fails([("output", 1)] * (n_ok + 1), code=errno.EMSGSIZE)
    validate_actions([("output", 1)] * (n_ok + 1), ipv4_key(), max_size=None)


def test_malformed_values_are_einval() -> None:
    with pytest.raises(NetlinkError) as exc:
        validate_actions([("push_vlan", 5)], ipv4_key(), max_size=None)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(NetlinkError):
        validate_actions("output", ipv4_key())  # type: ignore[arg-type]
    with pytest.raises(NetlinkError):
        validate_actions([], "key")  # type: ignore[arg-type]


# --- the probes ovs-vswitchd runs (ofproto-dpif.c check_* functions) ---


def probe_key() -> dict[str, Any]:
    """A key like the one EXECUTE extracts from a probe's packet (exact, no mask)."""
    return {"priority": 0, "in_port": 0, "skb_mark": 0, "ethernet": ETH, "ethertype": 0x1234}


def test_probe_masked_set() -> None:
    key, mask = OvsKeyEthernet(b"\x53" * 6, b"\x53" * 6), OvsKeyEthernet(b"\x7f" * 6, b"\x7f" * 6)
    ok([("set_masked", {"ethernet": (key, mask)})], probe_key())


def test_probe_trunc_clone_sample_nesting() -> None:
    ok([("trunc", 100)], probe_key())
    ok([("clone", [])], probe_key())
    ok([("clone", [("output", 1)])], probe_key())
    for depth in range(1, 11):  # MAX_SAMPLE_NESTING in ofproto-dpif is 10
        ok(_nest("sample", depth, []), probe_key())


def test_probe_ct_features_say_no() -> None:
    fails([("ct", {"eventmask": 0xFFFF})], probe_key(), code=errno.EOPNOTSUPP)
    fails([("ct", {"timeout": "ovs_tp_1_tcp4"})], probe_key(), code=errno.EOPNOTSUPP)
    fails([("ct", {"commit": True, "mark": OvsCtMark(1, 1)})], probe_key(), code=errno.EOPNOTSUPP)
    ok([("ct_clear", True)], probe_key())


def test_probe_explicit_drop_check_pkt_len_hash_add_mpls_psample() -> None:
    ok([("drop", 0)], probe_key())
    ok([("check_pkt_len", {"pkt_len": 100, "actions_if_greater": [],
                           "actions_if_less_equal": []})], probe_key())  # fmt: skip
    supported = []
    for alg in range(4):  # the max dp_hash algorithm probe stops at the first failure
        try:
            validate_actions([("hash", OvsActionHash(alg, 0))], probe_key())
        except NetlinkError as exc:
            assert exc.errno == errno.EINVAL
            break
        supported.append(alg)
    assert supported == [0, 1]
    fails([("add_mpls", OvsActionAddMpls(16 << 12 | 1 << 8, 0x8847, 1))], ipv4_key(),
          code=errno.EOPNOTSUPP)  # fmt: skip
    fails([("psample", {"group": 1, "cookie": b"c" * 8})], probe_key(), code=errno.EOPNOTSUPP)
