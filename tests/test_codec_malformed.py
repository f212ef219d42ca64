"""The malformed-input corpus of the netlink codec.

Every case builds its bytes by hand (struct.pack, numbers from the protocol reference, not from
ovsdp's schema) and asserts the errno, and the offset where one is meaningful.  ``pytest.raises
(NetlinkError)`` also proves no IndexError, struct.error or construct error escapes.

Offsets are relative to the record (the pseudo-device subtracts the message's own offset before
it puts one in NLMSGERR_ATTR_OFFS); in a one-message record they are offsets in the message.
Then hypothesis feeds random and mutated records to ``decode_record``: nothing but NetlinkError
may come out, and the construct interpreter must agree with the fast decoder on every mutant.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ovsdp.netlink.codec import CODECS, MAX_NEST_DEPTH
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.families import (
    NLCTRL,
    OVS_CT_LIMIT,
    OVS_DATAPATH,
    OVS_FLOW,
    OVS_METER,
    OVS_PACKET,
    OVS_VPORT,
)
from ovsdp.netlink.message import (
    GenlMessage,
    decode_record,
    encode_genl,
    encode_noop,
    pad_message,
)
from ovsdp.netlink.nla import SPACES
from ovsdp.netlink.structs import (
    GtpuMetadata,
    OvsActionPushTnl,
    OvsActionPushVlan,
    OvsCtMark,
    OvsDpStats,
    OvsKeyEthernet,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyPorts,
    OvsZoneLimit,
)

CTRL_ID, DP_ID, VPORT_ID, FLOW_ID, PACKET_ID, METER_ID, CT_LIMIT_ID = range(0x10, 0x17)
FAMILIES = {
    CTRL_ID: NLCTRL,
    DP_ID: OVS_DATAPATH,
    VPORT_ID: OVS_VPORT,
    FLOW_ID: OVS_FLOW,
    PACKET_ID: OVS_PACKET,
    METER_ID: OVS_METER,
    CT_LIMIT_ID: OVS_CT_LIMIT,
}

# attribute numbers, from the reference
DP_NAME, DP_STATS, DP_PER_CPU_PIDS = 1, 3, 8
VPORT_UPCALL_PID = 5
FLOW_KEY, FLOW_ACTIONS, FLOW_PROBE, FLOW_UFID = 1, 2, 8, 9
KEY_ENCAP, KEY_PRIORITY, KEY_IN_PORT, KEY_ETHERNET, KEY_ARP = 1, 2, 3, 4, 13
KEY_TUNNEL, KEY_MPLS = 16, 21
TUNNEL_ID, TUNNEL_TTL = 0, 4
TUNNEL_16 = 16  # kernel: IPV4_INFO_BRIDGE (flag); OVS userspace: GTPU_OPTS (flags u8, msgtype u8)
ACTION_OUTPUT, ACTION_SET, ACTION_SET_MASKED, ACTION_CLONE = 1, 3, 11, 20
ACTION_TUNNEL_PUSH = 26  # struct ovs_action_push_tnl: 16-byte prefix + header_len header bytes
CT_LIMIT_ZONE_LIMIT = 1
FIRST_ATTR = 24  # nlmsghdr 16 + genlmsghdr 4 + ovs_header 4


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def attr(atype: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """One attribute; ``length`` overrides nla_len (the bytes present stay ``payload``)."""
    alen = 4 + len(payload) if length is None else length
    return struct.pack("=HH", alen, atype) + payload + b"\0" * (-len(payload) & 3)


def nest(atype: int, *children: bytes) -> bytes:
    return attr(atype, b"".join(children))


def genl(
    family_id: int,
    attrs: bytes = b"",
    *,
    length: int | None = None,
    ovs_header: bool = True,
    cmd: int = 1,
) -> bytes:
    body = struct.pack("=BBH", cmd, 1, 0) + (struct.pack("=i", 3) if ovs_header else b"") + attrs
    nlmsg_len = 16 + len(body) if length is None else length
    return struct.pack("=IHHII", nlmsg_len, family_id, 1, 7, 99) + body


def refused(record: bytes, code: int, offset: int | None = None) -> NetlinkError:
    with pytest.raises(NetlinkError) as info:
        decode_record(record, FAMILIES)
    assert info.value.errno == code, info.value
    if offset is not None:
        assert info.value.offset == offset, info.value
    return info.value


def accepted(record: bytes) -> Any:
    (msg,) = decode_record(record, FAMILIES)
    assert isinstance(msg, GenlMessage)
    return msg.attrs


# --- framing -----------------------------------------------------------------------------------

VALID = genl(FLOW_ID, nest(FLOW_KEY, attr(KEY_IN_PORT, u32(1))))


@pytest.mark.parametrize("size", [1, 4, 8, 15])
def test_truncated_nlmsghdr(size: int) -> None:
    refused(VALID[:size], errno.EINVAL, 0)
    # and after a valid message: the valid one is not enough to save the record
    refused(VALID + VALID[:size], errno.EINVAL, len(VALID))


@pytest.mark.parametrize("nlmsg_len", [0, 1, 4, 15])
def test_nlmsg_len_below_the_header(nlmsg_len: int) -> None:
    bad = struct.pack("=I", nlmsg_len) + VALID[4:]
    refused(bad, errno.EINVAL, 0)  # and no endless loop on nlmsg_len 0


@pytest.mark.parametrize("extra", [1, 4, 1000, 0xFFFFFFFF - len(VALID)])
def test_nlmsg_len_past_the_record(extra: int) -> None:
    bad = struct.pack("=I", len(VALID) + extra) + VALID[4:]
    refused(bad, errno.EMSGSIZE, 0)
    refused(VALID + bad, errno.EMSGSIZE, len(VALID))


@pytest.mark.parametrize("family_id", [FLOW_ID, CTRL_ID])
@pytest.mark.parametrize("nlmsg_len", [16, 17, 18, 19])
def test_truncated_genl_header(family_id: int, nlmsg_len: int) -> None:
    record = genl(family_id, ovs_header=False)[:nlmsg_len]
    record = struct.pack("=I", nlmsg_len) + record[4:]
    refused(record, errno.EINVAL, 0)


@pytest.mark.parametrize("family_id", [DP_ID, VPORT_ID, FLOW_ID, PACKET_ID, METER_ID, CT_LIMIT_ID])
@pytest.mark.parametrize("missing", [4, 3, 1])
def test_missing_ovs_header(family_id: int, missing: int) -> None:
    record = genl(family_id)[: 24 - missing]
    record = struct.pack("=I", len(record)) + record[4:]
    refused(record, errno.EINVAL, 0)


def test_nlctrl_has_no_family_header() -> None:
    assert accepted(genl(CTRL_ID, ovs_header=False)) == {}


def test_unknown_message_type() -> None:
    refused(genl(0x99), errno.EOPNOTSUPP, 0)
    refused(VALID + genl(0x99), errno.EOPNOTSUPP, len(VALID))


def test_truncated_nlmsg_error() -> None:
    error = struct.pack("=IHHII", 24, 2, 0, 7, 0) + struct.pack("=i", -22) + b"\0" * 4
    refused(error, errno.EINVAL, 0)


def test_offsets_are_relative_to_the_record() -> None:
    bad = genl(DP_ID, attr(DP_NAME, b"dp0"))  # not NUL-terminated
    refused(bad, errno.EINVAL, FIRST_ATTR)
    refused(VALID + bad, errno.EINVAL, len(VALID) + FIRST_ATTR)


# --- attribute headers and lengths ------------------------------------------------------------


@pytest.mark.parametrize("tail", [b"\x08", b"\x08\x00", b"\x08\x00\x03"])
def test_truncated_attribute_header(tail: bytes) -> None:
    refused(genl(FLOW_ID, tail), errno.EINVAL, FIRST_ATTR)
    # after a valid attribute
    first = nest(FLOW_KEY, attr(KEY_IN_PORT, u32(1)))
    refused(genl(FLOW_ID, first + tail), errno.EINVAL, FIRST_ATTR + len(first))


def test_truncated_attribute_header_inside_a_nest() -> None:
    key = attr(FLOW_KEY, attr(KEY_IN_PORT, u32(1)) + b"\x08\x00")
    refused(genl(FLOW_ID, key), errno.EINVAL, FIRST_ATTR + 4 + 8)
    # the same at the very end of the record (no padding bytes after it)
    record = genl(FLOW_ID, key)[:-2]
    record = struct.pack("=I", len(record)) + record[4:]
    refused(record, errno.EINVAL, FIRST_ATTR + 4 + 8)


@pytest.mark.parametrize("alen", [0, 1, 2, 3])
def test_attribute_length_below_four(alen: int) -> None:
    refused(genl(FLOW_ID, struct.pack("=HH", alen, FLOW_PROBE)), errno.EINVAL, FIRST_ATTR)
    inner = struct.pack("=HH", alen, KEY_IN_PORT) + u32(1)
    refused(genl(FLOW_ID, nest(FLOW_KEY, inner)), errno.EINVAL, FIRST_ATTR + 4)
    refused(genl(FLOW_ID, nest(FLOW_ACTIONS, inner)), errno.EINVAL, FIRST_ATTR + 4)


def test_attribute_length_past_the_message() -> None:
    too_long = attr(FLOW_PROBE, b"", length=12)
    refused(genl(FLOW_ID, too_long), errno.EINVAL, FIRST_ATTR)
    # the bytes exist (the next message), but they are not this message's
    refused(genl(FLOW_ID, too_long) + VALID, errno.EINVAL, FIRST_ATTR)


def test_attribute_length_past_its_parent_nest() -> None:
    # in_port claims 12 bytes inside a key nest holding 8; the message has more bytes after it
    key = attr(FLOW_KEY, attr(KEY_IN_PORT, u32(1), length=12))
    record = genl(FLOW_ID, key + attr(FLOW_UFID, bytes(16)))
    refused(record, errno.EINVAL, FIRST_ATTR + 4)


def _encap_chain(nests: int) -> bytes:
    """ovs_flow KEY nest holding ``nests - 1`` ENCAP nests, in_port innermost."""
    inner = attr(KEY_IN_PORT, u32(1))
    for _ in range(nests - 1):
        inner = nest(KEY_ENCAP, inner)
    return nest(FLOW_KEY, inner)


def test_nesting_depth_limit() -> None:
    accepted(genl(FLOW_ID, _encap_chain(MAX_NEST_DEPTH)))
    refused(
        genl(FLOW_ID, _encap_chain(MAX_NEST_DEPTH + 1)),
        errno.EINVAL,
        FIRST_ATTR + 4 * MAX_NEST_DEPTH,  # the nest one level too deep
    )


def test_very_deep_nesting_is_refused_not_recursion_error() -> None:
    """Keys nested too deep are EINVAL; action lists nested too deep are EOVERFLOW, the
    kernel's answer for them (the action spaces declare it)."""
    refused(genl(FLOW_ID, _encap_chain(12000)), errno.EINVAL)
    actions = attr(ACTION_OUTPUT, u32(1))
    for _ in range(12000):
        actions = nest(ACTION_CLONE, actions)
    refused(genl(FLOW_ID, nest(FLOW_ACTIONS, actions)), errno.EOVERFLOW)


