"""The forwarding extension: datapaths plugged into the emulated Hyper-V switch.

:class:`OvsExtension` plays ovsext's part: it owns the datapaths, binds the vports userspace adds
to switch ports by FriendlyName, follows the switch's port and NIC callbacks, and turns them into
port events (reported through :class:`PortEvents`, which the netlink layer implements).

The two sides can disagree; what happens then (Windows' state machine, reference §2.4, and where
ovsdp does better) is in docs/vswitch.md:

* a switch port userspace never added: its traffic is dropped and counted by the switch; when it
  appears, each datapath gets a vport NEW event with port_no 65535 and its name, so userspace
  can add it (Windows sent nothing and made userspace retry blindly);
* userspace adds a port the switch does not have: ENODEV (Linux's errno for "no such device";
  Windows answered EINVAL);
* the switch deletes (or renames) a bound port: the vport stays, ABSENT, with its number and name,
  and a DEL event goes out; when a port with that name comes back with a compatible type it is
  bound again in place (NEW event on connect);
* userspace deletes a vport: the switch port stays and can be added again.

Names are one namespace, as net device names are on Linux.  Like ovsext failing an
OID_SWITCH_PORT_CREATE or OID_SWITCH_PORT_UPDATED, the extension vetoes (EEXIST, with the
reason) a switch port created or renamed to the name of a datapath, of a tunnel vport, or of an
ABSENT vport it could not bind to (an incompatible type: Windows refused those too); so every
port the switch announces (port_no 65535) can be added.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any, Protocol

from ..netlink.constants import DP_MAX_PORTS, OVS_VXLAN_DEFAULT_PORT, VportCmd, VportType
from ..netlink.errors import NetlinkError, einval
from ..ports.vport import SWITCH_TYPES, Vport, VportState
from ..vswitch.switch import Packet, PortType, SwitchPort, VSwitch
from .datapath import Datapath, check_features, check_ifname, check_masks_cache_size

OVSP_NONE = 0xFFFF  # port number in an event about a switch port no datapath holds


class PortEvents(Protocol):
    """Where port events go (the ovs_vport multicast group)."""

    def vport_event(self, dp: Datapath, cmd: int, vport: Vport) -> None:
        """A vport of ``dp`` appeared (NEW), went down or away (DEL) or changed (SET)."""

    def switch_port_event(self, dp: Datapath, port: SwitchPort) -> None:
        """A switch port named like no vport of ``dp`` appeared (NEW, port_no 65535)."""


def vport_type_for_type(port_type: PortType) -> VportType:
    """The vport type a switch port type binds as: the host vNIC is internal, the rest netdev."""
    return VportType.INTERNAL if port_type is PortType.INTERNAL else VportType.NETDEV


def vport_type_for(port: SwitchPort) -> VportType:
    """The vport type a switch port binds as (:func:`vport_type_for_type`)."""
    return vport_type_for_type(port.type)


def _binds_as(vport_type: VportType) -> str:
    return "internal (host vNIC)" if vport_type is VportType.INTERNAL else "VM or external"


class OvsExtension:
    """The datapaths and their binding to the switch."""

    def __init__(self, switch: VSwitch, events: PortEvents | None = None) -> None:
        self.switch = switch
        self.events = events
        self.datapaths: dict[str, Datapath] = {}
        self.by_ifindex: dict[int, Datapath] = {}
        from .pipeline import Pipeline  # the packet path needs the extension to exist

        self.pipeline = Pipeline(self)
        switch.attach(self)

    # -- datapaths ----------------------------------------------------------------------------

    def datapath(self, name: str | None = None, ifindex: int = 0) -> Datapath:
        """Find a datapath by name, else by ifindex; ENODEV if none."""
        dp = None
        if name is not None:
            dp = self.datapaths.get(name)
            if dp is not None and ifindex and dp.ifindex != ifindex:
                dp = None
        else:
            # dp_ifindex 0 names no datapath: ENODEV, as the kernel's get_dp() finds none
            dp = self.by_ifindex.get(ifindex)
        if dp is None:
            what = repr(name) if name is not None else f"with ifindex {ifindex}"
            raise NetlinkError(errno.ENODEV, f"no datapath {what}")
        return dp

    @staticmethod
    def check_new_datapath(name: str, features: int, masks_cache_size: int | None) -> None:
        """What a new datapath's attributes must satisfy, in the kernel's order (the features and
        the masks cache size, applied by ovs_dp_change, then the local port's name): checked
        before the name is looked up, so these errors win over EEXIST."""
        check_features(features)
        if masks_cache_size is not None:
            check_masks_cache_size(masks_cache_size)
        check_ifname(name, "a datapath")  # its local port is a net device on Linux

    def create_datapath(
        self,
        name: str,
        upcall_pid: int,
        features: int = 0,
        masks_cache_size: int | None = None,
        per_cpu_pids: Sequence[int] | None = None,
    ) -> Datapath:
        """A new datapath with its local port; EEXIST if the name is taken."""
        self.check_new_datapath(name, features, masks_cache_size)
        if name in self.datapaths:
            raise NetlinkError(errno.EEXIST, f"datapath {name} exists")
        self._check_name_free(name)
        if name in self.switch.by_name:
            raise NetlinkError(errno.EEXIST, f"the switch has a port named {name}")
        dp = Datapath(name, self.switch.allocate_ifindex(), upcall_pid, features)
        if masks_cache_size is not None:
            dp.set_masks_cache_size(masks_cache_size)
        if per_cpu_pids and dp.per_cpu_dispatch:
            # Linux ignores PER_CPU_PIDS without DISPATCH_UPCALL_PER_CPU (ovs_dp_change)
            dp.per_cpu_pids = tuple(per_cpu_pids)
        self.datapaths[name] = dp
        self.by_ifindex[dp.ifindex] = dp
        return dp

    def delete_datapath(self, dp: Datapath) -> None:
        """Destroy a datapath: its ports (switch ports are unbound) and flows."""
        for vport in list(dp.vports):
            if vport.port_no != 0:
                self._detach(dp, vport)
        del self.datapaths[dp.name]
        del self.by_ifindex[dp.ifindex]

    def set_datapath(
        self,
        dp: Datapath,
        features: int,
        masks_cache_size: int | None = None,
        per_cpu_pids: Sequence[int] | None = None,
    ) -> None:
        """OVS_DP_CMD_SET: everything checked before anything changes."""
        check_features(features)
        if masks_cache_size is not None:
            check_masks_cache_size(masks_cache_size)
        dp.user_features = features
        if masks_cache_size is not None:
            dp.set_masks_cache_size(masks_cache_size)
        if per_cpu_pids is not None and dp.per_cpu_dispatch:
            # as Linux: ignored (the PIDs kept) unless the new features have per-CPU dispatch
            dp.per_cpu_pids = tuple(per_cpu_pids)

    # -- vports ---------------------------------------------------------------------------------

    def add_vport(
        self,
        dp: Datapath,
        name: str,
        vport_type: int,
        upcall_pids: Sequence[int],
        port_no: int | None = None,
        options: dict[str, Any] | None = None,
        ifindex: int | None = None,
    ) -> Vport:
        """OVS_VPORT_CMD_NEW; everything is checked before the port is added."""
        if not upcall_pids:
            raise einval("OVS_VPORT_ATTR_UPCALL_PID needs at least one PID")
        if port_no is not None and port_no >= DP_MAX_PORTS:
            raise NetlinkError(errno.EFBIG, f"port number {port_no} is not below {DP_MAX_PORTS}")
        bound = self.switch.by_name.get(name)
        if vport_type in SWITCH_TYPES and bound is not None and bound.binding is not None:
            # before the name check, which the bound vport (named like its port) would fail
            other = bound.binding[0].name
            raise NetlinkError(errno.EBUSY, f"switch port {name} is bound to datapath {other}")
        self._check_name_free(name)
        try:
            vtype = VportType(vport_type)
        except ValueError:
            raise NetlinkError(errno.EAFNOSUPPORT, f"unknown vport type {vport_type}") from None
        if vtype not in SWITCH_TYPES and vtype is not VportType.VXLAN:
            raise NetlinkError(
                errno.EAFNOSUPPORT, f"vport type {vtype.name.lower()} is not available in ovsdp"
            )
        if vtype not in SWITCH_TYPES and name in self.switch.by_name:
            # one namespace, as netdev names are on Linux: the switch port keeps its name
            raise NetlinkError(errno.EEXIST, f"the switch has a port named {name}")
        if ifindex is not None and vtype is not VportType.INTERNAL:
            raise NetlinkError(errno.EOPNOTSUPP, "OVS_VPORT_ATTR_IFINDEX is for internal ports")
        if vtype in SWITCH_TYPES:
            if options:
                raise einval(f"{vtype.name.lower()} ports take no options")
            vport = self._switch_vport(name, vtype, upcall_pids)
            if ifindex is not None and ifindex != vport.ifindex:
                raise NetlinkError(
                    errno.EOPNOTSUPP,
                    f"the host vNIC {name} has ifindex {vport.ifindex}, fixed by the switch",
                )
        else:
            vport = self._vxlan_vport(name, upcall_pids, options or {})
            self._check_udp_port_free(vport)
        dp.vports.add(vport, port_no)
        if vport.switch_port is not None:
            vport.switch_port.binding = (dp, vport)
        return vport

    def _switch_vport(self, name: str, vtype: VportType, pids: Sequence[int]) -> Vport:
        port = self.switch.by_name.get(name)
        if port is None:
            raise NetlinkError(
                errno.ENODEV, f"the switch has no port named {name!r} (add it to the switch first)"
            )
        if vport_type_for(port) is not vtype:
            raise einval(
                f"switch port {name} has type {port.type.label}: add it as "
                f"{vport_type_for(port).name.lower()}, not {vtype.name.lower()}"
            )
        if port.binding is not None:
            other = port.binding[0].name
            raise NetlinkError(errno.EBUSY, f"switch port {name} is bound to datapath {other}")
        return Vport(0, name, vtype, tuple(pids), switch_port=port, ifindex=port.ifindex)

    @staticmethod
    def _vxlan_vport(name: str, pids: Sequence[int], options: dict[str, Any]) -> Vport:
        extension = options.get("extension")
        if extension:
            raise NetlinkError(
                errno.EOPNOTSUPP, f"VXLAN extensions {sorted(extension)} are not supported"
            )
        unknown = set(options) - {"dst_port", "extension"}
        if unknown:
            raise einval(f"unknown VXLAN options {sorted(map(str, unknown))}")
        dst_port = options.get("dst_port", OVS_VXLAN_DEFAULT_PORT)
        if not 0 < dst_port < 65536:
            raise einval(f"VXLAN destination port {dst_port} out of range")
        check_ifname(name, "a vxlan port")  # a net device on Linux
        return Vport(
            0, name, VportType.VXLAN, tuple(pids), dst_port=dst_port, options={"dst_port": dst_port}
        )

    def _check_udp_port_free(self, vport: Vport) -> None:
        # The switch has one VTEP: a UDP port delivers to one tunnel vport, whichever datapath
        # holds it (Linux refuses a second vxlan device on the same port with EEXIST too).
        for dp in self.datapaths.values():
            for other in dp.vports.by_tunnel.values():
                if other.dst_port == vport.dst_port:
                    raise NetlinkError(
                        errno.EEXIST,
                        f"UDP port {vport.dst_port} already goes to {other.type.name.lower()} "
                        f"port {other.name} of datapath {dp.name} (one VTEP per switch)",
                    )

    def delete_vport(self, dp: Datapath, vport: Vport) -> None:
        """OVS_VPORT_CMD_DEL (the local port cannot be deleted: EINVAL)."""
        if vport.port_no == 0:
            raise einval("the local port (0) is deleted with its datapath")
        self._detach(dp, vport)

    def _detach(self, dp: Datapath, vport: Vport) -> None:
        dp.vports.remove(vport)
        if vport.switch_port is not None:
            vport.switch_port.binding = None

    def set_vport(
        self,
        dp: Datapath,
        vport: Vport,
        vport_type: int | None,
        upcall_pids: Sequence[int] | None,
        options: dict[str, Any] | None,
    ) -> None:
        """OVS_VPORT_CMD_SET: the type must match; only the upcall PIDs can change."""
        if vport_type is not None and vport_type != vport.type:
            raise einval(f"port {vport.name} is {vport.type.name.lower()}, not type {vport_type}")
        if options is not None:
            raise NetlinkError(errno.EOPNOTSUPP, f"the options of {vport.name} cannot be changed")
        if upcall_pids is not None:
            if not upcall_pids:
                raise einval("OVS_VPORT_ATTR_UPCALL_PID needs at least one PID")
            vport.upcall_pids = tuple(upcall_pids)

    @staticmethod
    def _bound(port: SwitchPort) -> tuple[Datapath, Vport] | None:
        return port.binding

    def _check_name_free(self, name: str) -> None:
        # Port names are one namespace across datapaths, as netdev names are on Linux.
        found = self.find_vport(name)
        if found is not None:
            raise NetlinkError(errno.EEXIST, f"datapath {found[0].name} already has a port {name}")

    def find_vport(self, name: str) -> tuple[Datapath, Vport] | None:
        """The datapath and vport with this name, in any datapath."""
        for dp in self.datapaths.values():
            vport = dp.vports.find(name)
            if vport is not None:
                return dp, vport
        return None

    def _absent_vport_named(self, name: str) -> tuple[Datapath, Vport] | None:
        # (names are one namespace: the vport with that name, if it is ABSENT)
        found = self.find_vport(name)
        return found if found is not None and found[1].state is VportState.ABSENT else None

    def _event(self, dp: Datapath, cmd: int, vport: Vport) -> None:
        if self.events is not None:
            self.events.vport_event(dp, cmd, vport)

    def _appeared(self, port: SwitchPort) -> None:
        # A switch port no vport holds: tell every datapath, so userspace can add it.  Only
        # when the add can succeed: names are one namespace across datapaths.
        if self.events is None or self.find_vport(port.name) is not None:
            return
        for dp in self.datapaths.values():
            self.events.switch_port_event(dp, port)

    def _check_name_for_switch(self, name: str, port_type: PortType) -> None:
        """EEXIST if a switch port named ``name`` (of that type) could never be added."""
        if name in self.datapaths:
            raise NetlinkError(
                errno.EEXIST, f"{name} is the name of a datapath (and of its local port)"
            )
        found = self.find_vport(name)
        if found is None:
            return
        dp, vport = found
        if vport.is_tunnel:
            raise NetlinkError(
                errno.EEXIST,
                f"{name} is the name of {vport.type.name.lower()} port "
                f"{vport.port_no} of datapath {dp.name}",
            )
        if vport.state is VportState.ABSENT and vport.type is not vport_type_for_type(port_type):
            raise NetlinkError(
                errno.EEXIST,
                f"datapath {dp.name} keeps {vport.type.name.lower()} port {vport.port_no} "
                f"named {name} for a {_binds_as(vport.type)} port; the name can go to a port "
                f"of type {port_type.label} once that vport is deleted",
            )

    # -- the switch's callbacks ------------------------------------------------------------------

    def check_port_create(self, name: str, port_type: PortType) -> None:
        """OID_SWITCH_PORT_CREATE, before the port exists: veto (EEXIST) a name the datapaths
        hold (a datapath's, a tunnel vport's, an ABSENT vport's of an incompatible type)."""
        self._check_name_for_switch(name, port_type)

    def check_port_rename(self, port: SwitchPort, new_name: str) -> None:
        """OID_SWITCH_PORT_UPDATED with a new FriendlyName: vetoed as a create would be."""
        self._check_name_for_switch(new_name, port.type)

    def port_created(self, port: SwitchPort) -> None:
        """A port exists on the switch: bind an ABSENT vport of that name back, in place."""
        found = self._absent_vport_named(port.name)
        if found is None:
            self._appeared(port)
            return
        dp, vport = found
        if vport_type_for(port) is not vport.type:
            # The veto keeps this from happening; without it the port stays unbound, silently
            # (announcing it would invite an add that can only fail).
            return
        dp.vports.rebind(vport, port)
        vport.ifindex = port.ifindex
        port.binding = (dp, vport)

    def port_teardown(self, port: SwitchPort) -> None:
        """The port is about to go (its NIC is already disconnected): nothing to do yet."""

    def port_deleted(self, port: SwitchPort) -> None:
        """The switch port is gone: its vport stays, ABSENT, number and name kept."""
        bound = self._bound(port)
        if bound is None:
            return
        dp, vport = bound
        dp.vports.unbind(vport)
        port.binding = None
        self._event(dp, VportCmd.DEL, vport)

    def port_renamed(self, port: SwitchPort, old_name: str) -> None:
        """The vport bound under the old name loses its port; the new name may bind one."""
        bound = self._bound(port)
        if bound is not None:
            dp, vport = bound
            dp.vports.unbind(vport)
            port.binding = None
            self._event(dp, VportCmd.DEL, vport)
        self.port_created(port)
        rebound = self._bound(port)
        if rebound is not None and port.operational:
            self._event(rebound[0], VportCmd.NEW, rebound[1])

    def nic_connected(self, port: SwitchPort) -> None:
        """NIC connect: NEW event for the bound vport (Windows' CONNECT/LINK_UP)."""
        bound = self._bound(port)
        if bound is not None:
            self._event(bound[0], VportCmd.NEW, bound[1])

    def nic_disconnected(self, port: SwitchPort) -> None:
        """NIC disconnect: DEL event for the bound vport (Windows' LINK_DOWN); it stays."""
        bound = self._bound(port)
        if bound is not None:
            self._event(bound[0], VportCmd.DEL, bound[1])

    def nic_updated(self, port: SwitchPort, changes: dict[str, object]) -> None:
        """Link up/down: NEW/DEL; MAC or MTU change: SET (Windows computed but never sent)."""
        bound = self._bound(port)
        if bound is None:
            return
        dp, vport = bound
        if "link_up" in changes:
            self._event(dp, VportCmd.NEW if changes["link_up"] else VportCmd.DEL, vport)
        if "mac" in changes or "mtu" in changes:
            self._event(dp, VportCmd.SET, vport)

    # -- the data hooks: the packet path (pipeline.py) -------------------------------------------

    def ingress_send(self, port: SwitchPort, frames: list[bytes]) -> None:
        """A batch from a switch port: keys, flow table, actions, outputs, upcalls."""
        self.pipeline.ingress(port, frames)

    def send_complete(self, packets: list[Packet]) -> None:
        """Release the extension's own packets (and the switch frames they were copied from)."""
        self.pipeline.send_complete(packets)

    def forward_complete(self, count: int) -> None:
        """Switch frames forwarded unchanged pass straight back to the switch."""
        self.switch.complete(count)

    def egress_receive(self, packets: list[Packet]) -> list[Packet]:
        """The egress path is pass-through (as in ovsext)."""
        return packets

    def egress_complete(self, packets: list[Packet]) -> None:
        """Egress completion is pass-through (as in ovsext)."""
