"""The ``ovs_datapath`` family: OVS_DP_CMD_NEW / DEL / GET / SET and dump, Linux semantics."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

from ..netlink.constants import OVS_DATAPATH_MCGROUP, OVS_DP_VER_FEATURES, DpCmd
from ..netlink.errors import NetlinkError
from ..netlink.families import OVS_DATAPATH
from ..netlink.message import GenlMessage, encode_genl
from ..netlink.structs import OvsDpMegaflowStats, OvsDpStats
from ..pseudodev.device import Device, Request
from ..pseudodev.registry import Command, Family, Reply
from .datapath import Datapath, check_masks_cache_range
from .extension import OvsExtension


def datapath_attrs(dp: Datapath) -> dict[str, Any]:
    """What a datapath reply carries (the kernel's ovs_dp_cmd_fill_info)."""
    s = dp.stats
    attrs: dict[str, Any] = {
        "name": dp.name,
        "stats": OvsDpStats(s.n_hit, s.n_missed, s.n_lost, dp.n_flows),
        "megaflow_stats": OvsDpMegaflowStats(dp.flows.n_mask_hit, dp.n_masks, dp.flows.n_cache_hit),
        "user_features": dp.user_features,
        "masks_cache_size": dp.masks_cache_size,
    }
    if dp.per_cpu_dispatch:
        attrs["per_cpu_pids"] = dp.per_cpu_pids
    return attrs


class DatapathFamily:
    """Handlers of ovs_datapath over an :class:`OvsExtension`."""

    def __init__(self, extension: OvsExtension) -> None:
        self.extension = extension
        self.family = Family.from_codec(
            OVS_DATAPATH,
            [
                Command(
                    DpCmd.NEW,
                    "NEW",
                    do=self.new,
                    mutating=True,
                    required=("name", "upcall_pid"),
                    reply=Reply.ECHO,
                ),
                Command(DpCmd.DEL, "DEL", do=self.delete, mutating=True, reply=Reply.ECHO),
                Command(DpCmd.GET, "GET", do=self.get, dump=self.dump),
                Command(DpCmd.SET, "SET", do=self.set, mutating=True, reply=Reply.ECHO),
            ],
        )

    def register(self, device: Device) -> Family:
        return device.register(self.family)

    def _reply(self, request: Request, cmd: int, dp: Datapath) -> GenlMessage:
        return request.reply(cmd, datapath_attrs(dp), dp.ifindex)

    def _notify(self, request: Request, cmd: int, dp: Datapath) -> None:
        family = self.family
        msg = GenlMessage(family.id, 0, 0, 0, cmd, family.version, dp.ifindex, datapath_attrs(dp))
        exclude = request.pid if request.echo else None
        request.device.multicast(
            family.group_ids[OVS_DATAPATH_MCGROUP], encode_genl(msg, family.genl), exclude
        )

    @staticmethod
    def _check_policy(request: Request) -> None:
        # The kernel validates attributes against the family's policy before any handler runs:
        # an out-of-range MASKS_CACHE_SIZE is ERANGE for every command, before anything else.
        size = request.attrs.get("masks_cache_size")
        if size is not None:
            check_masks_cache_range(size)

    def _lookup(self, request: Request) -> Datapath:
        # The name, when given, wins over dp_ifindex (the kernel's lookup_datapath).
        self._check_policy(request)
        name = request.attrs.get("name")
        if name is not None:
            return self.extension.datapath(name)
        return self.extension.datapath(None, request.msg.dp_ifindex or 0)

    def new(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        name = attrs["name"]
        self._check_policy(request)
        # before the EEXIST below (EOPNOTSUPP, then EINVAL, win over it, as in the kernel)
        self.extension.check_new_datapath(
            name, attrs.get("user_features", 0), attrs.get("masks_cache_size")
        )
        existing = self.extension.datapaths.get(name)
        if existing is not None:
            if request.msg.version < OVS_DP_VER_FEATURES:
                existing.user_features = 0  # an old client: forget features it cannot see
            raise NetlinkError(errno.EEXIST, f"datapath {name} exists")
        dp = self.extension.create_datapath(
            name,
            attrs["upcall_pid"],
            attrs.get("user_features", 0),
            attrs.get("masks_cache_size"),
            attrs.get("per_cpu_pids"),
        )
        self._notify(request, DpCmd.NEW, dp)
        return [self._reply(request, DpCmd.NEW, dp)]

    def delete(self, request: Request) -> list[GenlMessage]:
        dp = self._lookup(request)
        reply = self._reply(request, DpCmd.DEL, dp)
        self.extension.delete_datapath(dp)
        self._notify(request, DpCmd.DEL, dp)
        return [reply]

    def get(self, request: Request) -> list[GenlMessage]:
        return [self._reply(request, DpCmd.GET, self._lookup(request))]

    def dump(self, request: Request) -> Iterator[GenlMessage]:
        for name in list(self.extension.datapaths):
            dp = self.extension.datapaths.get(name)
            if dp is not None:
                yield self._reply(request, DpCmd.GET, dp)

    def set(self, request: Request) -> list[GenlMessage]:
        dp = self._lookup(request)
        attrs = request.attrs
        # An absent USER_FEATURES means 0: SET replaces the features (kernel behaviour).
        self.extension.set_datapath(
            dp,
            attrs.get("user_features", 0),
            attrs.get("masks_cache_size"),
            attrs.get("per_cpu_pids"),
        )
        self._notify(request, DpCmd.SET, dp)
        return [self._reply(request, DpCmd.SET, dp)]
