"""Every attribute space and struct of the protocols ovsdp speaks, declared with construct.

This module is the single source of truth for attribute numbers, names, payload layouts and byte
orders: the interpreted codec is these objects themselves, the fast codec
(:mod:`ovsdp.netlink.codec`) is compiled from them at import time.

Byte order: "host" fields are declared little-endian (``Int32ul``), which is the host order of
every machine ovsdp runs on (x86-64, aarch64 little-endian); OVS declares them as host order.

Kernel and userspace header differences are resolved for the *datapath* (kernel) side:

* ``ovs_key`` 29 (PACKET_TYPE) and 30 (ND_EXTENSIONS) are userspace-only and 32 (IPV6_EXTHDRS)
  is kernel-only: all three are declared, so the codec reads what either side sends; the flow
  layer decides what a datapath accepts (as the kernel does: 29/30 are rejected there).
* ``ovs_tunnel_key`` 16 means two things: the kernel's OVS_TUNNEL_KEY_ATTR_IPV4_INFO_BRIDGE
  (a flag, no payload) and OVS userspace's OVS_TUNNEL_KEY_ATTR_GTPU_OPTS (struct gtpu_metadata:
  flags u8, msgtype u8; only OVS's own userspace datapath ever sees it).  Both are declared, told
  apart by payload length (``ByLength``): 0 bytes decode as ``"ipv4_info_bridge": True``, 2 bytes
  as ``"gtpu_opts": GtpuMetadata(flags, msgtype)``; other lengths are refused, and the two names
  count as one attribute (a key holding both is a duplicate).  The flow layer decides which a
  datapath accepts.
* ``ovs_action`` 26 (TUNNEL_PUSH) is struct ovs_action_push_tnl, but OVS sends only
  ``offsetof(struct ovs_action_push_tnl, header) + header_len`` bytes of it (odp-util.c,
  odp_put_tnl_push_action) and its readers use only ``header_len`` bytes of ``header``; so it is
  declared as the 16-byte fixed prefix followed by a GreedyBytes ``header``: the value carries
  exactly the header bytes on the wire.  Whether ``header_len`` matches them is the action
  layer's check, not the codec's.
* ``ovs_action`` 24 (DROP) and 25 (PSAMPLE) are recent kernel additions; 26 to 28 exist only in
  OVS's userspace datapath and are declared so the text format and the codec can carry them.
* ``ovs_datapath`` 9 (IFINDEX) is kernel-only.
"""

from __future__ import annotations

import errno

from construct import (
    Bytes,
    GreedyBytes,
    GreedyRange,
    Int8ub,
    Int16ub,
    Int16ul,
    Int32sl,
    Int32ub,
    Int32ul,
    Int64ub,
    Int64ul,
    Padding,
)

from .nla import (
    AttributeSpace,
    ByLength,
    Nested,
    NestedList,
    NlFlag,
    NulString,
    Pad,
    masked_space,
    named_struct,
)

IFNAME_MAX = 15  # IFNAMSIZ - 1

# --- netlink and generic netlink headers ----------------------------------------------------

nlmsghdr = named_struct(
    "NlMsgHdr",
    "len" / Int32ul,
    "type" / Int16ul,
    "flags" / Int16ul,
    "seq" / Int32ul,
    "pid" / Int32ul,
)
genlmsghdr = named_struct("GenlMsgHdr", "cmd" / Int8ub, "version" / Int8ub, Padding(2))
ovs_header = named_struct("OvsHeader", "dp_ifindex" / Int32sl)
nlmsgerr = named_struct("NlMsgErr", "error" / Int32sl)  # followed by the request's header

nlmsgerr_attrs = AttributeSpace(
    "nlmsgerr",
    {
        1: "msg" / NulString(4096),
        2: "offs" / Int32ul,
        3: "cookie" / GreedyBytes,
        4: "policy" / GreedyBytes,
        5: "miss_type" / Int32ul,
        6: "miss_nest" / Int32ul,
    },
)

