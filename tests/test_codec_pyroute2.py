"""pyroute2 as an independent oracle for the bytes of the OVS families and nlctrl.

pyroute2's message classes encode and decode without a socket.  The classes below describe the
OVS families with pyroute2's own vocabulary, written from the protocol reference
(/work/shared/reference/ovs-netlink.md: attribute numbers, struct layouts, byte orders), not from
ovsdp's schema.  ``uint16/32/64`` are host order, ``be16/32/64`` network order; struct fields use
``struct`` format codes (``>`` network order, no prefix host order).

Each scenario is written once as ovsdp values.  ``to_p2`` renames it into pyroute2's form, guided
by the pyroute2 classes (names only: numbers, sizes and byte orders come from those classes), then:

1. pyroute2 encodes it and ovsdp decodes the bytes to the ovsdp values;
2. ovsdp encodes it and pyroute2 decodes the bytes to the pyroute2 form;
3. both encoders produce the same bytes.

pyroute2 can express attribute type 0 (explicitly numbered ``nla_map``), so the tunnel ID
(OVS_TUNNEL_KEY_ATTR_ID = 0) and the vport upcall-success counter are checked too.
"""

from __future__ import annotations

import copy
import ipaddress
import struct
from typing import Any

import pytest
from pyroute2.netlink import (
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    ctrlmsg,
    genlmsg,
    nla,
    nlmsg_base,
)

from ovsdp.netlink.constants import (
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_ECHO,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    CtrlCmd,
    DpCmd,
    FlowCmd,
    PacketCmd,
    VportCmd,
)
from ovsdp.netlink.families import NLCTRL, OVS_DATAPATH, OVS_FLOW, OVS_PACKET, OVS_VPORT
from ovsdp.netlink.message import GenlFamily, GenlMessage, decode_record, encode_genl
from ovsdp.netlink.structs import (
    ErspanMetadata,
    OvsActionAddMpls,
    OvsActionHash,
    OvsActionPushMpls,
    OvsActionPushVlan,
    OvsCtMark,
    OvsDpMegaflowStats,
    OvsDpStats,
    OvsFlowStats,
    OvsKeyArp,
    OvsKeyCtTupleIpv4,
    OvsKeyEthernet,
    OvsKeyIcmp,
    OvsKeyIpv4,
    OvsKeyIpv6,
    OvsKeyNd,
    OvsKeyPorts,
    OvsVportStats,
)

DP_ID, VPORT_ID, FLOW_ID, PACKET_ID = 0x1A, 0x1B, 0x1C, 0x1D
FAMILIES: dict[int, GenlFamily] = {
    GENL_ID_CTRL: NLCTRL,
    DP_ID: OVS_DATAPATH,
    VPORT_ID: OVS_VPORT,
    FLOW_ID: OVS_FLOW,
    PACKET_ID: OVS_PACKET,
}

# --- the OVS families in pyroute2's vocabulary --------------------------------------------------


class ovs_genlmsg(genlmsg):
    """genlmsghdr followed by struct ovs_header (dp_ifindex, signed 32-bit host order)."""

    fields = (("cmd", "B"), ("version", "B"), ("reserved", "H"), ("dp_ifindex", "i"))


class dp_stats(nla):
    fields = (("n_hit", "Q"), ("n_missed", "Q"), ("n_lost", "Q"), ("n_flows", "Q"))


class dp_megaflow_stats(nla):
    fields = (
        ("n_mask_hit", "Q"),
        ("n_masks", "I"),
        ("_pad0", "4x"),
        ("n_cache_hit", "Q"),
        ("_pad1", "8x"),
    )


class vport_stats(nla):
    fields = tuple(
        (name, "Q")
        for name in (
            "rx_packets",
            "tx_packets",
            "rx_bytes",
            "tx_bytes",
            "rx_errors",
            "tx_errors",
            "rx_dropped",
            "tx_dropped",
        )
    )


class flow_stats(nla):
    fields = (("n_packets", "Q"), ("n_bytes", "Q"))


class key_ethernet(nla):
    fields = (("src", "6s"), ("dst", "6s"))


class key_ipv4(nla):
    fields = (
        ("src", ">I"),
        ("dst", ">I"),
        ("proto", "B"),
        ("tos", "B"),
        ("ttl", "B"),
        ("frag", "B"),
    )


class key_ipv6(nla):
    fields = (
        ("src", "16s"),
        ("dst", "16s"),
        ("label", ">I"),
        ("proto", "B"),
        ("tclass", "B"),
        ("hlimit", "B"),
        ("frag", "B"),
    )


class key_ports(nla):
    fields = (("src", ">H"), ("dst", ">H"))


class key_icmp(nla):
    fields = (("type", "B"), ("code", "B"))


class key_arp(nla):
    fields = (
        ("sip", ">I"),
        ("tip", ">I"),
        ("op", ">H"),
        ("sha", "6s"),
        ("tha", "6s"),
        ("_pad", "2x"),
    )


class key_nd(nla):
    fields = (("target", "16s"), ("sll", "6s"), ("tll", "6s"))


class key_ct_tuple_ipv4(nla):
    fields = (
        ("src", ">I"),
        ("dst", ">I"),
        ("src_port", ">H"),
        ("dst_port", ">H"),
        ("proto", "B"),
        ("_pad", "3x"),
    )


class erspan_metadata(nla):
    fields = (("version", "i"), ("word1", ">I"), ("sgt", ">H"), ("bits", ">H"))


class vxlan_ext_key(nla):
    prefix = "OVS_VXLAN_EXT_"
    nla_map = ((1, "OVS_VXLAN_EXT_GBP", "uint32"),)


