"""``ovsdp_vswitch``: the switch's management operations on the pseudo-device.

What the Hyper-V control plane does to its switch (PowerShell's Add-VMNetworkAdapter,
Connect-VMNetworkAdapter, Rename-VMNetworkAdapter, ...), as a generic-netlink family, so
``ovsdp vswitch`` and tests can drive it.  Every change reaches the datapath extension through
the switch's callbacks, exactly as if Hyper-V had made it.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Iterator
from typing import Any

from ..netlink.errors import NetlinkError, einval
from ..netlink.message import GenlMessage
from ..pseudodev.device import Device, Request
from ..pseudodev.registry import Command, Family, Reply
from .memory import MemoryBackend
from .switch import PortType, SwitchPort, VSwitch

VSWITCH_FAMILY = "ovsdp_vswitch"
VSWITCH_VERSION = 1


class VSwitchCmd(enum.IntEnum):
    """Commands of the management family."""

    ADD_PORT = 1
    DEL_PORT = 2
    CONNECT = 3
    DISCONNECT = 4
    SET_LINK = 5
    SET_PORT = 6
    GET_PORT = 7
    INJECT = 8
    TAKE = 9


MAX_INJECT = 65536  # frames one INJECT may repeat
MAX_TAKE = 1024  # frames one TAKE returns (ask again for more)


def port_attrs(port: SwitchPort) -> dict[str, Any]:
    """What a port reply carries."""
    attrs: dict[str, Any] = {
        "name": port.name,
        "port_type": int(port.type),
        "port_id": port.id,
        "mac": port.mac,
        "mtu": port.mtu,
        "connected": int(port.nic.connected),
        "link_up": int(port.nic.link_up),
        "ifindex": port.ifindex,
        "rx_frames": port.rx_frames,
        "rx_dropped": port.rx_dropped,
    }
    backend = port.nic.backend
    if isinstance(backend, MemoryBackend):
        attrs["backend"] = "memory"
        attrs["tx_frames"] = backend.transmitted
    if port.binding is not None:
        dp, vport = port.binding
        attrs["datapath"] = dp.name
        attrs["port_no"] = vport.port_no
    return attrs


class VSwitchFamily:
    """Handlers of ovsdp_vswitch over a :class:`VSwitch`."""

    def __init__(self, switch: VSwitch) -> None:
        self.switch = switch
        cmds = [
            Command(
                VSwitchCmd.ADD_PORT,
                "ADD_PORT",
                do=self.add_port,
                mutating=True,
                required=("name", "port_type"),
                reply=Reply.ECHO,
            ),
            Command(
                VSwitchCmd.DEL_PORT,
                "DEL_PORT",
                do=self.del_port,
                mutating=True,
                required=("name",),
                reply=Reply.ECHO,
            ),
            Command(
                VSwitchCmd.CONNECT,
                "CONNECT",
                do=self.connect,
                mutating=True,
                required=("name",),
                reply=Reply.ECHO,
            ),
            Command(
                VSwitchCmd.DISCONNECT,
                "DISCONNECT",
                do=self.disconnect,
                mutating=True,
                required=("name",),
                reply=Reply.ECHO,
            ),
            Command(
                VSwitchCmd.SET_LINK,
                "SET_LINK",
                do=self.set_link,
                mutating=True,
                required=("name", "link_up"),
                reply=Reply.ECHO,
            ),
            Command(
                VSwitchCmd.SET_PORT,
                "SET_PORT",
                do=self.set_port,
                mutating=True,
                required=("name",),
                reply=Reply.ECHO,
            ),
            Command(
                VSwitchCmd.GET_PORT,
                "GET_PORT",
                do=self.get_port,
                dump=self.dump_ports,
                required=("name",),
            ),
            Command(
                VSwitchCmd.INJECT,
                "INJECT",
                do=self.inject,
                mutating=True,
                required=("name", "frame"),
                reply=Reply.ECHO,
            ),
            Command(VSwitchCmd.TAKE, "TAKE", do=self.take, mutating=True, required=("name",)),
        ]
        self.family = Family(
            VSWITCH_FAMILY, VSWITCH_VERSION, 0, "ovsdp_vswitch", {c.cmd: c for c in cmds}
        )

    def register(self, device: Device) -> Family:
        return device.register(self.family)

    def _reply(self, request: Request, cmd: int, port: SwitchPort) -> list[GenlMessage]:
        return [request.reply(cmd, port_attrs(port))]

    def add_port(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        try:
            ptype = PortType(attrs["port_type"])
        except ValueError:
            raise einval(f"unknown port type {attrs['port_type']}") from None
        port = self.switch.add_port(
            attrs["name"],
            ptype,
            mac=attrs.get("mac"),
            mtu=attrs.get("mtu", 1500),
            connect=bool(attrs.get("connected", 1)),
            backend=MemoryBackend(),
        )
        return self._reply(request, VSwitchCmd.ADD_PORT, port)

    def del_port(self, request: Request) -> list[GenlMessage]:
        port = self.switch.port(request.attrs["name"])
        before = port_attrs(port)
        self.switch.delete_port(port.name)
        return [request.reply(VSwitchCmd.DEL_PORT, before)]

    def connect(self, request: Request) -> list[GenlMessage]:
        port = self.switch.connect_nic(request.attrs["name"])
        return self._reply(request, VSwitchCmd.CONNECT, port)

    def disconnect(self, request: Request) -> list[GenlMessage]:
        port = self.switch.disconnect_nic(request.attrs["name"])
        return self._reply(request, VSwitchCmd.DISCONNECT, port)

    def set_link(self, request: Request) -> list[GenlMessage]:
        up = request.attrs["link_up"]
        if up not in (0, 1):
            raise einval(f"link_up must be 0 or 1, not {up}")
        port = self.switch.set_link(request.attrs["name"], bool(up))
        return self._reply(request, VSwitchCmd.SET_LINK, port)

    def set_port(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        if not {"mtu", "mac", "new_name"} & set(attrs):
            raise einval("SET_PORT needs mtu, mac or new_name")
        port = self.switch.update_port(
            attrs["name"],
            mtu=attrs.get("mtu"),
            mac=attrs.get("mac"),
            new_name=attrs.get("new_name"),
        )
        return self._reply(request, VSwitchCmd.SET_PORT, port)

    def get_port(self, request: Request) -> list[GenlMessage]:
        return self._reply(request, VSwitchCmd.GET_PORT, self.switch.port(request.attrs["name"]))

    def dump_ports(self, request: Request) -> Iterator[GenlMessage]:
        for port_id in sorted(self.switch.ports):
            port = self.switch.ports.get(port_id)
            if port is not None:
                yield request.reply(VSwitchCmd.GET_PORT, port_attrs(port))

    def inject(self, request: Request) -> list[GenlMessage]:
        """Frames as if the port's NIC had received them (``count`` copies, in one batch)."""
        attrs = request.attrs
        port = self.switch.port(attrs["name"])
        frame = attrs["frame"]
        count = attrs.get("count", 1)
        if not 1 <= count <= MAX_INJECT:
            raise einval(f"count {count} is outside 1..{MAX_INJECT}")
        if not 14 <= len(frame) <= 65535:
            raise einval(f"a frame of {len(frame)} bytes (14 to 65535)")
        if not port.operational:
            raise NetlinkError(errno.ENETDOWN, f"port {port.name}'s NIC is not connected and up")
        self.switch.receive(port, [frame] * count)
        return self._reply(request, VSwitchCmd.INJECT, port)

    def take(self, request: Request) -> list[GenlMessage]:
        """Remove and return the frames a memory-backed port received (oldest first)."""
        attrs = request.attrs
        backend = memory_backend(self.switch, attrs["name"])
        count = attrs.get("count", MAX_TAKE)
        if not 1 <= count <= MAX_TAKE:
            raise einval(f"count {count} is outside 1..{MAX_TAKE}")
        return [
            request.reply(VSwitchCmd.TAKE, {"name": attrs["name"], "frame": frame})
            for frame in backend.take(count)
        ]


def memory_backend(switch: VSwitch, name: str) -> MemoryBackend:
    """The memory backend of a port (ENODEV: no port; EOPNOTSUPP: another backend)."""
    backend = switch.port(name).nic.backend
    if not isinstance(backend, MemoryBackend):
        raise NetlinkError(errno.EOPNOTSUPP, f"port {name} is not memory-backed")
    return backend