# --- nlctrl ---------------------------------------------------------------------------------

ctrl_op = AttributeSpace("ctrl_op", {1: "id" / Int32ul, 2: "flags" / Int32ul})
ctrl_mcast_group = AttributeSpace(
    "ctrl_mcast_group", {1: "name" / NulString(15), 2: "id" / Int32ul}
)
ctrl = AttributeSpace(
    "ctrl",
    {
        1: "family_id" / Int16ul,
        2: "family_name" / NulString(15),
        3: "version" / Int32ul,
        4: "hdrsize" / Int32ul,
        5: "maxattr" / Int32ul,
        6: "ops" / NestedList("ctrl_op"),
        7: "mcast_groups" / NestedList("ctrl_mcast_group"),
        8: "policy" / GreedyBytes,
        9: "op_policy" / GreedyBytes,
        10: "op" / Int32ul,
    },
)

# --- structs of the OVS families -------------------------------------------------------------

ovs_dp_stats = named_struct(
    "OvsDpStats",
    "n_hit" / Int64ul,
    "n_missed" / Int64ul,
    "n_lost" / Int64ul,
    "n_flows" / Int64ul,
)
ovs_dp_megaflow_stats = named_struct(
    "OvsDpMegaflowStats",
    "n_mask_hit" / Int64ul,
    "n_masks" / Int32ul,
    Padding(4),
    "n_cache_hit" / Int64ul,
    Padding(8),
)
ovs_vport_stats = named_struct(
    "OvsVportStats",
    "rx_packets" / Int64ul,
    "tx_packets" / Int64ul,
    "rx_bytes" / Int64ul,
    "tx_bytes" / Int64ul,
    "rx_errors" / Int64ul,
    "tx_errors" / Int64ul,
    "rx_dropped" / Int64ul,
    "tx_dropped" / Int64ul,
)
ovs_flow_stats = named_struct("OvsFlowStats", "n_packets" / Int64ul, "n_bytes" / Int64ul)
ovs_zone_limit = named_struct(
    "OvsZoneLimit", "zone_id" / Int32sl, "limit" / Int32ul, "count" / Int32ul
)

# --- flow key structs ------------------------------------------------------------------------

ovs_key_ethernet = named_struct("OvsKeyEthernet", "src" / Bytes(6), "dst" / Bytes(6))
ovs_key_ipv4 = named_struct(
    "OvsKeyIpv4",
    "src" / Int32ub,
    "dst" / Int32ub,
    "proto" / Int8ub,
    "tos" / Int8ub,
    "ttl" / Int8ub,
    "frag" / Int8ub,
)
ovs_key_ipv6 = named_struct(
    "OvsKeyIpv6",
    "src" / Bytes(16),
    "dst" / Bytes(16),
    "label" / Int32ub,
    "proto" / Int8ub,
    "tclass" / Int8ub,
    "hlimit" / Int8ub,
    "frag" / Int8ub,
)
ovs_key_ports = named_struct("OvsKeyPorts", "src" / Int16ub, "dst" / Int16ub)
ovs_key_icmp = named_struct("OvsKeyIcmp", "type" / Int8ub, "code" / Int8ub)
ovs_key_arp = named_struct(
    "OvsKeyArp",
    "sip" / Int32ub,
    "tip" / Int32ub,
    "op" / Int16ub,
    "sha" / Bytes(6),
    "tha" / Bytes(6),
    Padding(2),
)
ovs_key_nd = named_struct("OvsKeyNd", "target" / Bytes(16), "sll" / Bytes(6), "tll" / Bytes(6))
ovs_key_ct_tuple_ipv4 = named_struct(
    "OvsKeyCtTupleIpv4",
    "src" / Int32ub,
    "dst" / Int32ub,
    "src_port" / Int16ub,
    "dst_port" / Int16ub,
    "proto" / Int8ub,
    Padding(3),
)
ovs_key_ct_tuple_ipv6 = named_struct(
    "OvsKeyCtTupleIpv6",
    "src" / Bytes(16),
    "dst" / Bytes(16),
    "src_port" / Int16ub,
    "dst_port" / Int16ub,
    "proto" / Int8ub,
    Padding(3),
)
ovs_key_nd_extensions = named_struct(
    "OvsKeyNdExtensions", "nd_reserved" / Int32ub, "nd_options_type" / Int8ub, Padding(3)
)
ovs_nsh_key_base = named_struct(
    "OvsNshKeyBase",
    "flags" / Int8ub,
    "ttl" / Int8ub,
    "mdtype" / Int8ub,
    "np" / Int8ub,
    "path_hdr" / Int32ub,
)
ovs_nsh_key_md1 = named_struct(
    "OvsNshKeyMd1", "c1" / Int32ub, "c2" / Int32ub, "c3" / Int32ub, "c4" / Int32ub
)
# ERSPAN v1 puts the session index in word1; v2 puts a timestamp there and uses sgt and the
# bit fields (hwid, dir, gra, o, ft, p) that follow, see ovsdp/userspace's text format.
erspan_metadata = named_struct(
    "ErspanMetadata",
    "version" / Int32sl,
    "word1" / Int32ub,
    "sgt" / Int16ub,
    "bits" / Int16ub,
)