class tunnel_key(nla):
    prefix = "OVS_TUNNEL_KEY_ATTR_"
    nla_map = (
        (0, "OVS_TUNNEL_KEY_ATTR_ID", "be64"),
        (1, "OVS_TUNNEL_KEY_ATTR_IPV4_SRC", "be32"),
        (2, "OVS_TUNNEL_KEY_ATTR_IPV4_DST", "be32"),
        (3, "OVS_TUNNEL_KEY_ATTR_TOS", "uint8"),
        (4, "OVS_TUNNEL_KEY_ATTR_TTL", "uint8"),
        (5, "OVS_TUNNEL_KEY_ATTR_DONT_FRAGMENT", "flag"),
        (6, "OVS_TUNNEL_KEY_ATTR_CSUM", "flag"),
        (7, "OVS_TUNNEL_KEY_ATTR_OAM", "flag"),
        (8, "OVS_TUNNEL_KEY_ATTR_GENEVE_OPTS", "cdata"),
        (9, "OVS_TUNNEL_KEY_ATTR_TP_SRC", "be16"),
        (10, "OVS_TUNNEL_KEY_ATTR_TP_DST", "be16"),
        (11, "OVS_TUNNEL_KEY_ATTR_VXLAN_OPTS", "vxlan_ext_key"),
        (12, "OVS_TUNNEL_KEY_ATTR_IPV6_SRC", "cdata"),
        (13, "OVS_TUNNEL_KEY_ATTR_IPV6_DST", "cdata"),
        (14, "OVS_TUNNEL_KEY_ATTR_PAD", "none"),
        (15, "OVS_TUNNEL_KEY_ATTR_ERSPAN_OPTS", "erspan_metadata"),
    )
    vxlan_ext_key = vxlan_ext_key
    erspan_metadata = erspan_metadata


class ovs_key(nla):
    prefix = "OVS_KEY_ATTR_"
    nla_map = (
        (1, "OVS_KEY_ATTR_ENCAP", "recursive"),
        (2, "OVS_KEY_ATTR_PRIORITY", "uint32"),
        (3, "OVS_KEY_ATTR_IN_PORT", "uint32"),
        (4, "OVS_KEY_ATTR_ETHERNET", "key_ethernet"),
        (5, "OVS_KEY_ATTR_VLAN", "be16"),
        (6, "OVS_KEY_ATTR_ETHERTYPE", "be16"),
        (7, "OVS_KEY_ATTR_IPV4", "key_ipv4"),
        (8, "OVS_KEY_ATTR_IPV6", "key_ipv6"),
        (9, "OVS_KEY_ATTR_TCP", "key_ports"),
        (10, "OVS_KEY_ATTR_UDP", "key_ports"),
        (11, "OVS_KEY_ATTR_ICMP", "key_icmp"),
        (12, "OVS_KEY_ATTR_ICMPV6", "key_icmp"),
        (13, "OVS_KEY_ATTR_ARP", "key_arp"),
        (14, "OVS_KEY_ATTR_ND", "key_nd"),
        (15, "OVS_KEY_ATTR_SKB_MARK", "uint32"),
        (16, "OVS_KEY_ATTR_TUNNEL", "tunnel_key"),
        (17, "OVS_KEY_ATTR_SCTP", "key_ports"),
        (18, "OVS_KEY_ATTR_TCP_FLAGS", "be16"),
        (19, "OVS_KEY_ATTR_DP_HASH", "uint32"),
        (20, "OVS_KEY_ATTR_RECIRC_ID", "uint32"),
        (21, "OVS_KEY_ATTR_MPLS", "array(be32)"),
        (22, "OVS_KEY_ATTR_CT_STATE", "uint32"),
        (23, "OVS_KEY_ATTR_CT_ZONE", "uint16"),
        (24, "OVS_KEY_ATTR_CT_MARK", "uint32"),
        (25, "OVS_KEY_ATTR_CT_LABELS", "cdata"),
        (26, "OVS_KEY_ATTR_CT_ORIG_TUPLE_IPV4", "key_ct_tuple_ipv4"),
        (32, "OVS_KEY_ATTR_IPV6_EXTHDRS", "uint16"),
    )
    key_ethernet = key_ethernet
    key_ipv4 = key_ipv4
    key_ipv6 = key_ipv6
    key_ports = key_ports
    key_icmp = key_icmp
    key_arp = key_arp
    key_nd = key_nd
    key_ct_tuple_ipv4 = key_ct_tuple_ipv4
    tunnel_key = tunnel_key


# SET_MASKED: each key attribute's payload is the value followed by a mask of the same layout.
class masked_u32(nla):
    masked = True
    fields = (("v", "I"), ("v_mask", "I"))


class masked_ethernet(nla):
    masked = True
    fields = (("src", "6s"), ("dst", "6s"), ("src_mask", "6s"), ("dst_mask", "6s"))


class masked_ipv4(nla):
    masked = True
    fields = key_ipv4.fields + tuple((f"{name}_mask", fmt) for name, fmt in key_ipv4.fields)


class masked_ports(nla):
    masked = True
    fields = (("src", ">H"), ("dst", ">H"), ("src_mask", ">H"), ("dst_mask", ">H"))


class ovs_key_masked(nla):
    prefix = "OVS_KEY_ATTR_"
    nla_map = (
        (2, "OVS_KEY_ATTR_PRIORITY", "masked_u32"),
        (4, "OVS_KEY_ATTR_ETHERNET", "masked_ethernet"),
        (7, "OVS_KEY_ATTR_IPV4", "masked_ipv4"),
        (9, "OVS_KEY_ATTR_TCP", "masked_ports"),
        (15, "OVS_KEY_ATTR_SKB_MARK", "masked_u32"),
    )
    masked_u32 = masked_u32
    masked_ethernet = masked_ethernet
    masked_ipv4 = masked_ipv4
    masked_ports = masked_ports


class push_vlan(nla):
    fields = (("tpid", ">H"), ("tci", ">H"))


class action_hash(nla):
    fields = (("alg", "I"), ("basis", "I"))


class push_mpls(nla):
    fields = (("lse", ">I"), ("ethertype", ">H"), ("_pad", "2x"))