# --- payloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("atype", "payload"),
    [
        (KEY_ARP, bytes(22)),  # ovs_key_arp is 24 with its tail padding
        (KEY_ARP, bytes(26)),
        (KEY_ETHERNET, bytes(11)),
        (KEY_ETHERNET, bytes(13)),
        (KEY_IN_PORT, bytes(2)),
        (KEY_IN_PORT, bytes(8)),
        (KEY_IN_PORT, b""),
    ],
)
def test_fixed_size_payload_of_the_wrong_size(atype: int, payload: bytes) -> None:
    key = nest(FLOW_KEY, attr(KEY_PRIORITY, u32(0)), attr(atype, payload))
    refused(genl(FLOW_ID, key), errno.EINVAL, FIRST_ATTR + 4 + 8)


def test_wrong_sizes_elsewhere() -> None:
    refused(genl(DP_ID, attr(DP_STATS, bytes(31))), errno.EINVAL, FIRST_ATTR)
    tunnel = nest(KEY_TUNNEL, attr(TUNNEL_ID, bytes(4)))  # be64
    refused(genl(FLOW_ID, nest(FLOW_KEY, tunnel)), errno.EINVAL, FIRST_ATTR + 8)


def test_duplicate_attributes_in_a_set_space() -> None:
    port = attr(KEY_IN_PORT, u32(1))
    refused(genl(FLOW_ID, nest(FLOW_KEY, port, port)), errno.EINVAL, FIRST_ATTR + 4 + 8)
    key = nest(FLOW_KEY, port)
    refused(genl(FLOW_ID, key + key), errno.EINVAL, FIRST_ATTR + len(key))
    # a flag attribute twice is a duplicate as well
    probe = attr(FLOW_PROBE)
    refused(genl(FLOW_ID, probe + probe), errno.EINVAL, FIRST_ATTR + 4)


