"""``ovsdp_vswitch``: the switch's management operations on the pseudo-device.

What the Hyper-V control plane does to its switch (PowerShell's Add-VMNetworkAdapter,
Connect-VMNetworkAdapter, Rename-VMNetworkAdapter, ...), as a generic-netlink family, so
``ovsdp vswitch`` and tests can drive it.  Every change reaches the datapath extension through
the switch's callbacks, exactly as if Hyper-V had made it.

The VTEP address is a property of the internal port (``SET_PORT`` with ``ipv4_address`` and
``ipv4_prefix``; ``GET_PORT`` shows it).  The rest of the host's tunnel endpoint -- gateway,
uplink, neighbour table, counters -- is the companion family ``ovsdp_tunnel`` (docs/tunnel.md),
registered with this one.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable, Iterator
from typing import Any

from construct import Bytes, Int8ub, Int32ub, Int64ul

from ..netlink.codec import CODECS, compile_new_spaces
from ..netlink.errors import NetlinkError, einval
from ..netlink.message import GenlMessage
from ..netlink.nla import AttributeSpace, Nested, NulString
from ..pseudodev.device import Device, Request
from ..pseudodev.registry import Command, Family, Reply
from ..tunnel.endpoint import STAT_NAMES, TunnelEndpoint, check_unicast, endpoint_of
from .memory import MemoryBackend
from .switch import PortType, SwitchPort, VSwitch, check_mac

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


def port_attrs(port: SwitchPort, endpoint: TunnelEndpoint | None = None) -> dict[str, Any]:
    """What a port reply carries (with the VTEP address if ``port`` is the endpoint's VTEP)."""
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
    if endpoint is not None and endpoint.routes.address and endpoint.vtep_port() is port:
        attrs["ipv4_address"] = endpoint.routes.address
        attrs["ipv4_prefix"] = endpoint.routes.prefix
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
        """Register the family, and its companion ovsdp_tunnel after it."""
        family = device.register(self.family)
        TunnelFamily(self.switch).register(device)
        return family

    def _reply(self, request: Request, cmd: int, port: SwitchPort) -> list[GenlMessage]:
        return [request.reply(cmd, port_attrs(port, endpoint_of(self.switch)))]

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
        before = port_attrs(port, endpoint_of(self.switch))
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
        if not {"mtu", "mac", "new_name", "ipv4_address"} & set(attrs):
            raise einval("SET_PORT needs mtu, mac, new_name or ipv4_address")
        vtep = self._vtep_change(attrs) if "ipv4_address" in attrs else None
        port = self.switch.port(attrs["name"])
        if {"mtu", "mac", "new_name"} & set(attrs):
            port = self.switch.update_port(
                attrs["name"],
                mtu=attrs.get("mtu"),
                mac=attrs.get("mac"),
                new_name=attrs.get("new_name"),
            )
        if vtep is not None:
            vtep(port)
        return self._reply(request, VSwitchCmd.SET_PORT, port)

    def _vtep_change(self, attrs: dict[str, Any]) -> Callable[[SwitchPort], None]:
        """Check a change of the VTEP address (the internal port's ``ipv4_address``; 0: none)
        before anything changes; the function that makes it."""
        port = self.switch.port(attrs["name"])
        endpoint = endpoint_of(self.switch)
        address = attrs["ipv4_address"]
        prefix = attrs.get("ipv4_prefix")
        if port.type is not PortType.INTERNAL:
            raise einval(f"{port.name} is {port.type.label}: only the internal port holds the VTEP")
        if address:
            if prefix is None:
                raise einval("ipv4_address needs ipv4_prefix")
            if prefix > 32:
                raise einval(f"prefix length {prefix} is outside 0..32")
            try:
                check_unicast(address)
            except ValueError as exc:
                raise einval(str(exc)) from None

        def change(port: SwitchPort) -> None:
            if address:
                endpoint.set_vtep(address, prefix or 0, port.name)
            elif endpoint.vtep_port() is port:
                endpoint.set_vtep(0, endpoint.routes.prefix, endpoint.vtep_port_name)

        return change

    def get_port(self, request: Request) -> list[GenlMessage]:
        return self._reply(request, VSwitchCmd.GET_PORT, self.switch.port(request.attrs["name"]))

    def dump_ports(self, request: Request) -> Iterator[GenlMessage]:
        for port_id in sorted(self.switch.ports):
            port = self.switch.ports.get(port_id)
            if port is not None:
                yield request.reply(VSwitchCmd.GET_PORT, port_attrs(port, endpoint_of(self.switch)))

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


# -- ovsdp_tunnel: the host's tunnel endpoint ---------------------------------------------------

TUNNEL_FAMILY = "ovsdp_tunnel"
TUNNEL_VERSION = 1


class TunnelCmd(enum.IntEnum):
    """Commands of the tunnel endpoint family."""

    GET = 1  # the endpoint: VTEP port, address, MAC, gateway, uplink, counters
    SET = 2  # gateway and/or uplink
    ADD_NEIGHBOUR = 3  # a static neighbour
    DEL_NEIGHBOUR = 4  # forget a neighbour (static or learned)
    GET_NEIGHBOUR = 5  # one neighbour, or all of them (dump)


ovsdp_tunnel_stats = AttributeSpace(
    "ovsdp_tunnel_stats", {number: name / Int64ul for number, name in enumerate(STAT_NAMES, 1)}
)
ovsdp_tunnel = AttributeSpace(
    "ovsdp_tunnel",
    {
        1: "port" / NulString(48),  # the VTEP (internal) port
        2: "ipv4_address" / Int32ub,  # the VTEP address, or a neighbour's
        3: "ipv4_prefix" / Int8ub,
        4: "mac" / Bytes(6),  # the VTEP's MAC, or a neighbour's
        5: "gateway" / Int32ub,  # 0: no default route
        6: "uplink" / NulString(48),  # the external port ("" in SET: the first one)
        7: "state" / NulString(16),  # a neighbour's: static, reachable, incomplete, expired
        8: "age_ms" / Int64ul,  # a neighbour's: since its last confirmation (or first request)
        9: "stats" / Nested("ovsdp_tunnel_stats"),
    },
)
if TUNNEL_FAMILY not in CODECS:
    compile_new_spaces()


class TunnelFamily:
    """Handlers of ovsdp_tunnel over the switch's :class:`TunnelEndpoint`."""

    def __init__(self, switch: VSwitch) -> None:
        self.switch = switch
        cmds = [
            Command(TunnelCmd.GET, "GET", do=self.get),
            Command(TunnelCmd.SET, "SET", do=self.set, mutating=True, reply=Reply.ECHO),
            Command(
                TunnelCmd.ADD_NEIGHBOUR,
                "ADD_NEIGHBOUR",
                do=self.add_neighbour,
                mutating=True,
                required=("ipv4_address", "mac"),
                reply=Reply.ECHO,
            ),
            Command(
                TunnelCmd.DEL_NEIGHBOUR,
                "DEL_NEIGHBOUR",
                do=self.del_neighbour,
                mutating=True,
                required=("ipv4_address",),
                reply=Reply.ECHO,
            ),
            Command(
                TunnelCmd.GET_NEIGHBOUR,
                "GET_NEIGHBOUR",
                do=self.get_neighbour,
                dump=self.dump_neighbours,
                required=("ipv4_address",),
            ),
        ]
        self.family = Family(
            TUNNEL_FAMILY, TUNNEL_VERSION, 0, TUNNEL_FAMILY, {c.cmd: c for c in cmds}
        )

    @property
    def endpoint(self) -> TunnelEndpoint:
        return endpoint_of(self.switch)

    def register(self, device: Device) -> Family:
        return device.register(self.family)

    def _endpoint_attrs(self) -> dict[str, Any]:
        endpoint = self.endpoint
        attrs: dict[str, Any] = {}
        vtep = endpoint.vtep_port()
        if vtep is not None:
            attrs["port"] = vtep.name
            attrs["mac"] = vtep.mac
        if endpoint.routes.address:
            attrs["ipv4_address"] = endpoint.routes.address
            attrs["ipv4_prefix"] = endpoint.routes.prefix
        attrs["gateway"] = endpoint.routes.gateway
        uplink = endpoint.uplink()
        if uplink is not None:
            attrs["uplink"] = uplink.name
        attrs["stats"] = endpoint.stats()
        return attrs

    def get(self, request: Request) -> list[GenlMessage]:
        return [request.reply(TunnelCmd.GET, self._endpoint_attrs())]

    def set(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        if not {"gateway", "uplink"} & set(attrs):
            raise einval("SET needs gateway or uplink")
        uplink = attrs.get("uplink")
        if uplink:
            port = self.switch.port(uplink)
            if port.type is not PortType.EXTERNAL:
                raise einval(f"{uplink} is {port.type.label}, not an external port")
        gateway = attrs.get("gateway")
        try:
            if gateway is not None:
                self.endpoint.set_gateway(gateway)
        except ValueError as exc:
            raise einval(str(exc)) from None
        if uplink is not None:
            self.endpoint.set_uplink(uplink or None)
        return [request.reply(TunnelCmd.SET, self._endpoint_attrs())]

    def _neighbour_attrs(self, ip: int) -> dict[str, Any]:
        endpoint = self.endpoint
        entry = endpoint.neighbours.entries.get(ip)
        if entry is None:
            raise NetlinkError(errno.ENOENT, f"no neighbour {ip_text(ip)}")
        now = endpoint.clock()
        attrs: dict[str, Any] = {
            "ipv4_address": ip,
            "state": entry.state(now, endpoint.neighbours.lifetime),
        }
        if entry.mac is not None:
            attrs["mac"] = entry.mac
        if not entry.static:
            attrs["age_ms"] = max(0, int((now - entry.confirmed) * 1000))
        return attrs

    def add_neighbour(self, request: Request) -> list[GenlMessage]:
        ip, mac = request.attrs["ipv4_address"], request.attrs["mac"]
        check_mac(mac)
        try:
            self.endpoint.add_neighbour(ip, mac)
        except ValueError as exc:
            raise einval(str(exc)) from None
        return [request.reply(TunnelCmd.ADD_NEIGHBOUR, self._neighbour_attrs(ip))]

    def del_neighbour(self, request: Request) -> list[GenlMessage]:
        ip = request.attrs["ipv4_address"]
        before = self._neighbour_attrs(ip)
        self.endpoint.remove_neighbour(ip)
        return [request.reply(TunnelCmd.DEL_NEIGHBOUR, before)]

    def get_neighbour(self, request: Request) -> list[GenlMessage]:
        ip = request.attrs["ipv4_address"]
        return [request.reply(TunnelCmd.GET_NEIGHBOUR, self._neighbour_attrs(ip))]

    def dump_neighbours(self, request: Request) -> Iterator[GenlMessage]:
        for ip in sorted(self.endpoint.neighbours.entries):
            if ip in self.endpoint.neighbours.entries:
                yield request.reply(TunnelCmd.GET_NEIGHBOUR, self._neighbour_attrs(ip))


def ip_text(value: int) -> str:
    return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))