class add_mpls(nla):
    fields = (("lse", ">I"), ("ethertype", ">H"), ("tun_flags", "H"))


class ct_mark(nla):
    # a pyroute2 field cannot be called "value" (it is the atom's own slot): aliased
    aliases = {"value": "mark", "mask": "mark_mask"}
    fields = (("mark", "I"), ("mark_mask", "I"))


class userspace_attrs(nla):
    prefix = "OVS_USERSPACE_ATTR_"
    nla_map = (
        (1, "OVS_USERSPACE_ATTR_PID", "uint32"),
        (2, "OVS_USERSPACE_ATTR_USERDATA", "cdata"),
        (3, "OVS_USERSPACE_ATTR_EGRESS_TUN_PORT", "uint32"),
        (4, "OVS_USERSPACE_ATTR_ACTIONS", "flag"),
    )


class nat_attrs(nla):
    prefix = "OVS_NAT_ATTR_"
    nla_map = (
        (1, "OVS_NAT_ATTR_SRC", "flag"),
        (2, "OVS_NAT_ATTR_DST", "flag"),
        (3, "OVS_NAT_ATTR_IP_MIN", "cdata"),
        (4, "OVS_NAT_ATTR_IP_MAX", "cdata"),
        (5, "OVS_NAT_ATTR_PROTO_MIN", "uint16"),
        (6, "OVS_NAT_ATTR_PROTO_MAX", "uint16"),
        (7, "OVS_NAT_ATTR_PERSISTENT", "flag"),
        (8, "OVS_NAT_ATTR_PROTO_HASH", "flag"),
        (9, "OVS_NAT_ATTR_PROTO_RANDOM", "flag"),
    )


class ct_attrs(nla):
    prefix = "OVS_CT_ATTR_"
    nla_map = (
        (1, "OVS_CT_ATTR_COMMIT", "flag"),
        (2, "OVS_CT_ATTR_ZONE", "uint16"),
        (3, "OVS_CT_ATTR_MARK", "ct_mark"),
        (5, "OVS_CT_ATTR_HELPER", "asciiz"),
        (6, "OVS_CT_ATTR_NAT", "nat_attrs"),
        (7, "OVS_CT_ATTR_FORCE_COMMIT", "flag"),
        (8, "OVS_CT_ATTR_EVENTMASK", "uint32"),
        (9, "OVS_CT_ATTR_TIMEOUT", "asciiz"),
    )
    ct_mark = ct_mark
    nat_attrs = nat_attrs


class ovs_actions(nla):
    prefix = "OVS_ACTION_ATTR_"
    seq = True  # a list: order kept, repeats allowed
    nla_map = (
        (1, "OVS_ACTION_ATTR_OUTPUT", "uint32"),
        (2, "OVS_ACTION_ATTR_USERSPACE", "userspace_attrs"),
        (3, "OVS_ACTION_ATTR_SET", "ovs_key"),
        (4, "OVS_ACTION_ATTR_PUSH_VLAN", "push_vlan"),
        (5, "OVS_ACTION_ATTR_POP_VLAN", "flag"),
        (6, "OVS_ACTION_ATTR_SAMPLE", "sample_attrs"),
        (7, "OVS_ACTION_ATTR_RECIRC", "uint32"),
        (8, "OVS_ACTION_ATTR_HASH", "action_hash"),
        (9, "OVS_ACTION_ATTR_PUSH_MPLS", "push_mpls"),
        (10, "OVS_ACTION_ATTR_POP_MPLS", "be16"),
        (11, "OVS_ACTION_ATTR_SET_MASKED", "ovs_key_masked"),
        (12, "OVS_ACTION_ATTR_CT", "ct_attrs"),
        (13, "OVS_ACTION_ATTR_TRUNC", "uint32"),
        (14, "OVS_ACTION_ATTR_PUSH_ETH", "key_ethernet"),
        (15, "OVS_ACTION_ATTR_POP_ETH", "flag"),
        (16, "OVS_ACTION_ATTR_CT_CLEAR", "flag"),
        (19, "OVS_ACTION_ATTR_METER", "uint32"),
        (20, "OVS_ACTION_ATTR_CLONE", "recursive"),
        (21, "OVS_ACTION_ATTR_CHECK_PKT_LEN", "check_pkt_len_attrs"),
        (22, "OVS_ACTION_ATTR_ADD_MPLS", "add_mpls"),
        (23, "OVS_ACTION_ATTR_DEC_TTL", "dec_ttl_attrs"),
        (24, "OVS_ACTION_ATTR_DROP", "uint32"),
    )
    userspace_attrs = userspace_attrs
    ovs_key = ovs_key
    push_vlan = push_vlan
    action_hash = action_hash
    push_mpls = push_mpls
    add_mpls = add_mpls
    ovs_key_masked = ovs_key_masked
    ct_attrs = ct_attrs
    key_ethernet = key_ethernet


class sample_attrs(nla):
    prefix = "OVS_SAMPLE_ATTR_"
    nla_map = (
        (1, "OVS_SAMPLE_ATTR_PROBABILITY", "uint32"),
        (2, "OVS_SAMPLE_ATTR_ACTIONS", "ovs_actions"),
    )
    ovs_actions = ovs_actions


class check_pkt_len_attrs(nla):
    prefix = "OVS_CHECK_PKT_LEN_ATTR_"
    nla_map = (
        (1, "OVS_CHECK_PKT_LEN_ATTR_PKT_LEN", "uint16"),
        (2, "OVS_CHECK_PKT_LEN_ATTR_ACTIONS_IF_GREATER", "ovs_actions"),
        (3, "OVS_CHECK_PKT_LEN_ATTR_ACTIONS_IF_LESS_EQUAL", "ovs_actions"),
    )
    ovs_actions = ovs_actions


