"""A datapath's vports: one table, two kinds, separate hashes and counters.

As the Windows datapath keeps them (``portIdHashArray`` for Hyper-V ports, ``tunnelVportsArray``
for the tunnel ports userspace adds), ports backed by a switch port and tunnel ports live in
separate hash tables with separate counters; every port is also indexed by number and by name.

Lookups: by port number, by name, by switch port id (management: which vport holds this switch
port?  The ingress path does not look up: each switch port carries its binding), by tunnel
(type, UDP destination port) (the decap path).  Port numbers: the one asked for
(EBUSY if taken, EFBIG at or past the limit), else the lowest free one from 1 (0 is the local
port).
"""

from __future__ import annotations

import errno
import heapq
from collections.abc import Iterator

from ..netlink.constants import DP_MAX_PORTS, OVSP_LOCAL
from ..netlink.errors import NetlinkError
from ..slottable import SlotTable
from ..vswitch.switch import SwitchPort
from .vport import Vport, VportState


class PortNumbers:
    """Port number allocation: lowest free number from 1, or a requested one."""

    def __init__(self, limit: int = DP_MAX_PORTS) -> None:
        self.limit = limit
        self.used: set[int] = set()
        self._freed: list[int] = []  # heap of released numbers
        self._next = 1  # every number below it is used or in _freed

    def take(self, wanted: int | None = None) -> int:
        """Reserve ``wanted`` (EBUSY, EFBIG) or the lowest free number (EFBIG when full)."""
        if wanted is not None:
            if wanted >= self.limit:
                raise NetlinkError(
                    errno.EFBIG, f"port number {wanted} is not below the limit {self.limit}"
                )
            if wanted in self.used:
                raise NetlinkError(errno.EBUSY, f"port number {wanted} is in use")
            self.used.add(wanted)
            return wanted
        while self._freed:
            number = heapq.heappop(self._freed)
            if number not in self.used:
                self.used.add(number)
                return number
        while self._next in self.used:
            self._next += 1
        if self._next >= self.limit:
            raise NetlinkError(errno.EFBIG, f"all {self.limit - 1} port numbers are in use")
        number = self._next
        self._next += 1
        self.used.add(number)
        return number

    def release(self, number: int) -> None:
        """Give a number back."""
        self.used.discard(number)
        if number < self._next:
            heapq.heappush(self._freed, number)


class VportTable:
    """All vports of one datapath."""

    def __init__(self, limit: int = DP_MAX_PORTS) -> None:
        self.numbers = PortNumbers(limit)
        self.by_no: dict[int, Vport] = {}
        self.by_name: dict[str, Vport] = {}
        # the two kinds, hashed separately, counted separately
        self.by_switch_port: dict[int, Vport] = {}  # switch port id -> vport
        self.by_tunnel: dict[tuple[int, int], Vport] = {}  # (type, dst_port) -> vport
        self.n_switch_backed = 0  # bound or absent switch-backed vports (not the local port)
        self.n_tunnel = 0
        self._slots: SlotTable[Vport] = SlotTable()
        self._slot_of: dict[int, int] = {}  # port_no -> slot

    def __len__(self) -> int:
        return len(self.by_no)

    def __iter__(self) -> Iterator[Vport]:
        return iter(list(self.by_no.values()))

    def get(self, port_no: int) -> Vport | None:
        """The vport with this number."""
        return self.by_no.get(port_no)

    def find(self, name: str) -> Vport | None:
        """The vport with this name."""
        return self.by_name.get(name)

    def for_switch_port(self, switch_port_id: int) -> Vport | None:
        """The vport bound to a switch port (the ingress lookup)."""
        return self.by_switch_port.get(switch_port_id)

    def for_tunnel(self, vport_type: int, dst_port: int) -> Vport | None:
        """The tunnel vport for (type, UDP destination port) (the decap lookup)."""
        return self.by_tunnel.get((vport_type, dst_port))

    def add(self, vport: Vport, wanted_no: int | None = None) -> Vport:
        """Number and index a new vport; checks name and tunnel clashes first."""
        if vport.name in self.by_name:
            raise NetlinkError(errno.EEXIST, f"the datapath already has a port named {vport.name}")
        tkey = vport.tunnel_key
        if tkey is not None and tkey in self.by_tunnel:
            other = self.by_tunnel[tkey]
            raise NetlinkError(
                errno.EEXIST,
                f"port {other.name} already serves {other.type.name.lower()} on UDP port {tkey[1]}",
            )
        sp = vport.switch_port
        if sp is not None and sp.id in self.by_switch_port:
            raise NetlinkError(errno.EBUSY, f"switch port {sp.name} is already bound")
        if wanted_no == OVSP_LOCAL:
            raise NetlinkError(errno.EBUSY, "port number 0 is the local port")
        vport.port_no = self.numbers.take(wanted_no)
        self._index(vport)
        return vport

    def add_local(self, vport: Vport) -> Vport:
        """The datapath's own internal port, number 0 (OVSP_LOCAL)."""
        vport.port_no = OVSP_LOCAL
        self._index(vport)
        return vport

    def _index(self, vport: Vport) -> None:
        tkey = vport.tunnel_key
        sp = vport.switch_port
        self.by_no[vport.port_no] = vport
        self.by_name[vport.name] = vport
        if tkey is not None:
            self.by_tunnel[tkey] = vport
            self.n_tunnel += 1
        elif vport.port_no != OVSP_LOCAL:
            self.n_switch_backed += 1
            if sp is not None:
                self.by_switch_port[sp.id] = vport
        self._slot_of[vport.port_no] = self._slots.add(vport)

    def remove(self, vport: Vport) -> None:
        """Take a vport out of every index and free its number."""
        if self.by_no.get(vport.port_no) is not vport:
            raise NetlinkError(errno.ENODEV, f"port {vport.name} is not in this datapath")
        del self.by_no[vport.port_no]
        del self.by_name[vport.name]
        tkey = vport.tunnel_key
        if tkey is not None:
            del self.by_tunnel[tkey]
            self.n_tunnel -= 1
        elif vport.port_no != OVSP_LOCAL:
            self.n_switch_backed -= 1
            if vport.switch_port is not None:
                self.by_switch_port.pop(vport.switch_port.id, None)
        self._slots.remove(self._slot_of.pop(vport.port_no))
        if vport.port_no != OVSP_LOCAL:
            self.numbers.release(vport.port_no)

    def unbind(self, vport: Vport) -> None:
        """The switch port went away (deleted or renamed): keep the vport, forget the port."""
        if vport.switch_port is not None:
            self.by_switch_port.pop(vport.switch_port.id, None)
        vport.switch_port = None
        vport.state = VportState.ABSENT

    def rebind(self, vport: Vport, switch_port: SwitchPort) -> None:
        """A switch port with the vport's name is back: bind it in place (number kept)."""
        vport.switch_port = switch_port
        vport.state = VportState.BOUND
        self.by_switch_port[switch_port.id] = vport

    def iter_from(self, cursor: int = 0) -> Iterator[tuple[int, Vport]]:
        """(slot, vport) in slot order from ``cursor`` (a dump's resumable position)."""
        return self._slots.items_from(cursor)