def test_repeats_are_fine_in_an_action_list() -> None:
    out = attr(ACTION_OUTPUT, u32(2))
    assert accepted(genl(FLOW_ID, nest(FLOW_ACTIONS, out, out))) == {
        "actions": [("output", 2), ("output", 2)]
    }


@pytest.mark.parametrize("payload", [b"dp0", b"", b"x" * 15])
def test_string_not_nul_terminated(payload: bytes) -> None:
    refused(genl(DP_ID, attr(DP_NAME, payload)), errno.EINVAL, FIRST_ATTR)


def test_string_too_long() -> None:
    assert accepted(genl(DP_ID, attr(DP_NAME, b"x" * 15 + b"\0"))) == {"name": "x" * 15}
    refused(genl(DP_ID, attr(DP_NAME, b"x" * 16 + b"\0")), errno.ERANGE, FIRST_ATTR)


def test_string_not_utf8() -> None:
    refused(genl(DP_ID, attr(DP_NAME, b"\xff\xfe\0")), errno.EINVAL, FIRST_ATTR)


@pytest.mark.parametrize("payload", [b"\x01", bytes(4)])
def test_flag_with_a_payload(payload: bytes) -> None:
    refused(genl(FLOW_ID, attr(FLOW_PROBE, payload)), errno.EINVAL, FIRST_ATTR)