class dec_ttl_attrs(nla):
    prefix = "OVS_DEC_TTL_ATTR_"
    nla_map = ((1, "OVS_DEC_TTL_ATTR_ACTION", "ovs_actions"),)
    ovs_actions = ovs_actions


ovs_actions.sample_attrs = sample_attrs
ovs_actions.check_pkt_len_attrs = check_pkt_len_attrs
ovs_actions.dec_ttl_attrs = dec_ttl_attrs


class ovs_dp_msg(ovs_genlmsg):
    prefix = "OVS_DP_ATTR_"
    nla_map = (
        (1, "OVS_DP_ATTR_NAME", "asciiz"),
        (2, "OVS_DP_ATTR_UPCALL_PID", "uint32"),
        (3, "OVS_DP_ATTR_STATS", "dp_stats"),
        (4, "OVS_DP_ATTR_MEGAFLOW_STATS", "dp_megaflow_stats"),
        (5, "OVS_DP_ATTR_USER_FEATURES", "uint32"),
        (6, "OVS_DP_ATTR_PAD", "none"),
        (7, "OVS_DP_ATTR_MASKS_CACHE_SIZE", "uint32"),
        (8, "OVS_DP_ATTR_PER_CPU_PIDS", "array(uint32)"),
        (9, "OVS_DP_ATTR_IFINDEX", "int32"),
    )
    dp_stats = dp_stats
    dp_megaflow_stats = dp_megaflow_stats


class tunnel_ext(nla):
    prefix = "OVS_VXLAN_EXT_"
    nla_map = ((1, "OVS_VXLAN_EXT_GBP", "flag"),)


class tunnel_options(nla):
    prefix = "OVS_TUNNEL_ATTR_"
    nla_map = (
        (1, "OVS_TUNNEL_ATTR_DST_PORT", "uint16"),
        (2, "OVS_TUNNEL_ATTR_EXTENSION", "tunnel_ext"),
    )
    tunnel_ext = tunnel_ext


class vport_upcall_stats(nla):
    prefix = "OVS_VPORT_UPCALL_ATTR_"
    nla_map = (
        (0, "OVS_VPORT_UPCALL_ATTR_SUCCESS", "uint64"),
        (1, "OVS_VPORT_UPCALL_ATTR_FAIL", "uint64"),
    )


class ovs_vport_msg(ovs_genlmsg):
    prefix = "OVS_VPORT_ATTR_"
    nla_map = (
        (1, "OVS_VPORT_ATTR_PORT_NO", "uint32"),
        (2, "OVS_VPORT_ATTR_TYPE", "uint32"),
        (3, "OVS_VPORT_ATTR_NAME", "asciiz"),
        (4, "OVS_VPORT_ATTR_OPTIONS", "tunnel_options"),
        (5, "OVS_VPORT_ATTR_UPCALL_PID", "array(uint32)"),
        (6, "OVS_VPORT_ATTR_STATS", "vport_stats"),
        (7, "OVS_VPORT_ATTR_PAD", "none"),
        (8, "OVS_VPORT_ATTR_IFINDEX", "int32"),
        (9, "OVS_VPORT_ATTR_NETNSID", "int32"),
        (10, "OVS_VPORT_ATTR_UPCALL_STATS", "vport_upcall_stats"),
    )
    tunnel_options = tunnel_options
    vport_stats = vport_stats
    vport_upcall_stats = vport_upcall_stats


class ovs_flow_msg(ovs_genlmsg):
    prefix = "OVS_FLOW_ATTR_"
    nla_map = (
        (1, "OVS_FLOW_ATTR_KEY", "ovs_key"),
        (2, "OVS_FLOW_ATTR_ACTIONS", "ovs_actions"),
        (3, "OVS_FLOW_ATTR_STATS", "flow_stats"),
        (4, "OVS_FLOW_ATTR_TCP_FLAGS", "uint8"),
        (5, "OVS_FLOW_ATTR_USED", "uint64"),
        (6, "OVS_FLOW_ATTR_CLEAR", "flag"),
        (7, "OVS_FLOW_ATTR_MASK", "ovs_key"),
        (8, "OVS_FLOW_ATTR_PROBE", "flag"),
        (9, "OVS_FLOW_ATTR_UFID", "cdata"),
        (10, "OVS_FLOW_ATTR_UFID_FLAGS", "uint32"),
        (11, "OVS_FLOW_ATTR_PAD", "none"),
    )
    ovs_key = ovs_key
    ovs_actions = ovs_actions
    flow_stats = flow_stats


class ovs_packet_msg(ovs_genlmsg):
    prefix = "OVS_PACKET_ATTR_"
    nla_map = (
        (1, "OVS_PACKET_ATTR_PACKET", "cdata"),
        (2, "OVS_PACKET_ATTR_KEY", "ovs_key"),
        (3, "OVS_PACKET_ATTR_ACTIONS", "ovs_actions"),
        (4, "OVS_PACKET_ATTR_USERDATA", "cdata"),
        (5, "OVS_PACKET_ATTR_EGRESS_TUN_KEY", "tunnel_key"),
        (8, "OVS_PACKET_ATTR_PROBE", "flag"),
        (9, "OVS_PACKET_ATTR_MRU", "uint16"),
        (10, "OVS_PACKET_ATTR_LEN", "uint32"),
        (11, "OVS_PACKET_ATTR_HASH", "uint64"),
        (12, "OVS_PACKET_ATTR_UPCALL_PID", "uint32"),
    )
    ovs_key = ovs_key
    ovs_actions = ovs_actions
    tunnel_key = tunnel_key


# nlctrl is pyroute2's own class; its nests carry no prefix of their own, so name them here
nlctrl_msg = ctrlmsg
PREFIXES = {
    ctrlmsg: "CTRL_ATTR_",
    ctrlmsg.ops: "CTRL_ATTR_OP_",
    ctrlmsg.mcast_groups: "CTRL_ATTR_MCAST_GRP_",
}


