"""The control family: what a netlink socket does with bind() and setsockopt().

Modelled on Windows' ``ovs_win_control``, whose command numbers it keeps where a command has the
same meaning (2 joins or leaves a multicast group, 6 gets or sets socket properties).  Commands
0, 1 (pending-IRP waits), 3 (packet subscription), 4 and 5 (kernel-internal reads) have no
meaning on a real socket: poll() works and upcalls go to a socket's PID without subscribing; the
device answers them EOPNOTSUPP.  New here: 7 reads the socket's PID, 8 claims one (bind()).
See docs/pseudodev.md.
"""

from __future__ import annotations

import enum
import errno
from typing import TYPE_CHECKING, Any

from ..netlink.errors import NetlinkError, einval
from ..netlink.message import GenlMessage
from .registry import Command, Family, Reply

if TYPE_CHECKING:
    from .device import Connection, Device, Request

CONTROL_FAMILY = "ovsdp_control"
CONTROL_VERSION = 1
NETLINK_GENERIC = 16


class ControlCmd(enum.IntEnum):
    """Commands of the control family (0-6 numbered as ovs_win_control)."""

    WIN_PEND_REQ = 0
    WIN_PEND_PACKET_REQ = 1
    MC_SUBSCRIBE_REQ = 2
    PACKET_SUBSCRIBE_REQ = 3
    EVENT_NOTIFY = 4
    READ_NOTIFY = 5
    SOCK_PROP = 6
    GET_PID = 7
    SET_PID = 8


def socket_properties(conn: Connection) -> dict[str, Any]:
    """Everything SOCK_PROP reports about a connection."""
    return {
        "sock_proto": NETLINK_GENERIC,
        "sock_pid": conn.pid,
        "txn_markers": int(conn.txn_markers),
        "rxq_limit": conn.rxq_limit,
        "rxq_bytes": conn.rxq_bytes,
        "rxq_dropped": conn.rxq_dropped,
        "mcast_groups": tuple(sorted(conn.groups)),
    }


def _mc_subscribe(request: Request) -> list[GenlMessage]:
    attrs = request.attrs
    group = attrs["mcast_grp"]
    join = attrs["mcast_join"]
    if join not in (0, 1):
        raise einval(f"OVS_NL_ATTR_MCAST_JOIN must be 0 or 1, not {join}")
    if join:
        request.device.join(request.conn, group)
    else:
        request.device.leave(request.conn, group)
    return [request.reply(ControlCmd.MC_SUBSCRIBE_REQ, {"mcast_grp": group, "mcast_join": join})]


def _sock_prop(request: Request) -> list[GenlMessage]:
    attrs = request.attrs
    conn = request.conn
    proto = attrs.get("sock_proto")
    if proto is not None and proto != NETLINK_GENERIC:
        raise NetlinkError(
            errno.EPROTONOSUPPORT, f"protocol {proto} is not served here (only NETLINK_GENERIC)"
        )
    if "sock_pid" in attrs and attrs["sock_pid"] != conn.pid:
        raise einval("SOCK_PROP does not change the PID: use SET_PID")
    markers = attrs.get("txn_markers")
    if markers is not None and markers not in (0, 1):
        raise einval(f"txn_markers must be 0 or 1, not {markers}")
    limit = attrs.get("rxq_limit")
    if limit is not None and limit < 4096:
        raise einval(f"rxq_limit {limit} is below the minimum of 4096 bytes")
    # validated everything first: a refused request changes nothing
    if markers is not None:
        conn.txn_markers = bool(markers)
    if limit is not None:
        conn.rxq_limit = limit
    return [request.reply(ControlCmd.SOCK_PROP, socket_properties(conn))]


def _get_pid(request: Request) -> list[GenlMessage]:
    return [request.reply(ControlCmd.GET_PID, {"sock_pid": request.conn.pid})]


def _set_pid(request: Request) -> list[GenlMessage]:
    request.device.claim_pid(request.conn, request.attrs["sock_pid"])
    return [request.reply(ControlCmd.SET_PID, {"sock_pid": request.conn.pid})]


def register(device: Device) -> Family:
    """Register the control family (it gets the first dynamic id, 0x11, as on Windows)."""
    family = Family(
        CONTROL_FAMILY,
        CONTROL_VERSION,
        0,
        "ovsdp_control",
        {
            c.cmd: c
            for c in (
                Command(
                    ControlCmd.MC_SUBSCRIBE_REQ,
                    "MC_SUBSCRIBE_REQ",
                    do=_mc_subscribe,
                    required=("mcast_grp", "mcast_join"),
                    reply=Reply.ECHO,
                ),
                Command(ControlCmd.SOCK_PROP, "SOCK_PROP", do=_sock_prop),
                Command(ControlCmd.GET_PID, "GET_PID", do=_get_pid),
                Command(ControlCmd.SET_PID, "SET_PID", do=_set_pid, required=("sock_pid",)),
            )
        },
    )
    return device.register(family)