# --- actions' structs ------------------------------------------------------------------------

ovs_action_push_vlan = named_struct("OvsActionPushVlan", "tpid" / Int16ub, "tci" / Int16ub)
ovs_action_hash = named_struct("OvsActionHash", "alg" / Int32ul, "basis" / Int32ul)
ovs_action_push_mpls = named_struct(
    "OvsActionPushMpls", "lse" / Int32ub, "ethertype" / Int16ub, Padding(2)
)
ovs_action_add_mpls = named_struct(
    "OvsActionAddMpls", "lse" / Int32ub, "ethertype" / Int16ub, "tun_flags" / Int16ul
)
# only offsetof(header) + header_len bytes are sent (see the header-difference notes above)
ovs_action_push_tnl = named_struct(
    "OvsActionPushTnl",
    "tnl_port" / Int32ul,
    "out_port" / Int32ul,
    "header_len" / Int32ul,
    "tnl_type" / Int32ul,
    "header" / GreedyBytes,
)
ct_mark = named_struct("OvsCtMark", "value" / Int32ul, "mask" / Int32ul)
ct_labels = named_struct("OvsCtLabels", "value" / Bytes(16), "mask" / Bytes(16))

# --- tunnel key, vport options ---------------------------------------------------------------

# OVS userspace's struct gtpu_metadata, the payload of OVS_TUNNEL_KEY_ATTR_GTPU_OPTS
gtpu_metadata = named_struct("GtpuMetadata", "flags" / Int8ub, "msgtype" / Int8ub)

ovs_vxlan_ext_key = AttributeSpace("ovs_vxlan_ext_key", {1: "gbp" / Int32ul})
ovs_tunnel_key = AttributeSpace(
    "ovs_tunnel_key",
    {
        0: "id" / Int64ub,
        1: "ipv4_src" / Int32ub,
        2: "ipv4_dst" / Int32ub,
        3: "tos" / Int8ub,
        4: "ttl" / Int8ub,
        5: "dont_fragment" / NlFlag(),
        6: "csum" / NlFlag(),
        7: "oam" / NlFlag(),
        8: "geneve_opts" / GreedyBytes,
        9: "tp_src" / Int16ub,
        10: "tp_dst" / Int16ub,
        11: "vxlan_opts" / Nested("ovs_vxlan_ext_key"),
        12: "ipv6_src" / Bytes(16),
        13: "ipv6_dst" / Bytes(16),
        14: "pad" / Pad(),
        15: "erspan_opts" / erspan_metadata,
        16: ByLength(
            "ipv4_info_bridge" / NlFlag(),  # the kernel's meaning of 16: 0 bytes
            "gtpu_opts" / gtpu_metadata,  # OVS userspace's meaning of 16: 2 bytes
        ),
    },
)