# --- renaming between ovsdp values and pyroute2's form ---------------------------------------


def _entries(cls: Any) -> list[tuple[int, str, str]]:
    """(number, name, class spec) of a pyroute2 nla_map, numbered or enumerated."""
    entries = list(cls.nla_map)
    if isinstance(entries[0][0], int):
        return [(e[0], e[1], e[2]) for e in entries]
    return [(n, e[0], e[1]) for n, e in enumerate(entries)]


def _map_entry(cls: Any, p2name: str) -> tuple[str, Any]:
    """(class spec, nested class or None) of attribute ``p2name`` in pyroute2 class ``cls``."""
    for _number, name, spec in _entries(cls):
        if name == p2name:
            if spec == "recursive":
                return spec, cls
            if spec.startswith("*"):
                return spec, getattr(cls, spec[1:])
            sub = getattr(cls, spec, None) if "(" not in spec else None
            return spec, sub
    raise KeyError(f"{cls.__name__} has no attribute {p2name}")


def _p2_name(cls: Any, name: str) -> str:
    return f"{PREFIXES.get(cls) or cls.prefix}{name.upper()}"


def to_p2(cls: Any, value: Any) -> dict[str, Any]:
    """ovsdp value of a nest -> pyroute2's ``{"attrs": [[NAME, value], ...]}``."""
    items = value if isinstance(value, list) else list(value.items())
    attrs = []
    for name, val in items:
        p2name = _p2_name(cls, name)
        spec, sub = _map_entry(cls, p2name)
        attrs.append([p2name, _value_to_p2(spec, sub, val)])
    return {"attrs": attrs}


def _value_to_p2(spec: str, sub: Any, val: Any) -> Any:
    if spec.startswith("*"):
        return [to_p2(sub, element) for element in val]
    if sub is not None and isinstance(sub, type) and getattr(sub, "nla_map", None):
        return to_p2(sub, val)
    if sub is not None and getattr(sub, "masked", False):
        value, mask = val
        if isinstance(value, int):
            return {"v": value, "v_mask": mask}
        return {**value._asdict(), **{f"{k}_mask": v for k, v in mask._asdict().items()}}
    if hasattr(val, "_asdict"):
        aliases = getattr(sub, "aliases", {})
        return {aliases.get(k, k): v for k, v in val._asdict().items()}
    if isinstance(val, tuple):
        return list(val)
    return val


def p2_plain(obj: Any) -> Any:
    """A decoded pyroute2 object as plain lists and dicts (the form to_p2 produces)."""
    if isinstance(obj, nlmsg_base):
        if type(obj).nla_map or "attrs" in obj:
            return {"attrs": [[slot.name, p2_plain(slot.value)] for slot in obj["attrs"]]}
        return {k: v for k, v in obj.items() if k != "header" and not k.startswith("_")}
    if isinstance(obj, list | tuple):
        return [p2_plain(x) for x in obj]
    if isinstance(obj, bytearray):
        return bytes(obj)
    return obj


def p2_encode(cls: Any, msg: GenlMessage) -> bytes:
    p2 = cls()
    p2["header"]["type"] = msg.type
    p2["header"]["flags"] = msg.flags
    p2["header"]["sequence_number"] = msg.seq
    p2["header"]["pid"] = msg.pid
    p2["cmd"] = msg.cmd
    p2["version"] = msg.version
    if msg.dp_ifindex is not None:
        p2["dp_ifindex"] = msg.dp_ifindex
    p2["attrs"] = copy.deepcopy(to_p2(cls, msg.attrs)["attrs"])
    p2.encode()
    return bytes(p2.data)


def p2_decode(cls: Any, data: bytes) -> Any:
    p2 = cls(data)
    p2.decode()
    return p2


def check_both_ways(cls: Any, msg: GenlMessage) -> bytes:
    """The three checks of the module docstring for one message; returns its bytes."""
    family = FAMILIES[msg.type]
    # 1. pyroute2 encodes, ovsdp decodes
    theirs = p2_encode(cls, msg)
    assert decode_record(theirs, FAMILIES) == [msg]
    # 2. ovsdp encodes, pyroute2 decodes
    ours = encode_genl(msg, family)
    p2 = p2_decode(cls, ours)
    header = p2["header"]
    assert (header["length"], header["type"], header["flags"]) == (len(ours), msg.type, msg.flags)
    assert (header["sequence_number"], header["pid"]) == (msg.seq, msg.pid)
    assert (p2["cmd"], p2["version"]) == (msg.cmd, msg.version)
    if msg.dp_ifindex is not None:
        assert p2["dp_ifindex"] == msg.dp_ifindex
    assert p2_plain(p2)["attrs"] == to_p2(cls, msg.attrs)["attrs"]
    # 3. same bytes
    assert ours == theirs
    return ours


# --- values used below ------------------------------------------------------------------------


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


MAC_A, MAC_B = mac("52:54:00:00:00:01"), mac("52:54:00:00:00:02")
ONES6 = b"\xff" * 6
UFID = bytes(range(0xA0, 0xB0))


def flow_key() -> dict[str, Any]:
    return {
        "recirc_id": 0,
        "dp_hash": 0x1234,
        "priority": 7,
        "tunnel": {
            "id": 0x2A,  # attribute type 0
            "ipv4_src": ip4("192.0.2.1"),
            "ipv4_dst": ip4("192.0.2.2"),
            "tos": 0x10,
            "ttl": 64,
            "dont_fragment": True,
            "csum": True,
            "tp_src": 50000,
            "tp_dst": 4789,
            "vxlan_opts": {"gbp": 0x00120034},
        },
        "in_port": 3,
        "skb_mark": 0xDEAD,
        "ct_state": 0x22,
        "ct_zone": 513,
        "ct_mark": 0x01020304,
        "ct_labels": bytes(range(16)),
        "ct_orig_tuple_ipv4": OvsKeyCtTupleIpv4(ip4("10.0.0.1"), ip4("10.0.0.2"), 40000, 80, 6),
        "ethernet": OvsKeyEthernet(MAC_A, MAC_B),
        "ethertype": 0x0800,
        "ipv4": OvsKeyIpv4(ip4("10.0.0.1"), ip4("10.0.0.2"), 6, 0x2E, 64, 1),
        "tcp": OvsKeyPorts(40000, 80),
        "tcp_flags": 0x0012,
    }


