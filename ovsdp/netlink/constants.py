"""Numbers of the netlink, generic-netlink and OVS datapath protocols.

Attribute numbers live with their schemas in :mod:`ovsdp.netlink.schema`; this module holds the
message types, flags, command numbers and bit values that are not attributes.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# --- netlink framing -------------------------------------------------------------------------

NLMSG_ALIGNTO = 4
NLMSG_HDRLEN = 16
NLA_HDRLEN = 4
NLA_ALIGNTO = 4
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10

GENL_HDRLEN = 4
GENL_ID_CTRL = 0x10
OVS_HEADER_LEN = 4


class NlmFlag(IntFlag):
    """nlmsg_flags bits."""

    REQUEST = 0x01
    MULTI = 0x02
    ACK = 0x04
    ECHO = 0x08
    DUMP_INTR = 0x10
    DUMP_FILTERED = 0x20
    # modifiers of GET requests
    ROOT = 0x100
    MATCH = 0x200
    ATOMIC = 0x400
    DUMP = 0x300
    # modifiers of NEW requests (same bits, different meaning)
    REPLACE = 0x100
    EXCL = 0x200
    CREATE = 0x400
    APPEND = 0x800


NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
# flags of an NLMSG_ERROR message
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200


class CtrlCmd(IntEnum):
    """nlctrl (GENL_ID_CTRL) commands."""

    UNSPEC = 0
    NEWFAMILY = 1
    DELFAMILY = 2
    GETFAMILY = 3
    NEWOPS = 4
    DELOPS = 5
    GETOPS = 6
    NEWMCAST_GRP = 7
    DELMCAST_GRP = 8
    GETMCAST_GRP = 9
    GETPOLICY = 10


# flags in CTRL_ATTR_OP_FLAGS
GENL_ADMIN_PERM = 0x01
GENL_CMD_CAP_DO = 0x02
GENL_CMD_CAP_DUMP = 0x04
GENL_CMD_CAP_HASPOL = 0x08
GENL_UNS_ADMIN_PERM = 0x10

# --- the OVS families ------------------------------------------------------------------------

OVS_DATAPATH_FAMILY = "ovs_datapath"
OVS_VPORT_FAMILY = "ovs_vport"
OVS_FLOW_FAMILY = "ovs_flow"
OVS_PACKET_FAMILY = "ovs_packet"
OVS_METER_FAMILY = "ovs_meter"
OVS_CT_LIMIT_FAMILY = "ovs_ct_limit"

OVS_DATAPATH_MCGROUP = "ovs_datapath"
OVS_VPORT_MCGROUP = "ovs_vport"
OVS_FLOW_MCGROUP = "ovs_flow"
OVS_METER_MCGROUP = "ovs_meter"
OVS_CT_LIMIT_MCGROUP = "ovs_ct_limit"

OVS_DATAPATH_VERSION = 2
OVS_DP_VER_FEATURES = 2
OVS_VPORT_VERSION = 1
OVS_FLOW_VERSION = 1
OVS_PACKET_VERSION = 1
OVS_METER_VERSION = 1
OVS_CT_LIMIT_VERSION = 1


class DpCmd(IntEnum):
    """ovs_datapath commands."""

    UNSPEC = 0
    NEW = 1
    DEL = 2
    GET = 3
    SET = 4


class VportCmd(IntEnum):
    """ovs_vport commands."""

    UNSPEC = 0
    NEW = 1
    DEL = 2
    GET = 3
    SET = 4


class FlowCmd(IntEnum):
    """ovs_flow commands."""

    UNSPEC = 0
    NEW = 1
    DEL = 2
    GET = 3
    SET = 4


class PacketCmd(IntEnum):
    """ovs_packet commands (MISS and ACTION are upcalls, EXECUTE is a request)."""

    UNSPEC = 0
    MISS = 1
    ACTION = 2
    EXECUTE = 3


class MeterCmd(IntEnum):
    """ovs_meter commands."""

    UNSPEC = 0
    FEATURES = 1
    SET = 2
    DEL = 3
    GET = 4


class CtLimitCmd(IntEnum):
    """ovs_ct_limit commands."""

    UNSPEC = 0
    SET = 1
    DEL = 2
    GET = 3


class VportType(IntEnum):
    """OVS_VPORT_TYPE_*; 107 and up exist only in OVS's userspace header."""

    UNSPEC = 0
    NETDEV = 1
    INTERNAL = 2
    GRE = 3
    VXLAN = 4
    GENEVE = 5
    ERSPAN = 107
    IP6ERSPAN = 108
    IP6GRE = 109
    GTPU = 110
    BAREUDP = 111
    SRV6 = 112


class DpFeature(IntFlag):
    """OVS_DP_F_* user features of a datapath."""

    UNALIGNED = 1 << 0
    VPORT_PIDS = 1 << 1
    TC_RECIRC_SHARING = 1 << 2
    DISPATCH_UPCALL_PER_CPU = 1 << 3


# bit 31: deliberately invalid, used by userspace to detect datapaths that ignore unknown bits
OVS_DP_F_UNSUPPORTED = 1 << 31
OVS_DP_F_KNOWN = 0xF


class UfidFlag(IntFlag):
    """OVS_UFID_F_* flags trimming flow replies."""

    OMIT_KEY = 1 << 0
    OMIT_MASK = 1 << 1
    OMIT_ACTIONS = 1 << 2


class FragType(IntEnum):
    """OVS_FRAG_TYPE_* in ovs_key_ipv4.frag / ovs_key_ipv6.frag."""

    NONE = 0
    FIRST = 1
    LATER = 2


class CtState(IntFlag):
    """OVS_CS_F_* connection-tracking state bits."""

    NEW = 0x01
    ESTABLISHED = 0x02
    RELATED = 0x04
    REPLY_DIR = 0x08
    INVALID = 0x10
    TRACKED = 0x20
    SRC_NAT = 0x40
    DST_NAT = 0x80


OVS_CS_F_ALL = 0xFF

OVSP_LOCAL = 0
OVSP_NONE = 0xFFFF  # "no port" in a stored key (in_port absent)
DP_MAX_PORTS = 65535  # port numbers must be below this
IFNAMSIZ = 16
OVS_HASH_ALG_L4 = 0
OVS_HASH_ALG_SYM_L4 = 1
OVS_CHECK_PKT_LEN_MAX = 0xFFFF
OVS_COPY_ACTIONS_MAX_DEPTH = 16
OVS_VXLAN_DEFAULT_PORT = 4789
OVS_GENEVE_DEFAULT_PORT = 6081

# OVS_PACKET_ATTR_HASH high bits
OVS_PACKET_HASH_SW_BIT = 1 << 32
OVS_PACKET_HASH_L4_BIT = 1 << 33

# ext-ack attributes in an NLMSG_ERROR (NLMSGERR_ATTR_*) live in the schema module.

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_IPV6 = 0x86DD
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
ETH_P_NSH = 0x894F
ETH_P_TEB = 0x6558
ETH_P_802_3_MIN = 0x0600
ETH_P_802_2 = 0x0004  # stored by the kernel for 802.3/LLC frames (no EtherType)

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
