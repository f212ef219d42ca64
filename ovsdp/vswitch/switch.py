"""The emulated Hyper-V extensible switch: a vSwitch, its ports, the NICs connected to them.

Modelled on the Hyper-V virtual switch that the OVS forwarding extension plugged into:

* a :class:`VSwitch` has ports (:class:`SwitchPort`), each with an id, a type, a FriendlyName
  (the "OVS-port-name" userspace adds it to a datapath by), a MAC and an MTU;
* a :class:`Nic` (external/physical, internal/host vNIC, VM synthetic, VM emulated) connects to a
  port; its link can be up or down;
* management operations (create/delete port, connect/disconnect NIC, link up/down, rename, change
  MAC or MTU) reach the extension as callbacks (:class:`SwitchExtension`), the way Hyper-V's OIDs
  reached the Windows extension (OID_SWITCH_PORT_CREATE, OID_SWITCH_NIC_CONNECT, ...); as an
  extension could fail a port create or update OID, it can veto a port create or rename;
* the data path: a NIC's received frames go to the extension's ingress-send hook as a batch; the
  extension sends packets to destination ports with :meth:`VSwitch.send`; the switch hands them to
  the destination NICs' backends, then returns the extension's own packets through its
  send-completion hook.

Sans-I/O: NIC backends (memory, TAP, AF_PACKET) live outside and plug in through
:class:`NicBackend`.
"""

from __future__ import annotations

import enum
import errno
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..netlink.errors import NetlinkError, einval

MAX_FRIENDLY_NAME = 48  # Hyper-V's limit for an OVS-port-name (ElementName), 1-48 characters
DEFAULT_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65535
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$")


class PortType(enum.IntEnum):
    """What sits behind a switch port (Hyper-V port and NIC type)."""

    EXTERNAL = 1  # the physical NIC (Hyper-V external port, NicIndex > 0)
    INTERNAL = 2  # the host's vNIC (Hyper-V internal port)
    VM_SYNTHETIC = 3  # a VM's synthetic NIC
    VM_EMULATED = 4  # a VM's emulated (legacy) NIC

    @property
    def is_vm(self) -> bool:
        return self in (PortType.VM_SYNTHETIC, PortType.VM_EMULATED)

    @property
    def label(self) -> str:
        return {1: "external", 2: "internal", 3: "vm", 4: "vm-emulated"}[int(self)]

    @classmethod
    def parse(cls, text: str) -> PortType:
        """``vm``, ``vm-emulated``, ``external`` or ``internal``."""
        table = {
            "vm": cls.VM_SYNTHETIC,
            "vm-synthetic": cls.VM_SYNTHETIC,
            "vm-emulated": cls.VM_EMULATED,
            "external": cls.EXTERNAL,
            "internal": cls.INTERNAL,
        }
        try:
            return table[text]
        except KeyError:
            raise einval(
                f"unknown port type {text!r} (vm, vm-emulated, external, internal)"
            ) from None


class Packet:
    """A packet the extension created (a clone, a modified copy, an encapsulation, an
    execute): the role of an NBL the Windows extension allocated.

    ``dests`` are the ports it goes to; ``context`` is the extension's completion context (for
    example the reference it holds on the frame it was cloned from), handed back through the
    extension's send-completion hook once the switch has delivered the packet.

    Frames that came from a NIC are not wrapped: the switch hands them to the extension as a
    batch of bytes (an NBL chain) and counts them until the extension completes them.
    """

    __slots__ = ("context", "data", "dests", "source")

    def __init__(
        self,
        data: bytes,
        source: SwitchPort | None = None,
        context: object | None = None,
    ) -> None:
        self.data = data
        self.source = source
        self.dests: list[SwitchPort] = []
        self.context = context

    def __repr__(self) -> str:
        src = self.source.name if self.source is not None else None
        return f"<Packet {len(self.data)} bytes from {src} to {[d.name for d in self.dests]}>"