def flow_mask() -> dict[str, Any]:
    return {
        "recirc_id": 0xFFFFFFFF,
        "dp_hash": 0,
        "priority": 0,
        "tunnel": {"id": 0xFFFFFFFFFFFFFFFF, "ipv4_dst": 0xFFFFFFFF, "ttl": 0},
        "in_port": 0xFFFFFFFF,
        "ethernet": OvsKeyEthernet(ONES6, b"\0" * 6),
        "ethertype": 0xFFFF,
        "ipv4": OvsKeyIpv4(0xFFFFFF00, 0, 0xFF, 0xFC, 0, 0xFF),
        "tcp": OvsKeyPorts(0, 0xFFFF),
        "tcp_flags": 0x0FFF,
    }


def flow_actions() -> list[tuple[str, Any]]:
    return [
        ("ct", {"commit": True, "zone": 513, "mark": OvsCtMark(1, 0xFF), "helper": "ftp"}),
        (
            "set",
            {
                "tunnel": {
                    "id": 0x1000,
                    "ipv4_dst": ip4("198.51.100.7"),
                    "ttl": 64,
                    "tp_dst": 4789,
                    "dont_fragment": True,
                }
            },
        ),
        ("userspace", {"pid": 4242, "userdata": b"\x01\x02\x03\x04\x05", "actions": True}),
        ("push_vlan", OvsActionPushVlan(0x8100, 0x1000 | 10)),
        (
            "set_masked",
            {
                "ipv4": (
                    OvsKeyIpv4(ip4("10.9.0.0"), 0, 0, 0, 0, 0),
                    OvsKeyIpv4(0xFFFF0000, 0, 0, 0, 0, 0),
                )
            },
        ),
        (
            "set_masked",
            {"ethernet": (OvsKeyEthernet(MAC_B, b"\0" * 6), OvsKeyEthernet(ONES6, b"\0" * 6))},
        ),
        ("sample", {"probability": 0x7FFFFFFF, "actions": [("output", 9), ("recirc", 4)]}),
        ("hash", OvsActionHash(1, 0xCAFE)),
        ("push_mpls", OvsActionPushMpls(0x000140FF, 0x8847)),
        ("add_mpls", OvsActionAddMpls(0x000141FF, 0x8848, 1)),
        ("pop_mpls", 0x0800),
        ("clone", [("pop_vlan", True), ("output", 5)]),
        (
            "check_pkt_len",
            {
                "pkt_len": 1500,
                "actions_if_greater": [("userspace", {"pid": 7})],
                "actions_if_less_equal": [("output", 2)],
            },
        ),
        ("dec_ttl", {"action": [("drop", 0)]}),
        ("trunc", 200),
        ("output", 2),
        ("output", 2),
    ]


# --- ovs_datapath ------------------------------------------------------------------------------


def test_datapath_new_request() -> None:
    msg = GenlMessage(
        type=DP_ID,
        flags=NLM_F_REQUEST | NLM_F_ECHO,
        seq=1,
        pid=3001,
        cmd=DpCmd.NEW,
        version=2,
        dp_ifindex=0,
        attrs={"name": "ovs-system", "upcall_pid": 0, "user_features": 0x80000003},
    )
    raw = check_both_ways(ovs_dp_msg, msg)
    # the reference's offsets: ovs_header at 20, the first attribute (NAME) at 24
    assert struct.unpack_from("=HH", raw, 24) == (4 + len("ovs-system") + 1, 1)


def test_datapath_get_reply_with_stats() -> None:
    msg = GenlMessage(
        type=DP_ID,
        flags=0,
        seq=77,
        pid=3001,
        cmd=DpCmd.GET,
        version=2,
        dp_ifindex=12,
        attrs={
            "name": "dp0",
            "stats": OvsDpStats(1 << 40, 17, 3, 250),
            "megaflow_stats": OvsDpMegaflowStats(123456789, 42, 98765),
            "user_features": 0x0B,
            "masks_cache_size": 256,
            "per_cpu_pids": (101, 102, 103),
        },
    )
    check_both_ways(ovs_dp_msg, msg)


def test_datapath_kernel_only_ifindex() -> None:
    msg = GenlMessage(DP_ID, NLM_F_REQUEST, 2, 1, DpCmd.NEW, 2, 0, {"ifindex": -5})
    check_both_ways(ovs_dp_msg, msg)


# --- ovs_vport ---------------------------------------------------------------------------------


def test_vport_new_with_options_and_pids() -> None:
    msg = GenlMessage(
        type=VPORT_ID,
        flags=NLM_F_REQUEST | NLM_F_ECHO,
        seq=5,
        pid=3001,
        cmd=VportCmd.NEW,
        version=1,
        dp_ifindex=12,
        attrs={
            "type": 4,
            "name": "vxlan_sys_4789",
            "port_no": 3,
            "upcall_pid": (4001, 4002, 4003),
            "options": {"dst_port": 4789, "extension": {"gbp": True}},
        },
    )
    check_both_ways(ovs_vport_msg, msg)


def test_vport_get_reply() -> None:
    msg = GenlMessage(
        type=VPORT_ID,
        flags=NLM_F_MULTI,
        seq=6,
        pid=3001,
        cmd=VportCmd.GET,
        version=1,
        dp_ifindex=12,
        attrs={
            "port_no": 1,
            "type": 1,
            "name": "eth1",
            "ifindex": 7,
            "netnsid": -1,
            "stats": OvsVportStats(1, 2, 3, 4, 5, 6, 7, 1 << 63),
            "upcall_stats": {"success": 99, "fail": 1},  # success is attribute type 0
            "upcall_pid": (0,),
        },
    )
    check_both_ways(ovs_vport_msg, msg)