@pytest.mark.parametrize("payload", [bytes(7), bytes(6), bytes(10), b""])
def test_masked_attribute_of_the_wrong_length(payload: bytes) -> None:
    # SET_MASKED(priority): u32 value + u32 mask = 8 bytes, nothing else
    masked = nest(ACTION_SET_MASKED, attr(KEY_PRIORITY, payload))
    refused(genl(FLOW_ID, nest(FLOW_ACTIONS, masked)), errno.EINVAL, FIRST_ATTR + 8)


@pytest.mark.parametrize(
    ("family_id", "outer", "atype", "payload"),
    [
        (DP_ID, None, DP_PER_CPU_PIDS, bytes(6)),
        (VPORT_ID, None, VPORT_UPCALL_PID, bytes(3)),
        (FLOW_ID, FLOW_KEY, KEY_MPLS, bytes(5)),
        (CT_LIMIT_ID, None, CT_LIMIT_ZONE_LIMIT, bytes(13)),  # ovs_zone_limit is 12 bytes
    ],
)
def test_array_not_a_multiple_of_its_element(
    family_id: int, outer: int | None, atype: int, payload: bytes
) -> None:
    body = attr(atype, payload)
    at = FIRST_ATTR
    if outer is not None:
        body = nest(outer, body)
        at += 4
    refused(genl(family_id, body), errno.EINVAL, at)


@pytest.mark.parametrize("payload", [b"\x01", bytes(3), bytes(4)])
def test_tunnel_key_16_of_neither_length(payload: bytes) -> None:
    # 0 bytes is the kernel's flag, 2 bytes OVS userspace's GTP-U options; nothing else
    tunnel = nest(KEY_TUNNEL, attr(TUNNEL_TTL, b"\x40"), attr(TUNNEL_16, payload))
    refused(genl(FLOW_ID, nest(FLOW_KEY, tunnel)), errno.EINVAL, FIRST_ATTR + 8 + 8)
    set_action = nest(ACTION_SET, tunnel)
    refused(genl(FLOW_ID, nest(FLOW_ACTIONS, set_action)), errno.EINVAL, FIRST_ATTR + 12 + 8)