class NicBackend(Protocol):
    """Where a NIC's frames really go (memory queue, TAP device, AF_PACKET socket)."""

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Frames the switch delivers to this NIC (to the VM, the host, the wire)."""


@dataclass
class Nic:
    """A network adapter connected to a switch port."""

    index: int
    mac: bytes
    mtu: int
    connected: bool = False
    link_up: bool = False
    backend: NicBackend | None = None


@dataclass
class SwitchPort:
    """A port of the vSwitch."""

    id: int
    name: str  # FriendlyName: the OVS-port-name
    type: PortType
    mac: bytes
    mtu: int
    ifindex: int
    nic: Nic
    # what the extension keeps about the port: (datapath, vport) it is bound to, if any
    binding: tuple[Any, Any] | None = None
    rx_frames: int = 0
    rx_dropped: int = 0

    @property
    def operational(self) -> bool:
        """Frames pass only through a connected NIC whose link is up."""
        return self.nic.connected and self.nic.link_up


class SwitchExtension(Protocol):
    """The callbacks of a forwarding extension (what ovsext registered with NDIS)."""

    def check_port_create(self, name: str, port_type: PortType) -> None:
        """Before a port is created (OID_SWITCH_PORT_CREATE): raise NetlinkError to veto it;
        the switch then fails the operation with that error and changes nothing."""

    def check_port_rename(self, port: SwitchPort, new_name: str) -> None:
        """Before a port takes a new FriendlyName (OID_SWITCH_PORT_UPDATED): raise
        NetlinkError to veto it, as for a create."""

    def port_created(self, port: SwitchPort) -> None: ...
    def port_teardown(self, port: SwitchPort) -> None: ...
    def port_deleted(self, port: SwitchPort) -> None: ...
    def port_renamed(self, port: SwitchPort, old_name: str) -> None: ...
    def nic_connected(self, port: SwitchPort) -> None: ...
    def nic_disconnected(self, port: SwitchPort) -> None: ...
    def nic_updated(self, port: SwitchPort, changes: dict[str, object]) -> None: ...
    def ingress_send(self, port: SwitchPort, frames: list[bytes]) -> None:
        """A batch from ``port``: each frame is eventually forwarded as it is
        (:meth:`VSwitch.forward`) or dropped, and completed (:meth:`VSwitch.complete`)."""

    def send_complete(self, packets: list[Packet]) -> None:
        """Packets of the extension's own that :meth:`VSwitch.send` delivered: release them."""

    def forward_complete(self, count: int) -> None:
        """Switch frames :meth:`VSwitch.forward` delivered: complete them to the switch."""

    def egress_receive(self, packets: list[Packet]) -> list[Packet]:
        """The egress path, before delivery (ovsext: pass-through)."""

    def egress_complete(self, packets: list[Packet]) -> None:
        """Egress completion (ovsext: pass-through)."""


@dataclass
class SwitchStats:
    """What the switch counted: delivered frames, frames it dropped itself."""

    delivered: int = 0
    dropped_down: int = 0
    dropped_no_extension: int = 0


def parse_mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or ``-`` separated) to 6 bytes."""
    parts = re.split(r"[:-]", text.strip())
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
        raise einval(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def format_mac(mac: bytes) -> str:
    """6 bytes to ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in mac)


def check_name(name: str) -> None:
    """A FriendlyName: 1-48 characters, letters, digits and ``_.:@+-``."""
    if not 1 <= len(name) <= MAX_FRIENDLY_NAME:
        raise NetlinkError(errno.ERANGE, f"port name {name!r} must be 1 to 48 characters")
    if not _NAME_RE.match(name):
        raise einval(f"port name {name!r} has characters other than letters, digits, _.:@+-")