# --- ovs_flow ----------------------------------------------------------------------------------


def test_flow_new_with_key_mask_and_actions() -> None:
    msg = GenlMessage(
        type=FLOW_ID,
        flags=NLM_F_REQUEST | NLM_F_ECHO | NLM_F_CREATE,
        seq=900,
        pid=3001,
        cmd=FlowCmd.NEW,
        version=1,
        dp_ifindex=12,
        attrs={
            "key": flow_key(),
            "mask": flow_mask(),
            "actions": flow_actions(),
            "ufid": UFID,
            "probe": True,
        },
    )
    raw = check_both_ways(ovs_flow_msg, msg)
    # the tunnel ID really is attribute 0, be64, in the key's tunnel nest
    tun_id = struct.pack("=HH", 12, 0) + (0x2A).to_bytes(8, "big")
    assert tun_id in raw


def test_flow_reply_with_stats() -> None:
    msg = GenlMessage(
        type=FLOW_ID,
        flags=NLM_F_MULTI,
        seq=901,
        pid=3001,
        cmd=FlowCmd.GET,
        version=1,
        dp_ifindex=12,
        attrs={
            "ufid": UFID,
            "key": {
                "in_port": 1,
                "ethernet": OvsKeyEthernet(MAC_A, MAC_B),
                "ethertype": 0x86DD,
                "ipv6": OvsKeyIpv6(ip6("2001:db8::1"), ip6("2001:db8::2"), 0xABCDE, 58, 0, 255, 0),
                "ipv6_exthdrs": 0x0004,
                "icmpv6": OvsKeyIcmp(135, 0),
                "nd": OvsKeyNd(ip6("2001:db8::2"), MAC_A, b"\0" * 6),
            },
            "mask": {"in_port": 0xFFFFFFFF, "ethertype": 0xFFFF},
            "used": 0x0123456789AB,
            "stats": OvsFlowStats(1000, 1 << 33),
            "tcp_flags": 0x1B,
            "actions": [("output", 1), ("userspace", {"pid": 0xFFFFFFFF, "egress_tun_port": 4})],
        },
    )
    check_both_ways(ovs_flow_msg, msg)


def test_flow_key_arp_vlan_mpls() -> None:
    key = {
        "in_port": 2,
        "ethernet": OvsKeyEthernet(MAC_A, MAC_B),
        "ethertype": 0x8100,
        "vlan": 0x1000 | 100,
        "encap": {
            "ethertype": 0x0806,
            "arp": OvsKeyArp(ip4("10.0.0.1"), ip4("10.0.0.2"), 1, MAC_A, b"\0" * 6),
        },
    }
    mpls_key = {"ethertype": 0x8847, "mpls": (0x00001140, 0x000021FF)}
    for k in (key, mpls_key):
        msg = GenlMessage(FLOW_ID, NLM_F_REQUEST, 3, 1, FlowCmd.GET, 1, 12, {"key": k})
        check_both_ways(ovs_flow_msg, msg)


def test_flow_masked_set_of_priority_and_ports() -> None:
    actions = [
        ("set_masked", {"priority": (5, 0xF)}),
        ("set_masked", {"tcp": (OvsKeyPorts(0, 8080), OvsKeyPorts(0, 0xFFFF))}),
        (
            "ct",
            {
                "nat": {
                    "src": True,
                    "ip_min": ip6("2001:db8::9"),
                    "proto_min": 1024,
                    "proto_max": 2048,
                    "proto_random": True,
                },
                "timeout": "ovs_tp_1_tcp4",
                "eventmask": 0x3F,
            },
        ),
        ("push_eth", OvsKeyEthernet(MAC_A, MAC_B)),
        ("pop_eth", True),
        ("ct_clear", True),
        ("meter", 9),
    ]
    msg = GenlMessage(
        FLOW_ID, NLM_F_REQUEST, 4, 1, FlowCmd.SET, 1, 12, {"actions": actions, "clear": True}
    )
    check_both_ways(ovs_flow_msg, msg)


def test_flow_dump_request_is_header_only() -> None:
    msg = GenlMessage(
        FLOW_ID, NLM_F_REQUEST | 0x300 | NLM_F_ACK, 5, 1, FlowCmd.GET, 1, 12, {"ufid_flags": 7}
    )
    check_both_ways(ovs_flow_msg, msg)


def test_flow_nests_flagged_nested_by_the_sender() -> None:
    # a sender may set NLA_F_NESTED / NLA_F_NET_BYTEORDER on types; the meaning is unchanged
    p2 = ovs_flow_msg()
    p2["header"]["type"] = FLOW_ID
    p2["cmd"] = FlowCmd.NEW
    p2["dp_ifindex"] = 12
    key = to_p2(ovs_key, {"in_port": 1, "tunnel": {"id": 5, "ttl": 3}})
    key["attrs"][1] = ("OVS_KEY_ATTR_TUNNEL", key["attrs"][1][1], NLA_F_NESTED)
    p2["attrs"] = [
        ("OVS_FLOW_ATTR_KEY", key, NLA_F_NESTED),
        ("OVS_FLOW_ATTR_ACTIONS", to_p2(ovs_actions, [("output", 3)]), NLA_F_NESTED),
        ("OVS_FLOW_ATTR_UFID_FLAGS", 1, NLA_F_NET_BYTEORDER),
    ]
    p2.encode()
    raw = bytes(p2.data)
    assert struct.unpack_from("=H", raw, 26)[0] & NLA_F_NESTED  # really flagged
    (msg,) = decode_record(raw, FAMILIES)
    assert isinstance(msg, GenlMessage)
    assert msg.attrs == {
        "key": {"in_port": 1, "tunnel": {"id": 5, "ttl": 3}},
        "actions": [("output", 3)],
        "ufid_flags": 1,
    }