def test_tunnel_key_16_both_ways() -> None:
    flag, gtpu = attr(TUNNEL_16), attr(TUNNEL_16, b"\x30\xff")
    tunnel = nest(KEY_TUNNEL, flag)
    assert accepted(genl(FLOW_ID, nest(FLOW_KEY, tunnel))) == {
        "key": {"tunnel": {"ipv4_info_bridge": True}}
    }
    tunnel = nest(KEY_TUNNEL, gtpu)
    assert accepted(genl(FLOW_ID, nest(FLOW_KEY, tunnel))) == {
        "key": {"tunnel": {"gtpu_opts": GtpuMetadata(0x30, 0xFF)}}
    }
    # one attribute number: both meanings at once is a duplicate, whichever comes first
    for first, second in ((flag, gtpu), (gtpu, flag)):
        tunnel = nest(KEY_TUNNEL, first, second)
        refused(genl(FLOW_ID, nest(FLOW_KEY, tunnel)), errno.EINVAL, FIRST_ATTR + 8 + len(first))
        with pytest.raises(NetlinkError) as info:
            SPACES["ovs_tunnel_key"].parse(first + second)
        assert info.value.errno == errno.EINVAL


def test_tunnel_push_as_ovs_sends_it() -> None:
    # odp_put_tnl_push_action: offsetof(header) + header_len bytes, no 512-byte array
    header = bytes(range(50))
    payload = struct.pack("<IIII", 5, 6, len(header), 4) + header
    actions = accepted(genl(FLOW_ID, nest(FLOW_ACTIONS, attr(ACTION_TUNNEL_PUSH, payload))))
    assert actions == {"actions": [("tunnel_push", OvsActionPushTnl(5, 6, 50, 4, header))]}
    # the old fixed-size form still reads (the header is then the whole array)
    old = struct.pack("<IIII", 5, 6, len(header), 4) + header.ljust(512, b"\0")
    actions = accepted(genl(FLOW_ID, nest(FLOW_ACTIONS, attr(ACTION_TUNNEL_PUSH, old))))
    assert actions["actions"][0][1].header == header.ljust(512, b"\0")


@pytest.mark.parametrize("size", [0, 4, 15])
def test_tunnel_push_shorter_than_its_fixed_prefix(size: int) -> None:
    push = attr(ACTION_TUNNEL_PUSH, bytes(size))
    refused(genl(FLOW_ID, nest(FLOW_ACTIONS, push)), errno.EINVAL, FIRST_ATTR + 4)
    assert accepted(genl(FLOW_ID, nest(FLOW_ACTIONS, attr(ACTION_TUNNEL_PUSH, bytes(16))))) == {
        "actions": [("tunnel_push", OvsActionPushTnl(0, 0, 0, 0, b""))]
    }


# --- encoding ----------------------------------------------------------------------------------

ETH = OvsKeyEthernet(bytes(6), bytes(6))

