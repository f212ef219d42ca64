"""nlctrl (GENL_ID_CTRL): family and multicast-group lookup, by name, by id, or as a dump."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..netlink.constants import (
    GENL_ADMIN_PERM,
    GENL_CMD_CAP_DO,
    GENL_CMD_CAP_DUMP,
    GENL_ID_CTRL,
    CtrlCmd,
)
from ..netlink.errors import NetlinkError, einval
from ..netlink.families import NLCTRL
from ..netlink.message import GenlMessage
from .registry import Command, Family

if TYPE_CHECKING:
    from .device import Device, Request


def family_attrs(family: Family) -> dict[str, Any]:
    """CTRL_CMD_NEWFAMILY attributes describing a family, as Linux fills them."""
    ops = []
    for cmd in sorted(family.commands):
        command = family.commands[cmd]
        flags = (GENL_CMD_CAP_DO if command.do else 0) | (GENL_CMD_CAP_DUMP if command.dump else 0)
        if command.mutating:
            flags |= GENL_ADMIN_PERM
        ops.append({"id": cmd, "flags": flags})
    attrs: dict[str, Any] = {
        "family_id": family.id,
        "family_name": family.name,
        "version": family.version,
        "hdrsize": family.hdrsize,
        "maxattr": family.maxattr,
        "ops": ops,
    }
    if family.group_ids:
        attrs["mcast_groups"] = [{"name": n, "id": i} for n, i in family.group_ids.items()]
    return attrs


def _reply(request: Request, family: Family) -> GenlMessage:
    return request.reply(CtrlCmd.NEWFAMILY, family_attrs(family))


def _get_family(request: Request) -> list[GenlMessage]:
    attrs = request.attrs
    device = request.device
    if "family_id" in attrs:
        family = device.families.get(attrs["family_id"])
        what = f"id {attrs['family_id']}"
    elif "family_name" in attrs:
        family = device.families_by_name.get(attrs["family_name"])
        what = repr(attrs["family_name"])
    else:
        raise einval("CTRL_CMD_GETFAMILY needs CTRL_ATTR_FAMILY_ID or CTRL_ATTR_FAMILY_NAME")
    if family is None:
        raise NetlinkError(errno.ENOENT, f"no generic netlink family {what}")
    return [_reply(request, family)]


def _dump_families(request: Request) -> Iterator[GenlMessage]:
    # Families are only added at start-up, so a snapshot of the ids is the whole table.
    device = request.device
    for family_id in sorted(device.families):
        family = device.families.get(family_id)
        if family is not None:
            yield _reply(request, family)


def register(device: Device) -> Family:
    """Register nlctrl with its fixed id 0x10 and its "notify" group."""
    family = Family.from_codec(
        NLCTRL,
        [Command(CtrlCmd.GETFAMILY, "GETFAMILY", do=_get_family, dump=_dump_families)],
    )
    family.mcast_groups = ("notify",)
    return device.register(family, GENL_ID_CTRL)