# --- ovs_packet --------------------------------------------------------------------------------

FRAME = MAC_B + MAC_A + b"\x08\x00" + bytes(range(47))  # 61 bytes: odd, needs padding


def test_packet_miss_upcall() -> None:
    msg = GenlMessage(
        type=PACKET_ID,
        flags=0,
        seq=0,
        pid=0,
        cmd=PacketCmd.MISS,
        version=1,
        dp_ifindex=12,
        attrs={
            "key": {
                "recirc_id": 0,
                "in_port": 3,
                "ethernet": OvsKeyEthernet(MAC_A, MAC_B),
                "ethertype": 0x0800,
                "ipv4": OvsKeyIpv4(ip4("10.0.0.1"), ip4("10.0.0.2"), 17, 0, 64, 0),
                "udp": OvsKeyPorts(5353, 53),
            },
            "mru": 1500,
            "len": 9000,
            "hash": (1 << 32) | (1 << 33) | 0xDEADBEEF,
            "packet": FRAME,
        },
    )
    raw = check_both_ways(ovs_packet_msg, msg)
    # OVS_DP_F_UNALIGNED: the kernel may leave the last attribute (the packet) unpadded
    unpadded = raw[: len(raw) - 3]
    unpadded = struct.pack("=I", len(unpadded)) + unpadded[4:]
    assert decode_record(unpadded, FAMILIES) == [msg]
    p2 = p2_decode(ovs_packet_msg, unpadded)
    assert p2.get_attr("OVS_PACKET_ATTR_PACKET") == FRAME


def test_packet_action_upcall() -> None:
    msg = GenlMessage(
        type=PACKET_ID,
        flags=0,
        seq=0,
        pid=0,
        cmd=PacketCmd.ACTION,
        version=1,
        dp_ifindex=12,
        attrs={
            "key": {"in_port": 1},
            "userdata": b"cookie!",
            "egress_tun_key": {
                "id": 7,
                "ipv6_src": ip6("2001:db8::1"),
                "ipv6_dst": ip6("2001:db8::2"),
                "ttl": 9,
                "oam": True,
                "geneve_opts": bytes.fromhex("0102800100000001"),
            },
            "actions": [("output", 4)],
            "hash": 5,
            "packet": FRAME[:14],
        },
    )
    check_both_ways(ovs_packet_msg, msg)


def test_packet_execute() -> None:
    msg = GenlMessage(
        type=PACKET_ID,
        flags=NLM_F_REQUEST,
        seq=31,
        pid=3001,
        cmd=PacketCmd.EXECUTE,
        version=1,
        dp_ifindex=12,
        attrs={
            "packet": FRAME,
            "key": {
                "in_port": 2,
                "skb_mark": 1,
                "tunnel": {
                    "id": 0,
                    "ipv4_dst": 1,
                    "ttl": 1,
                    # mixed byte order: s32 host version, then network-order fields
                    "erspan_opts": ErspanMetadata(2, 0x12345678, 0x0102, 0x8421),
                },
            },
            "actions": flow_actions(),
            "probe": True,
            "mru": 1400,
            "hash": 0x1DEADBEEF,
            "upcall_pid": 4001,
        },
    )
    check_both_ways(ovs_packet_msg, msg)


# --- nlctrl (pyroute2's own ctrlmsg) ---------------------------------------------------------


def test_nlctrl_getfamily_request() -> None:
    msg = GenlMessage(
        GENL_ID_CTRL,
        NLM_F_REQUEST,
        1,
        3001,
        CtrlCmd.GETFAMILY,
        1,
        None,
        {"family_name": "ovs_vport"},
    )
    check_both_ways(nlctrl_msg, msg)


def test_nlctrl_getfamily_reply_with_ops_and_groups() -> None:
    msg = GenlMessage(
        type=GENL_ID_CTRL,
        flags=0,
        seq=1,
        pid=3001,
        cmd=CtrlCmd.NEWFAMILY,
        version=2,
        dp_ifindex=None,
        attrs={
            "family_name": "ovs_vport",
            "family_id": VPORT_ID,
            "version": 1,
            "hdrsize": 4,
            "maxattr": 10,
            "ops": [
                {"id": VportCmd.NEW, "flags": 0x0B},
                {"id": VportCmd.DEL, "flags": 0x0B},
                {"id": VportCmd.GET, "flags": 0x0E},
                {"id": VportCmd.SET, "flags": 0x0B},
            ],
            "mcast_groups": [{"name": "ovs_vport", "id": 9}, {"name": "other", "id": 10}],
        },
    )
    raw = check_both_ways(nlctrl_msg, msg)
    p2 = p2_decode(nlctrl_msg, raw)
    groups = {
        g.get_attr("CTRL_ATTR_MCAST_GRP_NAME"): g.get_attr("CTRL_ATTR_MCAST_GRP_ID")
        for g in p2.get_attr("CTRL_ATTR_MCAST_GROUPS")
    }
    assert groups == {"ovs_vport": 9, "other": 10}


@pytest.mark.parametrize("cls", [ovs_dp_msg, ovs_vport_msg, ovs_flow_msg, ovs_packet_msg])
def test_oracle_classes_are_complete(cls: Any) -> None:
    # the pyroute2 side declares every attribute number the reference lists for these families
    numbers = {number for number, _name, _spec in _entries(cls)}
    expected = {
        ovs_dp_msg: set(range(1, 10)),
        ovs_vport_msg: set(range(1, 11)),
        ovs_flow_msg: set(range(1, 12)),
        ovs_packet_msg: {1, 2, 3, 4, 5, 8, 9, 10, 11, 12},  # 6, 7 retired
    }[cls]
    assert numbers == expected