BAD_VALUES = [
    ("ovs_key", {"no_such_attribute": 1}),
    ("ovs_key", {"in_port": "1"}),
    ("ovs_key", {"in_port": 1.5}),
    ("ovs_key", {"in_port": None}),
    ("ovs_key", {"in_port": -1}),
    ("ovs_key", {"in_port": 1 << 32}),
    ("ovs_key", {"ct_zone": 1 << 16}),
    ("ovs_key", {"ethernet": 5}),
    ("ovs_key", {"ethernet": (bytes(6),)}),
    ("ovs_key", {"ethernet": OvsKeyEthernet(b"abc", bytes(6))}),  # byte strings of a struct
    ("ovs_key", {"ethernet": OvsKeyEthernet(bytes(6), bytes(7))}),
    ("ovs_key", {"ethernet": OvsKeyEthernet("abcdef", bytes(6))}),
    ("ovs_key", {"ipv6": OvsKeyIpv6(bytes(15), bytes(16), 0, 0, 0, 0, 0)}),
    ("ovs_key", {"ct_labels": bytes(15)}),  # Bytes(16)
    ("ovs_key", {"ipv4": OvsKeyIpv4(1, 2, 3, 4, 5, 256)}),
    ("ovs_key", {"mpls": (1, "x")}),
    ("ovs_key", {"mpls": 5}),
    ("ovs_key", {"encap": 5}),  # a nest's value is a dict
    ("ovs_key", {"encap": [("in_port", 1)]}),
    ("ovs_key", [("in_port", 1)]),  # a set space is a dict
    ("ovs_key", {0x4000: b""}),  # beyond the 14-bit type
    ("ovs_key", {-1: b""}),
    ("ovs_key", {30000: 5}),  # raw payloads are bytes (bytes(5) would be five NULs)
    ("ovs_key", {30000: "text"}),
    ("ovs_flow", {"ufid": 16}),
    ("ovs_flow", {"ufid": [1, 2]}),
    ("ovs_flow", {"probe": 1}),  # a flag is True
    ("ovs_flow", {"probe": False}),
    ("ovs_datapath", {"name": "a\0b"}),
    ("ovs_datapath", {"name": b"dp0"}),
    ("ovs_datapath", {"name": 5}),
    ("ovs_datapath", {"stats": (1, 2, 3)}),  # a struct of 4 fields
    ("ovs_datapath", None),
    ("ovs_action", {"output": 1}),  # a seq space is a list of pairs
    ("ovs_action", [("output",)]),
    ("ovs_action", [("nope", 1)]),
    ("ovs_action", [("push_vlan", OvsActionPushVlan(0x8100, 1 << 16))]),
    ("ovs_key_masked", {"priority": 1}),
    ("ovs_key_masked", {"priority": (1, 2, 3)}),
    ("ovs_key_masked", {"ct_labels": (bytes(16), bytes(15))}),
    ("ovs_key_masked", {"mpls": ((1,), (1, 2))}),  # value and mask differ in length
    ("ovs_key_masked", {"tcp": (OvsKeyPorts(1, 2), None)}),
    ("ovs_ct", {"mark": OvsCtMark(1, -1)}),
    ("ctrl", {"ops": 5}),
    ("ctrl", {"ops": [{"id": 1}, 5]}),
    ("ovs_ct_limit", {"zone_limit": (OvsZoneLimit(0, 1, 2), (1, 2))}),
    ("ovs_tunnel_key", {"gtpu_opts": (1,)}),  # flags and msgtype
    ("ovs_tunnel_key", {"gtpu_opts": GtpuMetadata(1, 256)}),
    ("ovs_tunnel_key", {"gtpu_opts": True}),
    ("ovs_tunnel_key", {"ipv4_info_bridge": GtpuMetadata(1, 2)}),  # a flag is True
    ("ovs_tunnel_key", {"ipv4_info_bridge|gtpu_opts": True}),  # the label is not a name
    ("ovs_action", [("tunnel_push", (1, 2, 3, 4))]),  # the header is missing
    ("ovs_action", [("tunnel_push", OvsActionPushTnl(1, 2, 3, 4, "text"))]),
    ("ovs_action", [("tunnel_push", OvsActionPushTnl(1, 2, 3, -4, b""))]),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=lambda v: repr(v)[:48])
def test_encode_refuses_a_bad_value(name: str, value: Any) -> None:
    with pytest.raises(NetlinkError) as info:
        CODECS[name].encode(value)
    assert info.value.errno == errno.EINVAL, info.value


def test_encode_refuses_a_bad_value_in_a_message() -> None:
    msg = GenlMessage(FLOW_ID, 1, 1, 1, 1, 1, 3, {"key": {"ethernet": OvsKeyEthernet(b"", b"")}})
    with pytest.raises(NetlinkError) as info:
        encode_genl(msg, OVS_FLOW)
    assert info.value.errno == errno.EINVAL


def test_encode_string_too_long() -> None:
    assert CODECS["ovs_datapath"].encode({"name": "x" * 15})
    for name in ("x" * 16, "\u00e9" * 8):  # 16 bytes of UTF-8
        with pytest.raises(NetlinkError) as info:
            CODECS["ovs_datapath"].encode({"name": name})
        assert info.value.errno == errno.ERANGE