ovs_vxlan_ext_options = AttributeSpace(
    "ovs_vxlan_ext_options", {1: "gbp" / NlFlag(), 8: "gpe" / NlFlag()}
)
ovs_tunnel_options = AttributeSpace(
    "ovs_tunnel_options",
    {1: "dst_port" / Int16ul, 2: "extension" / Nested("ovs_vxlan_ext_options")},
)

# --- flow keys ---------------------------------------------------------------------------------

ovs_nsh_key = AttributeSpace(
    "ovs_nsh_key",
    {1: "base" / ovs_nsh_key_base, 2: "md1" / ovs_nsh_key_md1, 3: "md2" / GreedyBytes},
)
ovs_key = AttributeSpace(
    "ovs_key",
    {
        1: "encap" / Nested("ovs_key"),
        2: "priority" / Int32ul,
        3: "in_port" / Int32ul,
        4: "ethernet" / ovs_key_ethernet,
        5: "vlan" / Int16ub,
        6: "ethertype" / Int16ub,
        7: "ipv4" / ovs_key_ipv4,
        8: "ipv6" / ovs_key_ipv6,
        9: "tcp" / ovs_key_ports,
        10: "udp" / ovs_key_ports,
        11: "icmp" / ovs_key_icmp,
        12: "icmpv6" / ovs_key_icmp,
        13: "arp" / ovs_key_arp,
        14: "nd" / ovs_key_nd,
        15: "skb_mark" / Int32ul,
        16: "tunnel" / Nested("ovs_tunnel_key"),
        17: "sctp" / ovs_key_ports,
        18: "tcp_flags" / Int16ub,
        19: "dp_hash" / Int32ul,
        20: "recirc_id" / Int32ul,
        21: "mpls" / GreedyRange(Int32ub),
        22: "ct_state" / Int32ul,
        23: "ct_zone" / Int16ul,
        24: "ct_mark" / Int32ul,
        25: "ct_labels" / Bytes(16),
        26: "ct_orig_tuple_ipv4" / ovs_key_ct_tuple_ipv4,
        27: "ct_orig_tuple_ipv6" / ovs_key_ct_tuple_ipv6,
        28: "nsh" / Nested("ovs_nsh_key"),
        29: "packet_type" / Int32ub,
        30: "nd_extensions" / ovs_key_nd_extensions,
        31: "tunnel_info" / GreedyBytes,
        32: "ipv6_exthdrs" / Int16ul,
    },
)
# The payload of SET_MASKED: each attribute is value followed by mask.
masked_space("ovs_key_masked", "ovs_key")

# --- actions -----------------------------------------------------------------------------------

ovs_userspace = AttributeSpace(
    "ovs_userspace",
    {
        1: "pid" / Int32ul,
        2: "userdata" / GreedyBytes,
        3: "egress_tun_port" / Int32ul,
        4: "actions" / NlFlag(),
    },
)
ovs_sample = AttributeSpace(
    "ovs_sample",
    {1: "probability" / Int32ul, 2: "actions" / Nested("ovs_action")},
    too_deep=errno.EOVERFLOW,
)
ovs_nat = AttributeSpace(
    "ovs_nat",
    {
        1: "src" / NlFlag(),
        2: "dst" / NlFlag(),
        3: "ip_min" / GreedyBytes,
        4: "ip_max" / GreedyBytes,
        5: "proto_min" / Int16ul,
        6: "proto_max" / Int16ul,
        7: "persistent" / NlFlag(),
        8: "proto_hash" / NlFlag(),
        9: "proto_random" / NlFlag(),
    },
)
ovs_ct = AttributeSpace(
    "ovs_ct",
    {
        1: "commit" / NlFlag(),
        2: "zone" / Int16ul,
        3: "mark" / ct_mark,
        4: "labels" / ct_labels,
        5: "helper" / NulString(15),
        6: "nat" / Nested("ovs_nat"),
        7: "force_commit" / NlFlag(),
        8: "eventmask" / Int32ul,
        9: "timeout" / NulString(31),
    },
)
ovs_check_pkt_len = AttributeSpace(
    "ovs_check_pkt_len",
    {
        1: "pkt_len" / Int16ul,
        2: "actions_if_greater" / Nested("ovs_action"),
        3: "actions_if_less_equal" / Nested("ovs_action"),
    },
    too_deep=errno.EOVERFLOW,
)
ovs_dec_ttl = AttributeSpace(
    "ovs_dec_ttl", {1: "action" / Nested("ovs_action")}, too_deep=errno.EOVERFLOW
)
ovs_psample = AttributeSpace("ovs_psample", {1: "group" / Int32ul, 2: "cookie" / GreedyBytes})

