"""A datapath port (vport): a switch port bound by name, a tunnel port, or the local port."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..netlink.constants import VportType
from ..vswitch.switch import SwitchPort


class VportState(enum.Enum):
    """Where a switch-backed vport stands with its switch port (the Windows states, reduced)."""

    BOUND = "bound"  # bound to a switch port; traffic flows when its NIC is connected and up
    ABSENT = "absent"  # the switch port is gone (deleted or renamed): number and name survive


@dataclass
class VportStats:
    """struct ovs_vport_stats, from the datapath's point of view (rx: from the port)."""

    rx_packets: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0

    def as_tuple(self) -> tuple[int, ...]:
        return (
            self.rx_packets,
            self.tx_packets,
            self.rx_bytes,
            self.tx_bytes,
            self.rx_errors,
            self.tx_errors,
            self.rx_dropped,
            self.tx_dropped,
        )


@dataclass(eq=False)
class Vport:
    """One port of a datapath."""

    port_no: int
    name: str
    type: VportType
    upcall_pids: tuple[int, ...] = (0,)
    stats: VportStats = field(default_factory=VportStats)
    switch_port: SwitchPort | None = None  # switch-backed ports
    state: VportState = VportState.BOUND
    dst_port: int | None = None  # tunnel ports: UDP destination port
    ifindex: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    upcall_success: int = 0
    upcall_fail: int = 0

    @property
    def is_tunnel(self) -> bool:
        return self.type in TUNNEL_TYPES

    @property
    def tunnel_key(self) -> tuple[int, int] | None:
        """(type, UDP destination port) of a tunnel port; GRE uses port 0."""
        if not self.is_tunnel:
            return None
        return (int(self.type), self.dst_port or 0)

    @property
    def operational(self) -> bool:
        """Can it send and receive now?"""
        if self.switch_port is not None:
            return self.state is VportState.BOUND and self.switch_port.operational
        return True

    def upcall_pid(self, flow_hash: int = 0) -> int:
        """The PID a miss on this port goes to: one PID, or one picked by the packet's hash."""
        pids = self.upcall_pids
        if len(pids) == 1:
            return pids[0]
        return pids[flow_hash % len(pids)]


TUNNEL_TYPES = frozenset({VportType.VXLAN, VportType.GENEVE, VportType.GRE})
"""Tunnel vports exist only in the datapath; userspace adds them with options."""

SWITCH_TYPES = frozenset({VportType.NETDEV, VportType.INTERNAL})
"""Vport types that bind to a switch port by name."""