def test_encode_nest_too_long_for_nla_len() -> None:
    # nla_len is 16 bits: a nest holds at most 0xFFFB bytes, in practice 0xFFF8 (4-aligned)
    most = [("output", 1)] * (0xFFF8 // 8)
    fits = CODECS["ovs_flow"].encode({"actions": most})
    assert struct.unpack_from("=HH", fits) == (4 + 0xFFF8, FLOW_ACTIONS)
    for actions in ([("output", 1)] * 8192, [*most, ("pop_vlan", True)]):
        with pytest.raises(NetlinkError) as info:
            CODECS["ovs_flow"].encode({"actions": actions})
        assert info.value.errno == errno.EMSGSIZE
    with pytest.raises(NetlinkError) as info:
        CODECS["ovs_flow"].encode({"key": {"encap": {"mpls": tuple(range(16384))}}})
    assert info.value.errno == errno.EMSGSIZE


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ovs_flow", {"ufid": bytes(0xFFFF - 4 + 1)}),
        ("ovs_flow", {1000: bytes(0xFFFF)}),
        ("ovs_datapath", {"per_cpu_pids": tuple(range(16384))}),
        ("ctrl", {"ops": [{5000: bytes(40000), 5001: bytes(40000)}]}),  # a NestedList element
    ],
)
def test_encode_attribute_too_long(name: str, value: Any) -> None:
    with pytest.raises(NetlinkError) as info:
        CODECS[name].encode(value)
    assert info.value.errno == errno.EMSGSIZE


def test_encode_longest_attribute_fits() -> None:
    raw = CODECS["ovs_flow"].encode({"ufid": bytes(0xFFFF - 4)})
    assert struct.unpack_from("=HH", raw) == (0xFFFF, FLOW_UFID)
    assert CODECS["ovs_flow"].decode(raw) == {"ufid": bytes(0xFFFF - 4)}


# --- fuzzing -----------------------------------------------------------------------------------


def _corpus() -> list[bytes]:
    """Valid records of every family, encoded by ovsdp (their bytes are checked elsewhere)."""
    eth = OvsKeyEthernet(bytes.fromhex("525400000001"), bytes.fromhex("525400000002"))
    key = {
        "in_port": 1,
        "tunnel": {"id": 5, "ipv4_dst": 0x0A000001, "ttl": 64, "csum": True},
        "ethernet": eth,
        "ethertype": 0x8100,
        "vlan": 0x1064,
        "encap": {"ethertype": 0x0800, "ipv4": OvsKeyIpv4(1, 2, 6, 0, 64, 0)},
        "mpls": (1, 2),
        "ct_labels": bytes(16),
    }
    actions = [
        ("set_masked", {"ipv4": (OvsKeyIpv4(1, 0, 0, 0, 0, 0), OvsKeyIpv4(0xFF, 0, 0, 0, 0, 0))}),
        ("set", {"tunnel": {"id": 9, "ipv4_dst": 7, "ttl": 1}}),
        ("set", {"tunnel": {"ttl": 1, "gtpu_opts": GtpuMetadata(0x30, 0xFF)}}),
        ("tunnel_push", OvsActionPushTnl(1, 2, 14, 4, bytes(range(14)))),
        ("userspace", {"pid": 1, "userdata": b"abc", "actions": True}),
        ("ct", {"commit": True, "helper": "ftp", "nat": {"src": True, "ip_min": bytes(4)}}),
        ("clone", [("sample", {"probability": 5, "actions": [("output", 1)]})]),
        ("output", 2),
    ]
    msgs = [
        (DP_ID, {"name": "dp0", "stats": OvsDpStats(1, 2, 3, 4), "per_cpu_pids": (1, 2)}),
        (VPORT_ID, {"name": "p1", "upcall_pid": (3,), "options": {"extension": {"gbp": True}}}),
        (FLOW_ID, {"key": key, "mask": key, "actions": actions, "ufid": bytes(16)}),
        (PACKET_ID, {"packet": bytes(61), "key": key, "actions": actions, "hash": 1}),
        (METER_ID, {"id": 1, "bands": [{"type": 1, "rate": 2}, {"type": 1, "burst": 3}]}),
        (CT_LIMIT_ID, {"zone_limit": (OvsZoneLimit(-1, 10, 0), OvsZoneLimit(5, 1, 1))}),
        (CTRL_ID, {"family_name": "x", "ops": [{"id": 1}], "mcast_groups": [{"name": "g"}]}),
    ]
    out = []
    for family_id, attrs in msgs:
        msg = GenlMessage(family_id, 1, 2, 3, 1, 1, 0 if family_id != CTRL_ID else None, attrs)
        out.append(encode_genl(msg, FAMILIES[family_id]))
    return out


CORPUS = _corpus()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(record: bytes) -> None:
    try:
        decode_record(record, FAMILIES)
    except NetlinkError as exc:
        assert exc.errno > 0
        assert exc.offset is None or 0 <= exc.offset <= len(record)


