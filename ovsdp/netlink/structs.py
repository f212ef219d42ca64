"""The namedtuple value types of the schema's Structs, importable by name.

Each class is derived from its construct Struct in :mod:`.schema` (field names and order come
from there); this module only gives them importable names.
"""

from __future__ import annotations

from typing import Any

from . import schema
from .nla import tuple_class

NlMsgHdr: Any = tuple_class(schema.nlmsghdr)
GenlMsgHdr: Any = tuple_class(schema.genlmsghdr)
OvsHeader: Any = tuple_class(schema.ovs_header)
NlMsgErr: Any = tuple_class(schema.nlmsgerr)
OvsDpStats: Any = tuple_class(schema.ovs_dp_stats)
OvsDpMegaflowStats: Any = tuple_class(schema.ovs_dp_megaflow_stats)
OvsVportStats: Any = tuple_class(schema.ovs_vport_stats)
OvsFlowStats: Any = tuple_class(schema.ovs_flow_stats)
OvsZoneLimit: Any = tuple_class(schema.ovs_zone_limit)
OvsKeyEthernet: Any = tuple_class(schema.ovs_key_ethernet)
OvsKeyIpv4: Any = tuple_class(schema.ovs_key_ipv4)
OvsKeyIpv6: Any = tuple_class(schema.ovs_key_ipv6)
OvsKeyPorts: Any = tuple_class(schema.ovs_key_ports)
OvsKeyIcmp: Any = tuple_class(schema.ovs_key_icmp)
OvsKeyArp: Any = tuple_class(schema.ovs_key_arp)
OvsKeyNd: Any = tuple_class(schema.ovs_key_nd)
OvsKeyCtTupleIpv4: Any = tuple_class(schema.ovs_key_ct_tuple_ipv4)
OvsKeyCtTupleIpv6: Any = tuple_class(schema.ovs_key_ct_tuple_ipv6)
OvsKeyNdExtensions: Any = tuple_class(schema.ovs_key_nd_extensions)
OvsNshKeyBase: Any = tuple_class(schema.ovs_nsh_key_base)
OvsNshKeyMd1: Any = tuple_class(schema.ovs_nsh_key_md1)
ErspanMetadata: Any = tuple_class(schema.erspan_metadata)
GtpuMetadata: Any = tuple_class(schema.gtpu_metadata)
OvsActionPushVlan: Any = tuple_class(schema.ovs_action_push_vlan)
OvsActionHash: Any = tuple_class(schema.ovs_action_hash)
OvsActionPushMpls: Any = tuple_class(schema.ovs_action_push_mpls)
OvsActionAddMpls: Any = tuple_class(schema.ovs_action_add_mpls)
OvsActionPushTnl: Any = tuple_class(schema.ovs_action_push_tnl)
OvsCtMark: Any = tuple_class(schema.ct_mark)
OvsCtLabels: Any = tuple_class(schema.ct_labels)
