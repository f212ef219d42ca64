"""The ``ovs_packet`` family: EXECUTE requests, and the MISS / ACTION upcalls it carries.

Upcalls are unicast to a PID through the pseudo-device's bounded per-socket queues; one that
does not fit (or has no PID) is counted in the datapath's ``n_lost`` (the Windows datapath never
counted these).  EXECUTE runs the given actions on the given packet with the key's metadata and
installs nothing; with OVS_PACKET_ATTR_PROBE it only validates (a probe changes nothing).  The
key's in_port is kept as given, absent or naming no vport (the kernel's behaviour): upcalls from
an execute report it as such, and only count against, and take their PID from, the local port.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any

from ..flowtable.actions import Action, validate_actions
from ..flowtable.flow_key import extract_key, key_to_attrs, metadata_from_attrs, metadata_prefix
from ..flowtable.packet_meta import PacketMeta
from ..netlink.constants import OVS_PACKET_HASH_SW_BIT, OVSP_LOCAL, PacketCmd
from ..netlink.errors import NetlinkError
from ..netlink.families import OVS_PACKET
from ..netlink.message import GenlMessage, encode_genl
from ..pseudodev.device import Device, Request
from ..pseudodev.registry import Command, Family, Reply
from .datapath import Datapath
from .extension import OvsExtension
from .flow_family import compiled_program
from .pipeline import OWN, ActionRunner, Pipeline

ETH_HLEN = 14


class PacketFamily:
    """Handlers of ovs_packet, and the upcall channel of the packet path."""

    def __init__(self, extension: OvsExtension, pipeline: Pipeline) -> None:
        self.extension = extension
        self.pipeline = pipeline
        self.device: Device | None = None
        self.family = Family.from_codec(
            OVS_PACKET,
            [
                Command(
                    PacketCmd.EXECUTE,
                    "EXECUTE",
                    do=self.execute,
                    mutating=True,
                    required=("packet", "key", "actions"),
                    reply=Reply.ECHO,
                ),
            ],
        )
        pipeline.upcall_channel = self

    def register(self, device: Device) -> Family:
        self.device = device
        return device.register(self.family)

    # -- upcalls (the pipeline's Upcalls channel) ----------------------------------------------

    def _encode(self, cmd: int, dp: Datapath, attrs: dict[str, Any]) -> bytes:
        family = self.family
        msg = GenlMessage(family.id, 0, 0, 0, cmd, family.version, dp.ifindex, attrs)
        return encode_genl(msg, family.genl)

    def miss(self, dp: Datapath, key: bytes, frame: bytes, hash_: int) -> bytes:
        """OVS_PACKET_CMD_MISS: KEY, HASH, PACKET (last), in the kernel's order."""
        attrs = {"key": key_to_attrs(key), "hash": hash_ | OVS_PACKET_HASH_SW_BIT, "packet": frame}
        return self._encode(PacketCmd.MISS, dp, attrs)

    def action(
        self,
        dp: Datapath,
        key: bytes,
        frame: bytes,
        meta: PacketMeta,
        attrs: Mapping[Any, Any],
        actions: list[Action] | None,
        orig_len: int | None,
        hash_: int,
    ) -> bytes:
        """OVS_PACKET_CMD_ACTION: KEY, [USERDATA], [EGRESS_TUN_KEY], [ACTIONS], [MRU], [LEN],
        HASH, PACKET."""
        out: dict[str, Any] = {"key": key_to_attrs(key)}
        if "userdata" in attrs:
            out["userdata"] = attrs["userdata"]
        tun_port = attrs.get("egress_tun_port")
        if tun_port is not None and meta.egress_tunnel is not None:
            vport = dp.vports.get(tun_port)
            if vport is not None and vport.is_tunnel:
                out["egress_tun_key"] = meta.egress_tunnel
        if actions is not None:
            out["actions"] = actions
        if meta.mru:
            out["mru"] = meta.mru
        if orig_len is not None:
            out["len"] = orig_len
        out["hash"] = hash_ | OVS_PACKET_HASH_SW_BIT
        out["packet"] = frame
        return self._encode(PacketCmd.ACTION, dp, out)

    def deliver(self, pid: int, records: list[bytes]) -> int:
        """Queue upcalls for a socket; how many fit (the rest count as lost)."""
        if self.device is None:
            return 0
        return self.device.unicast_batch(pid, records)

    # -- EXECUTE -------------------------------------------------------------------------------

    def execute(self, request: Request) -> list[GenlMessage]:
        attrs = request.attrs
        dp = self.extension.datapath(None, request.msg.dp_ifindex or 0)
        packet = attrs["packet"]
        if len(packet) < ETH_HLEN:
            raise NetlinkError(errno.EINVAL, f"a packet of {len(packet)} bytes is too short")
        # The key keeps in_port as given (absent: NO_IN_PORT, which keys reported upstream then
        # omit), as the kernel keeps key.phy.in_port; only the input vport (upcall PIDs and
        # upcall statistics) falls back to the local port when in_port names none.
        meta = metadata_from_attrs(attrs["key"])
        in_port = meta.in_port
        input_vport = dp.vports.get(in_port)
        if input_vport is None:
            input_vport = dp.vports.get(OVSP_LOCAL)
        key = extract_key(packet, metadata_prefix(meta))
        raw, program = compiled_program(attrs["actions"])
        validate_actions(attrs["actions"], key_to_attrs(key), encoded=raw)
        if attrs.get("probe"):
            return []  # a probe validates; it sends nothing and changes nothing
        pmeta = PacketMeta(
            in_port,
            priority=meta.priority,
            skb_mark=meta.skb_mark,
            recirc_id=meta.recirc_id,
            dp_hash=meta.dp_hash,
            tunnel=meta.tunnel,
            mru=attrs.get("mru", 0),
            hash=attrs.get("hash", 0) & 0xFFFFFFFF,
        )
        runner = ActionRunner(self.pipeline, dp, attrs.get("upcall_pid"))
        runner.parent = OWN
        runner.default_input = input_vport
        program.execute(packet, pmeta, runner)
        self.pipeline.run_recirculations(runner)
        self.pipeline.flush(runner)
        return []