def test_corpus_is_valid() -> None:
    for record in CORPUS:
        decode_record(record, FAMILIES)


@FUZZ
@given(record=st.binary(max_size=200))
def test_random_bytes(record: bytes) -> None:
    decodes_or_refuses(record)


@FUZZ
@given(
    family_id=st.sampled_from(sorted(FAMILIES)),
    body=st.binary(max_size=120),
    flags=st.integers(0, 0xFFFF),
)
def test_random_attributes_behind_valid_headers(family_id: int, body: bytes, flags: int) -> None:
    record = genl(family_id, body, ovs_header=FAMILIES[family_id].hdrsize == 4)
    record = record[:6] + struct.pack("=H", flags) + record[8:]
    decodes_or_refuses(record)


mutation = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("u16"), st.integers(0, 10_000), st.integers(0, 0xFFFF)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def mutate(record: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(record)
    for kind, where, value in mutations:
        if not data:
            break
        at = where % len(data)
        if kind == "byte":
            data[at] = value
        elif kind == "u16" and at + 2 <= len(data):
            data[at : at + 2] = struct.pack("=H", value)
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value])
    return bytes(data)


@FUZZ
@given(
    index=st.integers(0, len(CORPUS) - 1),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    keep_len=st.booleans(),
    pair=st.booleans(),
)
def test_mutated_valid_records(
    index: int, mutations: list[tuple[str, int, int]], keep_len: bool, pair: bool
) -> None:
    record = mutate(CORPUS[index], mutations)
    if keep_len and len(record) >= 4:
        # keep nlmsg_len consistent so the mutation reaches the attributes
        record = struct.pack("=I", len(record)) + record[4:]
    if pair:
        record = CORPUS[index - 1] + record
    decodes_or_refuses(record)


@FUZZ
@given(
    index=st.integers(0, len(CORPUS) - 1),
    mutations=st.lists(mutation, min_size=1, max_size=3),
    keep_len=st.booleans(),
)
def test_one_message_records_read_as_in_a_longer_record(
    index: int, mutations: list[tuple[str, int, int]], keep_len: bool
) -> None:
    # decode_record reads a one-message record without its general loop; followed by another
    # message, the same bytes go through the loop: both must read the first message alike
    record = mutate(CORPUS[index], mutations)
    if keep_len and len(record) >= 4:
        record = struct.pack("=I", len(record)) + record[4:]

    def outcome(data: bytes) -> tuple[Any, ...]:
        # (the reason may differ: a header cut by the record's end reads as "truncated" alone,
        # but as a length past its parent when the next message's bytes follow)
        try:
            return ("ok", decode_record(data, FAMILIES))
        except NetlinkError as exc:
            return ("refused", exc.errno, exc.offset)

    alone = outcome(record)
    if len(record) < 16 or struct.unpack_from("=I", record)[0] != len(record):
        return  # a framing fault: the next message would change what the record means
    followed = outcome(pad_message(record) + encode_noop(1, 2))
    if alone[0] == "ok":
        assert followed[0] == "ok" and followed[1][:-1] == alone[1]
    else:
        assert followed == alone


def _interpreted(space: str, body: bytes) -> tuple[str, Any]:
    try:
        return "ok", SPACES[space].parse(body)
    except NetlinkError as exc:
        return "refused", exc.errno


def _fast(space: str, body: bytes) -> tuple[str, Any]:
    try:
        return "ok", CODECS[space].decode(body)
    except NetlinkError as exc:
        return "refused", exc.errno


@FUZZ
@given(
    index=st.integers(0, len(CORPUS) - 1),
    mutations=st.lists(mutation, min_size=1, max_size=3),
)
def test_interpreter_agrees_with_fast_decoder_on_mutants(
    index: int, mutations: list[tuple[str, int, int]]
) -> None:
    record = CORPUS[index]
    family = FAMILIES[struct.unpack_from("=H", record, 4)[0]]
    body = mutate(record[20 + family.hdrsize :], mutations)
    fast = _fast(family.space, body)
    interpreted = _interpreted(family.space, body)
    if fast[0] == "ok" or interpreted[0] == "ok":
        assert fast == interpreted
    else:
        assert fast[1] == interpreted[1]  # both refuse, with the same errno