ovs_action = AttributeSpace(
    "ovs_action",
    {
        1: "output" / Int32ul,
        2: "userspace" / Nested("ovs_userspace"),
        3: "set" / Nested("ovs_key"),
        4: "push_vlan" / ovs_action_push_vlan,
        5: "pop_vlan" / NlFlag(),
        6: "sample" / Nested("ovs_sample"),
        7: "recirc" / Int32ul,
        8: "hash" / ovs_action_hash,
        9: "push_mpls" / ovs_action_push_mpls,
        10: "pop_mpls" / Int16ub,
        11: "set_masked" / Nested("ovs_key_masked"),
        12: "ct" / Nested("ovs_ct"),
        13: "trunc" / Int32ul,
        14: "push_eth" / ovs_key_ethernet,
        15: "pop_eth" / NlFlag(),
        16: "ct_clear" / NlFlag(),
        17: "push_nsh" / Nested("ovs_nsh_key"),
        18: "pop_nsh" / NlFlag(),
        19: "meter" / Int32ul,
        20: "clone" / Nested("ovs_action"),
        21: "check_pkt_len" / Nested("ovs_check_pkt_len"),
        22: "add_mpls" / ovs_action_add_mpls,
        23: "dec_ttl" / Nested("ovs_dec_ttl"),
        24: "drop" / Int32ul,
        25: "psample" / Nested("ovs_psample"),
        26: "tunnel_push" / ovs_action_push_tnl,
        27: "tunnel_pop" / Int32ul,
        28: "lb_output" / Int32ul,
    },
    kind="seq",
    too_deep=errno.EOVERFLOW,
)

# --- the family attribute spaces ---------------------------------------------------------------

ovs_datapath = AttributeSpace(
    "ovs_datapath",
    {
        1: "name" / NulString(IFNAME_MAX),
        2: "upcall_pid" / Int32ul,
        3: "stats" / ovs_dp_stats,
        4: "megaflow_stats" / ovs_dp_megaflow_stats,
        5: "user_features" / Int32ul,
        6: "pad" / Pad(),
        7: "masks_cache_size" / Int32ul,
        8: "per_cpu_pids" / GreedyRange(Int32ul),
        9: "ifindex" / Int32sl,
    },
)

ovs_vport_upcall_stats = AttributeSpace(
    "ovs_vport_upcall_stats", {0: "success" / Int64ul, 1: "fail" / Int64ul}
)
ovs_vport = AttributeSpace(
    "ovs_vport",
    {
        1: "port_no" / Int32ul,
        2: "type" / Int32ul,
        3: "name" / NulString(IFNAME_MAX),
        4: "options" / Nested("ovs_tunnel_options"),
        5: "upcall_pid" / GreedyRange(Int32ul),
        6: "stats" / ovs_vport_stats,
        7: "pad" / Pad(),
        8: "ifindex" / Int32sl,
        9: "netnsid" / Int32sl,
        10: "upcall_stats" / Nested("ovs_vport_upcall_stats"),
    },
)

