"""The ``ovs_flow`` family: megaflows put, changed, read, deleted and dumped (kernel semantics).

What each command does is the kernel's (reference §2.3):

* NEW parses key and mask, validates the actions against the masked key, then looks for the
  flow by UFID, else by a megaflow lookup of the key.  None: insert.  Found and the request has
  NLM_F_CREATE (or EXCL): EEXIST.  Found without: if it is the same match (for a UFID flow: the
  same masked key; for a key flow: the same unmasked key, else an exact lookup finds one) the
  actions are replaced and the statistics kept; otherwise ENOENT.
* SET needs KEY or UFID, and KEY when it has ACTIONS (validated against KEY and MASK); finds
  the flow by UFID, else by exact key; replaces actions if given; OVS_FLOW_ATTR_CLEAR zeroes
  the statistics.  ENOENT if absent.
* GET finds it the same way.  DEL too, and returns its final statistics; DEL with neither KEY nor
  UFID flushes every flow.  GET with NLM_F_DUMP lists them, trimmed by UFID_FLAGS.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from typing import Any

from ..flowtable.actions import compile_actions, validate_actions
from ..flowtable.flow_key import attrs_to_key, key_to_attrs, mask_to_attrs
from ..flowtable.table import Flow
from ..netlink.codec import CODECS
from ..netlink.constants import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    OVS_FLOW_MCGROUP,
    FlowCmd,
    UfidFlag,
)
from ..netlink.errors import NetlinkError, einval
from ..netlink.families import OVS_FLOW
from ..netlink.message import GenlMessage, encode_genl
from ..netlink.structs import OvsFlowStats
from ..pseudodev.device import Device, Request
from ..pseudodev.registry import Command, Family, Reply
from .datapath import Datapath
from .extension import OvsExtension

_ACTIONS = CODECS["ovs_action"]


def monotonic_ms() -> int:
    """Milliseconds on CLOCK_MONOTONIC: the clock OVS userspace reads flow ``used`` against."""
    return time.monotonic_ns() // 1_000_000


def flow_attrs(flow: Flow, ufid_flags: int = 0) -> dict[str, Any]:
    """A flow's reply attributes, in the kernel's order (reference §2.3, "reply contents")."""
    attrs: dict[str, Any] = {}
    mask = flow.mask.value
    key = flow.key
    if flow.ufid is not None:
        attrs["ufid"] = flow.ufid
        if not ufid_flags & UfidFlag.OMIT_KEY:
            attrs["key"] = key_to_attrs(key, mask)  # the masked key
    else:
        assert flow.unmasked is not None
        attrs["key"] = key_to_attrs(flow.unmasked)  # the key exactly as installed
    if not ufid_flags & UfidFlag.OMIT_MASK:
        attrs["mask"] = mask_to_attrs(key, mask)
    if flow.used:
        attrs["used"] = flow.used
    if flow.n_packets:
        attrs["stats"] = OvsFlowStats(flow.n_packets, flow.n_bytes)
    if flow.tcp_flags:
        attrs["tcp_flags"] = flow.tcp_flags & 0xFF
    if not ufid_flags & UfidFlag.OMIT_ACTIONS:
        attrs["actions"] = _ACTIONS.decode(flow.actions)
    return attrs


_PROGRAMS: dict[bytes, Any] = {}  # encoded actions -> compiled program, shared by flows


def compiled_program(actions: list[tuple[str, Any]]) -> tuple[bytes, Any]:
    """An action list's encoding and its compiled program (shared: flows and executes with the
    same actions use one program)."""
    raw = _ACTIONS.encode(actions)
    program = _PROGRAMS.get(raw)
    if program is None:
        if len(_PROGRAMS) > 65536:
            _PROGRAMS.clear()  # flows keep theirs; only the sharing is lost
        program = _PROGRAMS[raw] = compile_actions(actions)
    return raw, program


def _ufid(attrs: dict[str, Any]) -> bytes | None:
    ufid = attrs.get("ufid")
    if ufid is not None and not 1 <= len(ufid) <= 16:
        raise einval(f"OVS_FLOW_ATTR_UFID of {len(ufid)} bytes (1 to 16)")
    return ufid


class FlowFamily:
    """Handlers of ovs_flow."""

    def __init__(self, extension: OvsExtension) -> None:
        self.extension = extension
        self.family = Family.from_codec(
            OVS_FLOW,
            [
                Command(
                    FlowCmd.NEW,
                    "NEW",
                    do=self.new,
                    mutating=True,
                    required=("key",),
                    reply=Reply.ECHO,
                ),
                Command(FlowCmd.DEL, "DEL", do=self.delete, mutating=True, reply=Reply.ECHO),
                Command(FlowCmd.GET, "GET", do=self.get, dump=self.dump),
                Command(FlowCmd.SET, "SET", do=self.set, mutating=True, reply=Reply.ECHO),
            ],
        )

    def register(self, device: Device) -> Family:
        return device.register(self.family)

    # -- helpers ------------------------------------------------------------------------------

    def _dp(self, request: Request) -> Datapath:
        return self.extension.datapath(None, request.msg.dp_ifindex or 0)

    def _program(self, actions: list[tuple[str, Any]]) -> tuple[bytes, Any]:
        return compiled_program(actions)

    def _find(self, dp: Datapath, attrs: dict[str, Any]) -> Flow:
        ufid = _ufid(attrs)
        if ufid is not None:
            flow = dp.flows.find_ufid(ufid)
            if flow is None:
                raise NetlinkError(errno.ENOENT, "no flow with this UFID")
            return flow
        if "key" not in attrs:
            raise einval("a flow is named by OVS_FLOW_ATTR_KEY or OVS_FLOW_ATTR_UFID")
        key, _mask = attrs_to_key(attrs["key"], None)
        flow = dp.flows.find_exact(key)
        if flow is None:
            raise NetlinkError(errno.ENOENT, "no flow with this key")
        return flow

    def _reply(self, request: Request, cmd: int, dp: Datapath, flow: Flow) -> GenlMessage:
        flags = request.attrs.get("ufid_flags", 0)
        return request.reply(cmd, flow_attrs(flow, flags), dp.ifindex)

    def _echo(self, request: Request, cmd: int, dp: Datapath, flow: Flow) -> list[GenlMessage]:
        # NEW/SET answer only with NLM_F_ECHO: don't build a reply nobody will see
        return [self._reply(request, cmd, dp, flow)] if request.echo else []

    def _notify(self, request: Request, cmd: int, dp: Datapath, flow: Flow) -> None:
        # Like the kernel, build the message only when someone listens.
        device = request.device
        family = self.family
        group = family.group_ids[OVS_FLOW_MCGROUP]
        if not device.groups.get(group):
            return
        msg = GenlMessage(family.id, 0, 0, 0, cmd, family.version, dp.ifindex, flow_attrs(flow))
        device.multicast(
            group, encode_genl(msg, family.genl), request.pid if request.echo else None
        )

    # -- commands -----------------------------------------------------------------------------

    def new(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        dp = self._dp(request)
        if "actions" not in attrs:
            raise einval("OVS_FLOW_CMD_NEW needs OVS_FLOW_ATTR_ACTIONS (an empty list drops)")
        ufid = _ufid(attrs)
        key, mask = attrs_to_key(attrs["key"], attrs.get("mask"))
        raw, program = self._program(attrs["actions"])
        # validated against the match as the request states it, as the kernel does
        validate_actions(attrs["actions"], attrs["key"], attrs.get("mask"), encoded=raw)
        table = dp.flows
        flow = table.find_ufid(ufid) if ufid is not None else None
        if flow is None:
            flow = table.find_masked(key)
        if flow is None:
            flow = Flow(key, table.mask(mask), raw, program, ufid)
            table.insert(flow)
            self._notify(request, FlowCmd.NEW, dp, flow)
            return self._echo(request, FlowCmd.NEW, dp, flow)
        if request.flags & (NLM_F_CREATE | NLM_F_EXCL):
            raise NetlinkError(errno.EEXIST, "the flow exists (NLM_F_CREATE)")
        if not self._same_match(flow, key, mask, ufid):
            if flow.ufid is None:
                found = table.find_exact(key)
                if found is None:
                    raise NetlinkError(errno.ENOENT, "an overlapping flow with a different match")
                flow = found
            else:
                raise NetlinkError(errno.ENOENT, "the UFID's flow has a different match")
        flow.set_actions(raw, program)  # statistics kept
        self._notify(request, FlowCmd.NEW, dp, flow)
        return self._echo(request, FlowCmd.NEW, dp, flow)

    @staticmethod
    def _same_match(flow: Flow, key: bytes, mask: bytes, ufid: bytes | None) -> bool:
        # a UFID flow: the same masked key (the kernel's flow_cmp_masked_key); a key flow: the
        # same unmasked key
        if flow.ufid is not None:
            return flow.masked == int.from_bytes(key, "big") & int.from_bytes(mask, "big")
        return flow.unmasked == key

    def set(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        # As the kernel's ovs_flow_cmd_set, the request is checked before the flow is looked
        # for: a KEY (and MASK) is parsed even when a UFID names the flow, and ACTIONS need
        # the KEY, the match they are validated against (a UFID alone is EINVAL).
        if "key" not in attrs and "ufid" not in attrs:
            raise einval("OVS_FLOW_CMD_SET needs OVS_FLOW_ATTR_KEY or OVS_FLOW_ATTR_UFID")
        if "key" in attrs:
            attrs_to_key(attrs["key"], attrs.get("mask"))
        program = None
        if "actions" in attrs:
            if "key" not in attrs:
                raise einval("OVS_FLOW_CMD_SET with ACTIONS needs OVS_FLOW_ATTR_KEY")
            raw, compiled = self._program(attrs["actions"])
            validate_actions(attrs["actions"], attrs["key"], attrs.get("mask"), encoded=raw)
            program = (raw, compiled)
        dp = self._dp(request)
        flow = self._find(dp, attrs)
        if program is not None:
            flow.set_actions(*program)
        # The reply (and the notification) shows the statistics from before a CLEAR, as the
        # kernel builds its reply before it clears them.
        reply = self._echo(request, FlowCmd.SET, dp, flow)
        self._notify(request, FlowCmd.SET, dp, flow)
        if attrs.get("clear"):
            flow.clear_stats()
        return reply

    def get(self, request: Request) -> list[GenlMessage]:
        dp = self._dp(request)
        return [self._reply(request, FlowCmd.GET, dp, self._find(dp, request.attrs))]

    def delete(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        dp = self._dp(request)
        if "key" not in attrs and "ufid" not in attrs:
            dp.flows.flush()  # no per-flow notifications, as the kernel
            return []
        flow = self._find(dp, attrs)
        reply = self._reply(request, FlowCmd.DEL, dp, flow)  # the final statistics
        dp.flows.remove(flow)
        self._notify(request, FlowCmd.DEL, dp, flow)
        return [reply]

    def dump(self, request: Request) -> Iterator[GenlMessage]:
        dp = self._dp(request)
        flags = request.attrs.get("ufid_flags", 0)
        for _slot, flow in dp.flows.iter_from(0):
            yield request.reply(FlowCmd.GET, flow_attrs(flow, flags), dp.ifindex)
