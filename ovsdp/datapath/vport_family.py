"""The ``ovs_vport`` family (NEW / DEL / GET / SET and dump) and the port events it carries."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

from ..netlink.constants import DP_MAX_PORTS, OVS_VPORT_MCGROUP, VportCmd
from ..netlink.errors import NetlinkError, einval
from ..netlink.families import OVS_VPORT
from ..netlink.message import GenlMessage, encode_genl
from ..netlink.structs import OvsVportStats
from ..ports.vport import Vport
from ..pseudodev.device import Device, Request
from ..pseudodev.registry import Command, Family, Reply
from ..vswitch.switch import SwitchPort
from .datapath import Datapath
from .extension import OVSP_NONE, OvsExtension, vport_type_for


def vport_attrs(dp: Datapath, vport: Vport) -> dict[str, Any]:
    """What a vport reply or event carries (the kernel's ovs_vport_cmd_fill_info)."""
    pids = vport.upcall_pids if dp.vport_pids else vport.upcall_pids[:1]
    attrs: dict[str, Any] = {
        "port_no": vport.port_no,
        "type": int(vport.type),
        "name": vport.name,
        "upcall_pid": pids,
        "stats": OvsVportStats(*vport.stats.as_tuple()),
        "upcall_stats": {"success": vport.upcall_success, "fail": vport.upcall_fail},
    }
    if vport.ifindex:
        attrs["ifindex"] = vport.ifindex
    if vport.is_tunnel:
        attrs["options"] = {"dst_port": vport.dst_port or 0}
    return attrs


class VportFamily:
    """Handlers of ovs_vport, and the sink of the extension's port events."""

    def __init__(self, extension: OvsExtension) -> None:
        self.extension = extension
        self.device: Device | None = None
        self.family = Family.from_codec(
            OVS_VPORT,
            [
                Command(
                    VportCmd.NEW,
                    "NEW",
                    do=self.new,
                    mutating=True,
                    required=("name", "type", "upcall_pid"),
                    reply=Reply.ECHO,
                ),
                Command(VportCmd.DEL, "DEL", do=self.delete, mutating=True, reply=Reply.ECHO),
                Command(VportCmd.GET, "GET", do=self.get, dump=self.dump),
                Command(VportCmd.SET, "SET", do=self.set, mutating=True, reply=Reply.ECHO),
            ],
        )
        extension.events = self

    def register(self, device: Device) -> Family:
        self.device = device
        return device.register(self.family)

    # -- events (the extension's PortEvents) ---------------------------------------------------

    def _multicast(
        self, cmd: int, dp_ifindex: int, attrs: dict[str, Any], exclude_pid: int | None = None
    ) -> None:
        if self.device is None:
            return
        family = self.family
        msg = GenlMessage(family.id, 0, 0, 0, cmd, family.version, dp_ifindex, attrs)
        self.device.multicast(
            family.group_ids[OVS_VPORT_MCGROUP], encode_genl(msg, family.genl), exclude_pid
        )

    def vport_event(self, dp: Datapath, cmd: int, vport: Vport) -> None:
        """A switch-side change of a bound vport, to the ovs_vport group."""
        self._multicast(cmd, dp.ifindex, vport_attrs(dp, vport))

    def switch_port_event(self, dp: Datapath, port: SwitchPort) -> None:
        """A switch port no vport holds appeared: NEW with port_no 65535, for userspace."""
        attrs = {
            "port_no": OVSP_NONE,
            "type": int(vport_type_for(port)),
            "name": port.name[:15],
            "upcall_pid": (0,),
            "ifindex": port.ifindex,
        }
        self._multicast(VportCmd.NEW, dp.ifindex, attrs)

    # -- handlers -------------------------------------------------------------------------------

    def _reply(self, request: Request, cmd: int, dp: Datapath, vport: Vport) -> GenlMessage:
        return request.reply(cmd, vport_attrs(dp, vport), dp.ifindex)

    def _notify(self, request: Request, cmd: int, dp: Datapath, attrs: dict[str, Any]) -> None:
        self._multicast(cmd, dp.ifindex, attrs, request.pid if request.echo else None)

    def _lookup(self, request: Request) -> tuple[Datapath, Vport]:
        """By name (dp_ifindex 0 or matching), else by dp_ifindex and port number."""
        attrs = request.attrs
        dp_ifindex = request.msg.dp_ifindex or 0
        name = attrs.get("name")
        if name is not None:
            found = self.extension.find_vport(name)
            if found is None or (dp_ifindex and found[0].ifindex != dp_ifindex):
                raise NetlinkError(errno.ENODEV, f"no port named {name}")
            return found
        port_no = attrs.get("port_no")
        if port_no is None:
            raise einval("a port is named by OVS_VPORT_ATTR_NAME or by dp_ifindex and PORT_NO")
        if port_no >= DP_MAX_PORTS:
            raise NetlinkError(errno.EFBIG, f"port number {port_no} is not below {DP_MAX_PORTS}")
        dp = self.extension.datapath(None, dp_ifindex)
        vport = dp.vports.get(port_no)
        if vport is None:
            raise NetlinkError(errno.ENODEV, f"datapath {dp.name} has no port {port_no}")
        return dp, vport

    def new(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        dp = self.extension.datapath(None, request.msg.dp_ifindex or 0)
        port_no = attrs.get("port_no") or None
        vport = self.extension.add_vport(
            dp,
            attrs["name"],
            attrs["type"],
            attrs["upcall_pid"],
            port_no,
            attrs.get("options"),
            attrs.get("ifindex"),
        )
        reply = vport_attrs(dp, vport)
        self._notify(request, VportCmd.NEW, dp, reply)
        return [request.reply(VportCmd.NEW, reply, dp.ifindex)]

    def delete(self, request: Request) -> list[GenlMessage]:
        dp, vport = self._lookup(request)
        before = vport_attrs(dp, vport)  # the reply shows the port as it was
        self.extension.delete_vport(dp, vport)
        self._notify(request, VportCmd.DEL, dp, before)
        return [request.reply(VportCmd.DEL, before, dp.ifindex)]

    def get(self, request: Request) -> list[GenlMessage]:
        dp, vport = self._lookup(request)
        return [self._reply(request, VportCmd.GET, dp, vport)]

    def dump(self, request: Request) -> Iterator[GenlMessage]:
        dp = self.extension.datapath(None, request.msg.dp_ifindex or 0)
        for _slot, vport in dp.vports.iter_from(0):
            yield self._reply(request, VportCmd.GET, dp, vport)

    def set(self, request: Request) -> list[GenlMessage]:
        dp, vport = self._lookup(request)
        attrs = request.attrs
        self.extension.set_vport(
            dp, vport, attrs.get("type"), attrs.get("upcall_pid"), attrs.get("options")
        )
        reply = vport_attrs(dp, vport)
        self._notify(request, VportCmd.SET, dp, reply)
        return [request.reply(VportCmd.SET, reply, dp.ifindex)]