def check_mtu(mtu: int) -> None:
    """68 to 65535."""
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise NetlinkError(errno.ERANGE, f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")


def check_mac(mac: bytes) -> None:
    """A unicast MAC (not multicast, not all zero)."""
    if len(mac) != 6 or mac[0] & 1 or mac == bytes(6):
        raise einval(f"{format_mac(mac) if len(mac) == 6 else mac!r} is not a unicast MAC")


@dataclass
class VSwitch:
    """The switch: ports by id and by name, the extension, the NICs' backends."""

    name: str = "ovsdp-switch"
    ports: dict[int, SwitchPort] = field(default_factory=dict)
    by_name: dict[str, SwitchPort] = field(default_factory=dict)
    extension: SwitchExtension | None = None
    stats: SwitchStats = field(default_factory=SwitchStats)
    # the host's tunnel endpoint (the VTEP: ovsdp.tunnel.endpoint.TunnelEndpoint), made on first
    # use by ovsdp.tunnel.endpoint.endpoint_of
    tunnel: Any = None
    _next_port_id: int = 1
    _next_nic_index: int = 1
    _next_ifindex: int = 100
    _mac_serial: int = 1
    _outstanding: int = 0

    # -- management operations (the Hyper-V control plane) ------------------------------------

    def attach(self, extension: SwitchExtension) -> None:
        """Attach the extension; it learns the existing ports and NICs (as on activation)."""
        self.extension = extension
        for port in list(self.ports.values()):
            extension.port_created(port)
            if port.nic.connected:
                extension.nic_connected(port)

    def allocate_ifindex(self) -> int:
        """An interface index for a port or a datapath (never reused)."""
        index = self._next_ifindex
        self._next_ifindex += 1
        return index

    def _default_mac(self) -> bytes:
        # Hyper-V's dynamic MAC range prefix 00:15:5d, a serial in the last three bytes,
        # skipping addresses ports already have
        used = {port.mac for port in self.ports.values()}
        while True:
            serial = self._mac_serial
            self._mac_serial += 1
            mac = bytes(
                (0x00, 0x15, 0x5D, (serial >> 16) & 0xFF, (serial >> 8) & 0xFF, serial & 0xFF)
            )
            if mac not in used:
                return mac

    def port(self, name: str) -> SwitchPort:
        """The port with this FriendlyName (ENODEV if none)."""
        port = self.by_name.get(name)
        if port is None:
            raise NetlinkError(errno.ENODEV, f"the switch has no port named {name!r}")
        return port

    def add_port(
        self,
        name: str,
        port_type: PortType,
        *,
        mac: bytes | None = None,
        mtu: int = DEFAULT_MTU,
        connect: bool = True,
        backend: NicBackend | None = None,
    ) -> SwitchPort:
        """Create a port and its NIC; connect the NIC unless told not to.  The extension may
        veto it (its error is raised, nothing changes)."""
        check_name(name)
        check_mtu(mtu)
        if name in self.by_name:
            raise NetlinkError(errno.EEXIST, f"the switch already has a port named {name!r}")
        if mac is not None:
            check_mac(mac)
        if self.extension is not None:
            self.extension.check_port_create(name, port_type)
        if mac is None:
            mac = self._default_mac()
        nic = Nic(self._next_nic_index, mac, mtu, backend=backend)
        self._next_nic_index += 1
        port = SwitchPort(
            self._next_port_id, name, port_type, mac, mtu, self.allocate_ifindex(), nic
        )
        self._next_port_id += 1
        self.ports[port.id] = port
        self.by_name[name] = port
        if self.extension is not None:
            self.extension.port_created(port)
        if connect:
            self.connect_nic(name)
        return port

    def delete_port(self, name: str) -> SwitchPort:
        """Disconnect the NIC (if connected), tear the port down, delete it."""
        port = self.port(name)
        if port.nic.connected:
            self.disconnect_nic(name)
        if self.extension is not None:
            self.extension.port_teardown(port)
        del self.ports[port.id]
        del self.by_name[port.name]
        if self.extension is not None:
            self.extension.port_deleted(port)
        return port

    def connect_nic(self, name: str) -> SwitchPort:
        """Connect the port's NIC (its link comes up with it); EALREADY if connected."""
        port = self.port(name)
        if port.nic.connected:
            raise NetlinkError(errno.EALREADY, f"the NIC of {name!r} is already connected")
        port.nic.connected = True
        port.nic.link_up = True
        if self.extension is not None:
            self.extension.nic_connected(port)
        return port

    def disconnect_nic(self, name: str) -> SwitchPort:
        """Disconnect the port's NIC; ENOTCONN if it is not connected."""
        port = self.port(name)
        if not port.nic.connected:
            raise NetlinkError(errno.ENOTCONN, f"the NIC of {name!r} is not connected")
        port.nic.connected = False
        port.nic.link_up = False
        if self.extension is not None:
            self.extension.nic_disconnected(port)
        return port

    def set_link(self, name: str, up: bool) -> SwitchPort:
        """Link up or down on a connected NIC (ENOTCONN otherwise); no change, no event."""
        port = self.port(name)
        if not port.nic.connected:
            raise NetlinkError(errno.ENOTCONN, f"the NIC of {name!r} is not connected")
        if port.nic.link_up != up:
            port.nic.link_up = up
            if self.extension is not None:
                self.extension.nic_updated(port, {"link_up": up})
        return port

    def update_port(
        self,
        name: str,
        *,
        mtu: int | None = None,
        mac: bytes | None = None,
        new_name: str | None = None,
    ) -> SwitchPort:
        """Change MTU, MAC or FriendlyName; everything is checked (and a rename offered to the
        extension, which may veto it) before anything changes."""
        port = self.port(name)
        if mtu is not None:
            check_mtu(mtu)
        if mac is not None:
            check_mac(mac)
        if new_name is not None and new_name != name:
            check_name(new_name)
            if new_name in self.by_name:
                raise NetlinkError(
                    errno.EEXIST, f"the switch already has a port named {new_name!r}"
                )
            if self.extension is not None:
                self.extension.check_port_rename(port, new_name)
        changes: dict[str, object] = {}
        if mtu is not None and mtu != port.mtu:
            port.mtu = port.nic.mtu = mtu
            changes["mtu"] = mtu
        if mac is not None and mac != port.mac:
            port.mac = port.nic.mac = mac
            changes["mac"] = mac
        if changes and self.extension is not None:
            self.extension.nic_updated(port, changes)
        if new_name is not None and new_name != name:
            del self.by_name[name]
            port.name = new_name
            self.by_name[new_name] = port
            if self.extension is not None:
                self.extension.port_renamed(port, name)
        return port

    def set_backend(self, name: str, backend: NicBackend | None) -> None:
        """Plug a NIC backend (where the port's frames really go) into a port."""
        self.port(name).nic.backend = backend

    # -- the data path --------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Packets handed to the extension and not completed yet (0 once traffic stops)."""
        return self._outstanding

    def receive(self, port: SwitchPort, frames: list[bytes]) -> None:
        """Frames a NIC received (from its VM, the host or the wire): the ingress send path."""
        if not port.operational:
            port.rx_dropped += len(frames)
            self.stats.dropped_down += len(frames)
            return
        port.rx_frames += len(frames)
        extension = self.extension
        if extension is None:
            self.stats.dropped_no_extension += len(frames)
            return
        self._outstanding += len(frames)
        extension.ingress_send(port, frames)

    def _deliver(self, port: SwitchPort, frames: list[bytes]) -> None:
        backend = port.nic.backend
        if not port.operational or backend is None:
            self.stats.dropped_down += len(frames)
            return
        backend.transmit(frames)
        self.stats.delivered += len(frames)

    def forward(self, port: SwitchPort, frames: list[bytes]) -> None:
        """The extension forwards switch frames, unchanged, to one port: delivery, then the
        send-completion hook hands them back (``forward_complete``)."""
        extension = self.extension
        assert extension is not None, "only an attached extension forwards"
        self._deliver(port, frames)
        extension.forward_complete(len(frames))

    def send(self, packets: list[Packet]) -> None:
        """The extension sends packets it created to their ``dests``: egress, delivery, then
        send completion back to the extension (synchronously, as every send completes)."""
        extension = self.extension
        assert extension is not None, "only an attached extension sends"
        delivered = extension.egress_receive(packets)
        by_port: dict[int, tuple[SwitchPort, list[bytes]]] = {}
        for packet in delivered:
            for port in packet.dests:
                entry = by_port.get(port.id)
                if entry is None:
                    by_port[port.id] = (port, [packet.data])
                else:
                    entry[1].append(packet.data)
        for port, frames in by_port.values():
            self._deliver(port, frames)
        extension.egress_complete(delivered)
        extension.send_complete(packets)

    def complete(self, count: int) -> None:
        """The extension is done with ``count`` frames the switch gave it (sent or dropped)."""
        self._outstanding -= count

    def ports_sorted(self) -> list[SwitchPort]:
        """Ports in creation order."""
        return [self.ports[i] for i in sorted(self.ports)]