ovs_flow = AttributeSpace(
    "ovs_flow",
    {
        1: "key" / Nested("ovs_key"),
        2: "actions" / Nested("ovs_action"),
        3: "stats" / ovs_flow_stats,
        4: "tcp_flags" / Int8ub,
        5: "used" / Int64ul,
        6: "clear" / NlFlag(),
        7: "mask" / Nested("ovs_key"),
        8: "probe" / NlFlag(),
        9: "ufid" / GreedyBytes,
        10: "ufid_flags" / Int32ul,
        11: "pad" / Pad(),
    },
)

ovs_packet = AttributeSpace(
    "ovs_packet",
    {
        1: "packet" / GreedyBytes,
        2: "key" / Nested("ovs_key"),
        3: "actions" / Nested("ovs_action"),
        4: "userdata" / GreedyBytes,
        5: "egress_tun_key" / Nested("ovs_tunnel_key"),
        6: "unused1" / GreedyBytes,
        7: "unused2" / GreedyBytes,
        8: "probe" / NlFlag(),
        9: "mru" / Int16ul,
        10: "len" / Int32ul,
        11: "hash" / Int64ul,
        12: "upcall_pid" / Int32ul,
    },
)

ovs_band = AttributeSpace(
    "ovs_band",
    {
        1: "type" / Int32ul,
        2: "rate" / Int32ul,
        3: "burst" / Int32ul,
        4: "stats" / ovs_flow_stats,
    },
)
ovs_meter = AttributeSpace(
    "ovs_meter",
    {
        1: "id" / Int32ul,
        2: "kbps" / NlFlag(),
        3: "stats" / ovs_flow_stats,
        4: "bands" / NestedList("ovs_band", first_type=0, same_type=True),
        5: "used" / Int64ul,
        6: "clear" / NlFlag(),
        7: "max_meters" / Int32ul,
        8: "max_bands" / Int32ul,
        9: "pad" / Pad(),
    },
)

ovs_ct_limit = AttributeSpace("ovs_ct_limit", {1: "zone_limit" / GreedyRange(ovs_zone_limit)})

# --- the pseudo-device's control family (modelled on Windows' ovs_win_control) ---------------
# Attribute numbers start at 0 as in ovs_win_control; 0-3 keep that family's meaning.

ovsdp_control = AttributeSpace(
    "ovsdp_control",
    {
        0: "mcast_grp" / Int32ul,
        1: "mcast_join" / Int8ub,
        2: "packet_subscribe" / Int8ub,
        3: "packet_pid" / Int32ul,
        4: "sock_proto" / Int32ul,
        5: "sock_pid" / Int32ul,
        6: "txn_markers" / Int8ub,
        7: "rxq_limit" / Int32ul,
        8: "rxq_bytes" / Int32ul,
        9: "rxq_dropped" / Int64ul,
        10: "mcast_groups" / GreedyRange(Int32ul),
    },
)

# --- the emulated switch's management family ---------------------------------------------------

ovsdp_vswitch = AttributeSpace(
    "ovsdp_vswitch",
    {
        1: "name" / NulString(48),
        2: "port_type" / Int32ul,
        3: "port_id" / Int32ul,
        4: "mac" / Bytes(6),
        5: "mtu" / Int32ul,
        6: "new_name" / NulString(48),
        7: "connected" / Int8ub,
        8: "link_up" / Int8ub,
        9: "ifindex" / Int32ul,
        10: "datapath" / NulString(IFNAME_MAX),
        11: "port_no" / Int32ul,
        12: "frame" / GreedyBytes,
        13: "rx_frames" / Int64ul,
        14: "rx_dropped" / Int64ul,
        15: "tx_frames" / Int64ul,
        16: "backend" / NulString(15),
        17: "ipv4_address" / Int32ub,
        18: "ipv4_prefix" / Int8ub,
        19: "count" / Int32ul,
    },
)
