"""The packet path: ingress batches through key extraction, the flow table, actions, outputs.

One batch from a switch port (the ingress send hook) goes like this:

1. every frame's flat key is extracted (the port's metadata prefix is computed once);
2. the exact-match cache, then the megaflow classifier, find its flow; misses are set aside;
3. frames are grouped by key, so a flow's statistics, and its actions when they are a single
   output, are handled once per group, not once per frame;
4. single-output groups are forwarded as they are (the switch's own frames, unchanged); other
   actions run per frame through :class:`ActionRunner`, whose outputs are packets the extension
   creates (copies), each holding a reference on the frame it came from;
5. misses become OVS_PACKET_CMD_MISS upcalls, delivered per PID in one call per batch;
6. the switch frames are completed when their last copy has been delivered.

Frames the extension creates are counted (``created`` / ``released``); with the switch's own
``outstanding`` counter, tests check that nothing is left in flight once traffic stops.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..flowtable.actions import Action, ActionProgram
from ..flowtable.flow_key import (
    Metadata,
    extract_key,
    metadata_prefix,
    port_prefix,
)
from ..flowtable.packet_meta import PacketMeta
from ..flowtable.table import Flow, tcp_flags_of
from ..netlink.constants import OVSP_LOCAL
from ..ports.vport import Vport, VportState
from ..vswitch.switch import Packet, SwitchPort, VSwitch
from .datapath import Datapath

if TYPE_CHECKING:
    from .extension import OvsExtension

ETH_HLEN = 14

MAX_RECIRCULATIONS = 8
"""Recirculations of one packet (the kernel nests at most a handful: OVS_RECURSION_LIMIT 5)."""


def monotonic_ms() -> int:
    """Milliseconds on CLOCK_MONOTONIC, the clock OVS userspace reads flow ``used`` against."""
    import time

    return time.monotonic_ns() // 1_000_000


def flow_hash(key: bytes) -> int:
    """The packet's hash (the skb hash's role): spreads misses over PIDs, fills HASH."""
    return zlib.crc32(key) or 1


class Upcalls(Protocol):
    """Where upcalls go (the ovs_packet family implements it over the pseudo-device)."""

    def miss(self, dp: Datapath, key: bytes, frame: bytes, hash_: int) -> bytes:
        """An encoded OVS_PACKET_CMD_MISS."""

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
        """An encoded OVS_PACKET_CMD_ACTION."""

    def deliver(self, pid: int, records: list[bytes]) -> int:
        """Queue upcalls for a PID; how many it took."""


class FrameRef:
    """The extension's hold on a switch frame while copies of it are in flight (the reference
    count of a Windows NBL context): the frame is completed to the switch with the last."""

    __slots__ = ("refs", "switch")

    def __init__(self, switch: VSwitch) -> None:
        self.refs = 1
        self.switch = switch

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.switch.complete(1)


class _Own:
    """Completion context of a packet with no switch frame behind it (an execute's)."""

    def release(self) -> None:
        pass


OWN = _Own()


class ActionRunner:
    """Runs action programs for one datapath; the ActionSink of the actions module.

    ``parent`` is the completion context the outputs of the current packet hold; ``pid``
    overrides the upcall PID (OVS_PACKET_ATTR_UPCALL_PID of an execute).
    """

    def __init__(self, pipeline: Pipeline, dp: Datapath, pid: int | None = None) -> None:
        self.pipeline = pipeline
        self.dp = dp
        self.pid = pid
        self.parent: FrameRef | _Own = OWN
        self.sends: list[Packet] = []
        self.upcalls: dict[int, list[bytes]] = {}
        # the vport each upcall counts against (a miss's in-port; None: not counted), by PID
        self.upcall_ports: dict[int, list[Vport | None]] = {}
        self.recirc: list[tuple[bytes, PacketMeta]] = []

    # -- the ActionSink protocol --------------------------------------------------------------

    def output(self, port_no: int, frame: bytes, meta: PacketMeta) -> None:
        """Send a copy of the packet out of a vport."""
        vport = self.dp.vports.get(port_no)
        if vport is None:
            self.pipeline.output_no_port += 1
            return
        self.pipeline.output_copy(self, vport, frame, meta)

    def userspace(
        self,
        frame: bytes,
        meta: PacketMeta,
        attrs: Mapping[Any, Any],
        actions: list[Action] | None,
        orig_len: int | None,
    ) -> None:
        """An ACTION upcall to the action's PID (0xFFFFFFFF: this datapath's per-CPU PID)."""
        pipeline = self.pipeline
        key = pipeline.key_of(frame, meta)
        hash_ = meta.hash or flow_hash(key)  # the packet's hash, as the kernel sends it
        in_port = self.dp.vports.get(meta.in_port)  # the kernel counts every upcall there
        pid = attrs.get("pid", 0)
        if self.pid is not None:
            pid = self.pid
        elif pid == 0xFFFFFFFF:
            pid = self.dp.miss_pid(None, hash_)
        if not pid or pipeline.upcall_channel is None:
            self.dp.stats.n_lost += 1
            if in_port is not None:
                in_port.upcall_fail += 1
            return
        record = pipeline.upcall_channel.action(
            self.dp, key, frame, meta, attrs, actions, orig_len, hash_
        )
        self.upcalls.setdefault(pid, []).append(record)
        self.upcall_ports.setdefault(pid, []).append(in_port)
        if in_port is not None:
            in_port.upcall_success += 1  # corrected in _deliver if the socket refuses it

    def recirculate(self, frame: bytes, meta: PacketMeta) -> None:
        """Back through the flow table with the new recirc_id (after this packet's actions)."""
        self.recirc.append((frame, meta))

    def random_u32(self) -> int:
        return self.pipeline.random_u32()


class Pipeline:
    """The extension's data hooks for all its datapaths."""

    def __init__(self, extension: OvsExtension) -> None:
        self.extension = extension
        self.switch = extension.switch
        self.upcall_channel: Upcalls | None = None
        self.clock: Callable[[], int] = monotonic_ms
        self.random_u32: Callable[[], int] = lambda: random.getrandbits(32)
        # the extension's own packets (copies, execute packets): created and released
        self.created = 0
        self.released = 0
        # frames dropped for lack of a place to go
        self.unbound_rx = 0  # from switch ports no datapath holds
        self.output_no_port = 0  # output actions naming no vport
        self.short_frames = 0  # runts the kernel would drop (< 14 bytes)

    @property
    def outstanding(self) -> int:
        """Packets the extension created and has not had back yet."""
        return self.created - self.released

    # -- ingress -------------------------------------------------------------------------------

    def ingress(self, port: SwitchPort, frames: list[bytes]) -> None:
        """The ingress send hook: one batch of switch frames from ``port``."""
        switch = self.switch
        binding = port.binding
        if binding is None:
            self.unbound_rx += len(frames)
            switch.complete(len(frames))
            return
        dp, vport = binding
        if frames and min(map(len, frames)) < ETH_HLEN:
            frames = self._drop_runts(frames)
        stats = vport.stats
        stats.rx_packets += len(frames)
        stats.rx_bytes += sum(map(len, frames))
        table = dp.flows
        emc = table.emc
        classify = table.classify
        prefix = port_prefix(vport.port_no)
        now = self.clock()
        outputs: dict[int, list[bytes]] = {}  # single-output flows' frames, by port
        others: list[tuple[Flow, bytes]] = []  # frames whose flow has other actions
        misses: list[tuple[bytes, bytes]] = []
        classified = 0
        last_out = -1
        last_frames: list[bytes] = []
        # Accounting is per frame, straight on the flow: cheaper than grouping a batch by flow
        # when a batch carries many flows, and as cheap when it carries few.
        for frame in frames:
            key = extract_key(frame, prefix)
            entry = emc.get(key)
            if entry is None or entry[0].dead:
                classified += 1
                flow = classify(key)
                if flow is None:
                    misses.append((key, frame))
                    continue
                flags = tcp_flags_of(key)
            else:
                flow, flags = entry
            flow.n_packets += 1
            flow.n_bytes += len(frame)
            flow.used = now
            if flags:
                flow.tcp_flags |= flags
            out = flow.out
            if out == last_out:  # most of a batch goes where its previous frame went
                last_frames.append(frame)
            elif out is not None:
                last_out = out
                last_frames = outputs.get(out)  # type: ignore[assignment]
                if last_frames is None:
                    last_frames = outputs[out] = [frame]
                else:
                    last_frames.append(frame)
            else:
                others.append((flow, frame))
        table.n_cache_hit += len(frames) - classified
        dp.stats.n_hit += len(frames) - len(misses)
        for port_no, out_frames in outputs.items():
            self.forward(dp, port_no, out_frames)
        if others:
            self._run_actions(dp, vport, others)
        if misses:
            self._upcall_misses(dp, vport, misses)

    def _drop_runts(self, frames: list[bytes]) -> list[bytes]:
        """Frames too short for an Ethernet header are dropped and counted (no netdev passes
        them to the kernel's datapath); the rest go on."""
        kept = [frame for frame in frames if len(frame) >= ETH_HLEN]
        runts = len(frames) - len(kept)
        self.short_frames += runts
        self.switch.complete(runts)
        return kept

    def _run_actions(self, dp: Datapath, vport: Vport, others: list[tuple[Flow, bytes]]) -> None:
        """Frames whose flow has actions other than one output: run them one by one."""
        runner = ActionRunner(self, dp)
        dropped = 0
        for flow, frame in others:
            program: ActionProgram = flow.program
            if program.drops:
                dropped += 1
            else:
                self._execute_switch_frame(runner, program, frame, vport.port_no)
        if dropped:
            self.switch.complete(dropped)
        self.flush(runner)

    def _execute_switch_frame(
        self, runner: ActionRunner, program: ActionProgram, frame: bytes, in_port: int
    ) -> None:
        ref = FrameRef(self.switch)
        runner.parent = ref
        meta = PacketMeta(in_port)
        program.execute(frame, meta, runner)
        self.run_recirculations(runner)
        ref.release()  # the frame's own reference: it completes once its copies are delivered

    def forward(self, dp: Datapath, port_no: int, frames: list[bytes]) -> None:
        """A group of switch frames whose only action is one output: sent on unchanged."""
        switch = self.switch
        vport = dp.vports.get(port_no)
        if vport is None:
            self.output_no_port += len(frames)
            switch.complete(len(frames))
            return
        stats = vport.stats
        sp = vport.switch_port
        if sp is not None and vport.state is VportState.BOUND and sp.operational:
            stats.tx_packets += len(frames)
            stats.tx_bytes += sum(map(len, frames))
            switch.forward(sp, frames)
            return
        # a tunnel, the local port, or a port that is down or gone: one copy at a time
        runner = ActionRunner(self, dp)
        for frame in frames:
            ref = FrameRef(switch)
            runner.parent = ref
            self.output_copy(runner, vport, frame, PacketMeta(0))
            ref.release()
        self.flush(runner)

    def output_copy(
        self, runner: ActionRunner, vport: Vport, frame: bytes, meta: PacketMeta
    ) -> None:
        """An output the extension makes: a packet of its own (holding a reference on the
        frame it copies), sent when the runner flushes."""
        stats = vport.stats
        sp = vport.switch_port
        if sp is not None:
            if vport.state is not VportState.BOUND or not sp.operational:
                stats.tx_dropped += 1
                return
            packet = Packet(frame, None, runner.parent)
            packet.dests.append(sp)
            if isinstance(runner.parent, FrameRef):
                runner.parent.refs += 1
            self.created += 1
            runner.sends.append(packet)
            stats.tx_packets += 1
            stats.tx_bytes += len(frame)
            return
        if vport.state is VportState.ABSENT:
            stats.tx_dropped += 1  # its switch port is gone: no tunnel, nowhere to send
            return
        if vport.port_no == OVSP_LOCAL:
            # the local port has no NIC in ovsdp: counted as sent, then gone
            stats.tx_packets += 1
            stats.tx_bytes += len(frame)
            return
        self.tunnel_output(runner, vport, frame, meta)

    def tunnel_output(
        self, runner: ActionRunner, vport: Vport, frame: bytes, meta: PacketMeta
    ) -> None:
        """Output to a tunnel vport: encapsulation (ovsdp/tunnel)."""
        vport.stats.tx_errors += 1  # no tunnel endpoint configured

    def flush(self, runner: ActionRunner) -> None:
        """Send the runner's packets and deliver its upcalls."""
        if runner.sends:
            sends, runner.sends = runner.sends, []
            self.switch.send(sends)
        if runner.upcalls:
            upcalls, runner.upcalls = runner.upcalls, {}
            ports, runner.upcall_ports = runner.upcall_ports, {}
            self._deliver(runner.dp, upcalls, ports)

    def send_complete(self, packets: list[Packet]) -> None:
        """The switch delivered packets the extension created: release their references."""
        self.released += len(packets)
        for packet in packets:
            context = packet.context
            if context is not None:
                context.release()  # type: ignore[attr-defined]

    # -- recirculation ---------------------------------------------------------------------------

    def key_of(self, frame: bytes, meta: PacketMeta) -> bytes:
        """A packet's key under its current metadata."""
        tunnel = meta.tunnel
        prefix = metadata_prefix(
            Metadata(
                meta.in_port, meta.recirc_id, meta.dp_hash, meta.priority, meta.skb_mark, tunnel
            )
        )
        return extract_key(frame, prefix)

    def run_recirculations(self, runner: ActionRunner) -> None:
        """Run what the runner's packets recirculated, up to the recirculation limit."""
        rounds = 0
        dp = runner.dp
        while runner.recirc:
            frame, meta = runner.recirc.pop(0)
            rounds += 1
            if rounds > MAX_RECIRCULATIONS:
                dp.stats.n_lost += 1 + len(runner.recirc)  # dropped, like the kernel's limit
                runner.recirc.clear()
                return
            key = self.key_of(frame, meta)
            flow = dp.flows.lookup(key)
            if flow is None:
                dp.stats.n_missed += 1
                self._queue_miss(runner, dp, dp.vports.get(meta.in_port), key, frame)
                continue
            dp.stats.n_hit += 1
            flow.n_packets += 1
            flow.n_bytes += len(frame)
            flow.used = self.clock()
            flow.tcp_flags |= tcp_flags_of(key)
            flow.program.execute(frame, meta, runner)

    # -- upcalls -------------------------------------------------------------------------------

    def _upcall_misses(self, dp: Datapath, vport: Vport, misses: list[tuple[bytes, bytes]]) -> None:
        dp.stats.n_missed += len(misses)
        runner = ActionRunner(self, dp)
        for key, frame in misses:
            self._queue_miss(runner, dp, vport, key, frame)
        self.flush(runner)
        # the frames went to userspace as copies (the Windows datapath drops the original too)
        self.switch.complete(len(misses))

    def _queue_miss(
        self, runner: ActionRunner, dp: Datapath, vport: Vport | None, key: bytes, frame: bytes
    ) -> None:
        hash_ = flow_hash(key)
        pid = runner.pid if runner.pid is not None else dp.miss_pid(vport, hash_)
        if not pid or self.upcall_channel is None:
            dp.stats.n_lost += 1
            if vport is not None:
                vport.upcall_fail += 1
            return
        record = self.upcall_channel.miss(dp, key, frame, hash_)
        runner.upcalls.setdefault(pid, []).append(record)
        runner.upcall_ports.setdefault(pid, []).append(vport)
        if vport is not None:
            vport.upcall_success += 1  # corrected in _deliver if the socket refuses it

    def _deliver(
        self,
        dp: Datapath,
        upcalls: dict[int, list[bytes]],
        ports: dict[int, list[Vport | None]],
    ) -> None:
        channel = self.upcall_channel
        assert channel is not None
        for pid, records in upcalls.items():
            lost = len(records) - channel.deliver(pid, records)
            if lost:
                dp.stats.n_lost += lost
                # The socket took what fitted: the refused upcalls count as failures of their
                # in-ports (the last ones', exact when one port's misses filled the queue).
                for vport in ports.get(pid, [])[-lost:]:
                    if vport is not None:
                        vport.upcall_success -= 1
                        vport.upcall_fail += 1
