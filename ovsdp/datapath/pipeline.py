"""The packet path: ingress batches through key extraction, the flow table, actions, outputs.

One batch from a switch port (the ingress send hook) goes like this:

1. every frame's flat key is extracted (the port's metadata prefix is computed once);
2. the exact-match cache, then the megaflow classifier, find its flow; misses are set aside;
3. the flow's statistics are updated per frame, straight on the flow, and the frame is
   collected by what its flow does: a single output (frames gathered per output port), exactly
   set(tunnel(...)) and an output to a VXLAN vport (encapsulated right there, from what the
   flow caches: ``Flow.encap``), or other actions;
4. single-output frames are forwarded as they are (the switch's own frames, unchanged), outer
   frames go out of the uplink in one call; other actions run per frame through
   :class:`ActionRunner`, whose outputs are packets the extension creates (copies), each
   holding a reference on the frame it came from;
5. misses become OVS_PACKET_CMD_MISS upcalls, delivered per PID in one call per batch;
6. the switch frames are completed when their last copy has been delivered.

Frames from the uplink go through the tunnel endpoint first (:meth:`Pipeline._tunnel_rx`
and :meth:`Pipeline._decap_fast`: decapsulation, reassembly) and their inner frames through
steps 2-6 with the tunnel metadata in their keys.

Frames the extension creates are counted (``created`` / ``released``); with the switch's own
``outstanding`` counter, tests check that nothing is left in flight once traffic stops.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from ..flowtable.actions import Action, ActionProgram
from ..flowtable.flow_key import (
    Metadata,
    extract_key,
    key_metadata,
    metadata_prefix,
    port_prefix,
)
from ..flowtable.packet_meta import PacketMeta
from ..flowtable.table import Flow, tcp_flags_of
from ..netlink.constants import ETH_HLEN, OVS_VXLAN_DEFAULT_PORT, OVSP_LOCAL, VportType
from ..ports.vport import Vport, VportState, VportStats
from ..tunnel.endpoint import (
    IP_SUM_CONSTANT,
    NO_CSUM_VXLAN_I,
    RX_FLAGS_PROTO,
    RX_INNER,
    RX_INNER_ULEN,
    RX_KEY,
    RX_OUTER,
    TCP_MIN_ULEN,
    Template,
    TunnelEndpoint,
    TunnelParams,
    endpoint_of,
    key_head,
)
from ..tunnel.vxlan import (
    OUTER_HLEN,
    OUTER_STRUCT,
    SPORT_MAX,
    SPORT_MIN,
    OuterTemplate,
)
from ..vswitch.switch import Packet, PortType, SwitchPort, VSwitch
from .datapath import Datapath

if TYPE_CHECKING:
    from .extension import OvsExtension

MAX_RECIRCULATIONS = 8
"""Recirculations of one packet (the kernel nests at most a handful: OVS_RECURSION_LIMIT 5);
beyond, the packet is dropped and counted in ``Pipeline.recirc_limit_drops``."""


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
    overrides the upcall PID (OVS_PACKET_ATTR_UPCALL_PID of an execute); ``default_input`` is
    the input vport of packets whose in_port names none (an execute's: the local port).
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
        self.default_input: Vport | None = None

    def input_vport(self, meta: PacketMeta) -> Vport | None:
        """The vport a packet came in on: the one its in_port names, else ``default_input``
        (the kernel's execute keeps an unknown or absent in_port in the key and uses the local
        port as the input device, whose PIDs and upcall statistics its upcalls then use)."""
        vport = self.dp.vports.get(meta.in_port)
        return self.default_input if vport is None else vport

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
        in_port = self.input_vport(meta)  # the kernel counts every upcall there
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
        # packets dropped at the recirculation limit (a loop); not n_lost, which the kernel
        # keeps for upcalls that could not be queued (its limit drop counts nowhere in stats)
        self.recirc_limit_drops = 0
        # tunnels (ovsdp/tunnel): the switch's VTEP, which action programs are exactly
        # set(tunnel(...)) + output (encapsulated in the ingress loop: _resolve_encap), and
        # what each datapath's flows resolved them to
        self.tunnel: TunnelEndpoint = endpoint_of(self.switch)
        self._encap_plans: dict[ActionProgram, _EncapPlan | Literal[False]] = {}
        self._encap_caches: dict[Datapath, _EncapCache] = {}

    @property
    def outstanding(self) -> int:
        """Packets the extension created and has not had back yet."""
        return self.created - self.released

    # -- ingress -------------------------------------------------------------------------------

    def ingress(self, port: SwitchPort, frames: list[bytes]) -> None:
        """The ingress send hook: one batch of switch frames from ``port``."""
        if port.type is PortType.EXTERNAL and self.tunnel.is_uplink(port):
            frames = self._tunnel_rx(frames)  # what is for the VTEP is taken out
            if not frames:
                return
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
        pack_outer = _OUTER_BULK.pack
        outputs: dict[int, list[bytes]] = {}  # single-output flows' frames, by port
        # frames whose flow has other actions (with their keys), but those encapsulated here
        others: list[tuple[Flow, bytes, bytes]] = []
        misses: list[tuple[bytes, bytes]] = []
        classified = 0
        last_out = -1
        last_frames: list[bytes] = []
        # Tunnel flows (actions exactly set(tunnel(...)) + an output to a VXLAN vport) are
        # encapsulated right in this loop, with what their flow caches (Flow.encap, see
        # _resolve_encap); their outer frames are collected in ``outers`` (see _encap_end).
        e_cache: _EncapCache | None = None  # set up by the batch's first flow of other actions
        e_token: object = None  # the cache's token: a flow's ``encap`` of another is stale
        e_fast: tuple[Any, ...] = ()  # the ``encap`` the locals below are loaded from
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
            else:  # not a single output (never last_out: an int)
                fast = flow.encap  # (see _resolve_encap)
                if fast is not e_fast:  # most of a batch has the flow of the one before
                    if fast is None or fast[9] is not e_token:
                        if e_cache is None:
                            e_cache = self._encap_begin(dp)
                            e_token = e_cache.token
                            outers: list[bytes] = []
                            slow: list[tuple[_EncapTarget, bytes, bytes]] = []
                            # IP ids from the endpoint's, not wrapping inside the batch
                            ip_id = self.tunnel.ip_id
                            if ip_id + len(frames) > 0xFFFF:
                                ip_id = 0
                            e_stats: VportStats | None = None
                            e_start = 0  # where the frames of ``e_stats``' vport begin
                        if fast is None or fast[9] is not e_token:
                            fast = flow.encap = self._encap_of(dp, flow.program, e_cache)
                    e_fast = fast
                    limit, eth, ftp, addrs, dport, tail, base, vstats, target, _token = fast
                    if vstats is not e_stats and limit >= 0:
                        if e_stats is not None:
                            self._count_sent(e_stats, outers, e_start)
                        e_stats = vstats
                        e_start = len(outers)
                n = len(frame)
                if n <= limit:  # (a limit that is not a length is negative)
                    # OuterTemplate.build, inlined (``base``: the IPv4 header's sum but for the
                    # total length and id, less one: see _resolve_encap); the UDP source port
                    # from the hash of the packet's key (the EMC computed it)
                    ip_id += 1
                    outers.append(
                        pack_outer(eth, n + 36, ip_id, ftp, 0xFFFE - (base + n + ip_id) % 0xFFFF,
                                   addrs, SPORT_MIN + hash(key) % SPORT_WIDTH, dport, n + 16, tail)
                        + frame
                    )  # fmt: skip
                elif limit == _NOT_VXLAN:
                    others.append((flow, frame, key))  # its actions run below
                else:
                    slow.append((target, frame, key))  # too long, cannot be sent, a checksum
        table.n_cache_hit += len(frames) - classified
        table.n_mask_hit += len(frames) - classified  # each cache hit found one mask
        dp.stats.n_hit += len(frames) - len(misses)
        for port_no, out_frames in outputs.items():
            self.forward(dp, port_no, out_frames)
        if e_cache is not None:
            if e_stats is not None:
                self._count_sent(e_stats, outers, e_start)
            self._encap_end(e_cache, outers, slow, ip_id)
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

    def _run_actions(
        self, dp: Datapath, vport: Vport, others: list[tuple[Flow, bytes, bytes]]
    ) -> None:
        """Frames whose flow has actions other than one output (and other than the
        encapsulations of :meth:`ingress`): run them one by one."""
        runner = ActionRunner(self, dp)
        dropped = 0
        for flow, frame, _key in others:
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
        """Output to a tunnel vport: the packet is encapsulated with the key set by
        ``set(tunnel(...))`` and leaves through the uplink as a packet of the extension's own
        (one, or its outer fragments); drops count in the vport's tx_dropped and the
        endpoint's counters."""
        tunnel = self.tunnel
        stats = vport.stats
        if vport.type is not VportType.VXLAN:
            stats.tx_dropped += 1
            return
        tunnel.maybe_tick()
        result = tunnel.encapsulate(
            frame, meta.egress_tunnel, vport.dst_port or OVS_VXLAN_DEFAULT_PORT, meta.hash
        )
        if result is None:
            stats.tx_dropped += 1
        else:
            outers, uplink = result
            parent = runner.parent
            for outer in outers:
                packet = Packet(outer, None, parent)
                packet.dests.append(uplink)
                if isinstance(parent, FrameRef):
                    parent.refs += 1
                runner.sends.append(packet)
            self.created += len(outers)
            stats.tx_packets += 1
            stats.tx_bytes += len(frame)
        if tunnel.tx:
            runner.sends.extend(self._tunnel_tx_packets())

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
                self.recirc_limit_drops += 1 + len(runner.recirc)  # as the kernel's limit
                runner.recirc.clear()
                return
            key = self.key_of(frame, meta)
            flow = dp.flows.lookup(key)
            if flow is None:
                dp.stats.n_missed += 1
                self._queue_miss(runner, dp, runner.input_vport(meta), key, frame)
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

    # -- tunnels: decapsulation and bulk encapsulation (ovsdp/tunnel, docs/tunnel.md) -----------

    def _tunnel_rx(self, frames: list[bytes]) -> list[bytes]:
        """A batch from the uplink: VXLAN packets for the VTEP are decapsulated and go through
        the flow table of their VXLAN vport's datapath; fragments for the VTEP are held for
        reassembly; the rest is returned to go the ordinary way.

        The decapsulated inner frame is the switch's frame with its data start advanced past
        the outer headers (an NBL's NdisAdvanceNetBufferDataStart), so it is completed like
        any switch frame; a reassembled datagram stands for the fragment that completed it,
        and the other fragments are completed when they are taken in.

        The frames at the start of the batch that are the common case for the one VXLAN port
        are taken by :meth:`_decap_fast`; the endpoint (``TunnelEndpoint.receive``) takes the
        rest, in order.
        """
        tunnel = self.tunnel
        tunnel.maybe_tick()
        ports: dict[int, tuple[tuple[Datapath, Vport], int]] = {}
        for dp in self.extension.datapaths.values():
            if dp.vports.n_tunnel:
                for (vtype, dst_port), vport in dp.vports.by_tunnel.items():
                    if vtype == VportType.VXLAN and dst_port not in ports:
                        ports[dst_port] = ((dp, vport), vport.port_no)
        if len(ports) == 1:
            taken = self._decap_fast(frames, ports)
            if taken:
                if taken == len(frames):
                    return []
                frames = frames[taken:]
        decapsulated, rest, consumed = tunnel.receive(frames, ports)
        if consumed:
            self.switch.complete(consumed)
        for (dp, vport), items in decapsulated.items():
            self._ingress_decapsulated(dp, vport, items)
        if tunnel.tx:
            self._send_tunnel_tx()
        return rest

    def _decap_fast(
        self, frames: list[bytes], ports: dict[int, tuple[tuple[Datapath, Vport], int]]
    ) -> int:
        """The endpoint's common case (``TunnelEndpoint.receive``: an unfragmented VXLAN packet
        for the VTEP and the one VXLAN port in ``ports``, without IP options or UDP checksum,
        whose inner frame is untagged IPv4 TCP or UDP), inlined in the lookup loop of
        :meth:`_ingress_decapsulated` so that a packet costs one loop: the same checks, the
        same flow key in one pack.  It takes the frames from the start of the batch up to the
        first that is anything else (the endpoint takes that one and the rest, in order), and
        returns how many it took.  tests/test_decap_fast.py checks that it decides as the endpoint
        does."""
        ((port, ((dp, vport), port_no)),) = ports.items()
        vtep = self.tunnel.vtep_int
        head = key_head(port_no)
        unpack = RX_OUTER.unpack_from
        unpack_inner = RX_INNER.unpack_from
        pack_key = RX_KEY.pack
        tcp_min = TCP_MIN_ULEN
        table = dp.flows
        emc = table.emc
        classify = table.classify
        now = self.clock()
        outputs: dict[int, list[bytes]] = {}
        others: list[tuple[Flow, bytes, bytes]] = []
        misses: list[tuple[bytes, bytes]] = []
        taken = classified = nbytes = 0
        last_out = -1
        last_frames: list[bytes] = []
        for frame in frames:
            n = len(frame)
            if n < 34 + RX_INNER_ULEN:
                break
            # (see RX_OUTER and TunnelEndpoint.receive)
            et, vhl, tos, total, ident, frag, ttl, proto, csum, src, dst, sport, dport, ulen, \
                udp_vx, vni, res = unpack(frame)  # fmt: skip
            if not (
                dst == vtep
                and et == 0x0800
                and (not frag or frag == 0x4000)  # not a fragment
                and dport == port
                and vhl == 0x45
                and proto == 17
                and udp_vx == NO_CSUM_VXLAN_I
                and not res
                and total + 14 <= n
                and RX_INNER_ULEN <= ulen <= total - 20
                and not (tos + total + ident + frag + (ttl << 8) + csum + src + dst
                         + IP_SUM_CONSTANT) % 0xFFFF
            ):  # fmt: skip
                break
            i_macs, i_et, i_vhl, i_tos, i_frag, i_ttl, i_proto, i_addrs, i_ports, i_off, \
                i_flags = unpack_inner(frame)  # fmt: skip
            if not (
                i_et == 0x0800
                and i_vhl == 0x45
                and (not i_frag or i_frag == 0x4000)
                and ((i_proto == 6 and ulen >= tcp_min[i_off]) or i_proto == 17)
            ):
                break
            if i_proto == 17:
                i_flags = 0
            key = pack_key(head, vni, src, dst, tos, ttl, RX_FLAGS_PROTO, sport, dport,
                           i_macs, 0x0800, 1, i_proto, i_tos, i_ttl, 0, i_addrs, i_ports,
                           i_flags)  # fmt: skip
            inner = frame[50 : 34 + ulen]
            taken += 1
            # the rest as _ingress_decapsulated
            size = ulen - 16
            nbytes += size
            entry = emc.get(key)
            if entry is None or entry[0].dead:
                classified += 1
                flow = classify(key)
                if flow is None:
                    misses.append((key, inner))
                    continue
                flags = tcp_flags_of(key)
            else:
                flow, flags = entry
            flow.n_packets += 1
            flow.n_bytes += size
            flow.used = now
            if flags:
                flow.tcp_flags |= flags
            out = flow.out
            if out == last_out:  # most of a batch goes where its previous frame went
                last_frames.append(inner)
            elif out is not None:
                last_out = out
                last_frames = outputs.get(out)  # type: ignore[assignment]
                if last_frames is None:
                    last_frames = outputs[out] = [inner]
                else:
                    last_frames.append(inner)
            else:
                others.append((flow, inner, key))
        if taken:
            self.tunnel.counters.decap_packets += taken
            self._decapsulated(dp, vport, taken, nbytes, classified, outputs, others, misses)
        return taken

    def _ingress_decapsulated(
        self, dp: Datapath, vport: Vport, items: list[tuple[bytes, bytes]]
    ) -> None:
        """Inner frames from a VXLAN vport, with their keys (tunnel metadata and in_port in
        the prefix): the ingress path of :meth:`ingress` for keys computed per frame."""
        table = dp.flows
        emc = table.emc
        classify = table.classify
        now = self.clock()
        outputs: dict[int, list[bytes]] = {}
        others: list[tuple[Flow, bytes, bytes]] = []
        misses: list[tuple[bytes, bytes]] = []
        classified = 0
        nbytes = 0
        last_out = -1
        last_frames: list[bytes] = []
        for key, frame in items:
            size = len(frame)
            nbytes += size
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
            flow.n_bytes += size
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
                others.append((flow, frame, key))
        self._decapsulated(dp, vport, len(items), nbytes, classified, outputs, others, misses)

    def _decapsulated(
        self,
        dp: Datapath,
        vport: Vport,
        count: int,
        nbytes: int,
        classified: int,
        outputs: dict[int, list[bytes]],
        others: list[tuple[Flow, bytes, bytes]],
        misses: list[tuple[bytes, bytes]],
    ) -> None:
        """After the lookup of ``count`` decapsulated frames (``nbytes`` bytes, ``classified``
        of them by the classifier): statistics, outputs, other actions (with the tunnel
        metadata in their packet's metadata), upcalls."""
        stats = vport.stats
        stats.rx_packets += count
        stats.rx_bytes += nbytes
        table = dp.flows
        table.n_cache_hit += count - classified
        table.n_mask_hit += count - classified  # each cache hit found one mask
        dp.stats.n_hit += count - len(misses)
        for port_no, out_frames in outputs.items():
            self.forward(dp, port_no, out_frames)
        if others:
            runner = ActionRunner(self, dp)
            dropped = 0
            for flow, frame, key in others:
                program: ActionProgram = flow.program
                if program.drops:
                    dropped += 1
                    continue
                ref = FrameRef(self.switch)
                runner.parent = ref
                meta = PacketMeta(vport.port_no, tunnel=key_metadata(key).tunnel)
                program.execute(frame, meta, runner)
                self.run_recirculations(runner)
                ref.release()
            if dropped:
                self.switch.complete(dropped)
            self.flush(runner)
        if misses:
            self._upcall_misses(dp, vport, misses)

    def _encap_begin(self, dp: Datapath) -> _EncapCache:
        """Before the first encapsulation of a batch from ``dp`` (see :meth:`ingress`): the
        datapath's resolved encapsulations, still valid or emptied.

        Each outer frame is the switch's frame with outer headers pushed in front (an NBL's
        NdisRetreatNetBufferDataStart), forwarded and completed like any switch frame
        (:meth:`_encap_end`); a frame that has to be fragmented becomes packets of the
        extension's own instead (:meth:`_encap_slow`).  What a program needs is resolved once
        (:meth:`_resolve_encap`) and kept while the endpoint's templates, the uplink's state and
        the datapath's tunnel vports stay the same, so a change of flow inside a batch costs
        one dict lookup.
        """
        caches = self._encap_caches
        cache = caches.get(dp)
        if cache is None:
            for old in [old for old in caches if old not in self.extension.datapaths.values()]:
                del caches[old]  # (datapaths that are gone)
            cache = caches[dp] = _EncapCache()
        if dp.vports.n_tunnel:
            tunnel = self.tunnel
            generation = tunnel.prepare()
            uplink = tunnel.uplink()
            up = uplink is not None and uplink.operational
            stamp: tuple[Any, ...] = (generation, up, *dp.vports.by_tunnel.values())
        else:
            uplink = None
            up = False
            stamp = ()
        if cache.retry or cache.stamp != stamp:
            cache.renew(stamp)
        cache.uplink = uplink
        cache.up = up
        return cache

    def _encap_end(
        self,
        cache: _EncapCache,
        outers: list[bytes],
        slow: list[tuple[_EncapTarget, bytes, bytes]],
        ip_id: int,
    ) -> None:
        """After a batch's encapsulations: the outer frames out of the uplink, the frames the
        bulk path does not send to :meth:`_encap_slow`."""
        tunnel = self.tunnel
        tunnel.ip_id = ip_id
        if outers:
            tunnel.counters.encap_packets += len(outers)
            self.switch.forward(cache.uplink, outers)  # type: ignore[arg-type]
        if slow:
            self._encap_slow(slow)
        if tunnel.tx:
            self._send_tunnel_tx()

    @staticmethod
    def _count_sent(stats: VportStats, outers: list[bytes], start: int) -> None:
        """tx statistics of a tunnel vport for the outer frames from ``start`` on (its bytes
        are the inner frames')."""
        count = len(outers) - start
        stats.tx_packets += count
        sent = outers[start:] if start else outers
        stats.tx_bytes += sum(map(len, sent)) - count * OUTER_HLEN

    def _encap_of(
        self, dp: Datapath, program: ActionProgram, cache: _EncapCache
    ) -> tuple[Any, ...]:
        """What :meth:`ingress` loads for a flow of ``program`` in ``dp`` (its ``encap``):
        the program's entry in ``cache``, resolved if it has none."""
        fast = cache.entries.get(program)
        return self._resolve_encap(dp, program, cache) if fast is None else fast

    def _resolve_encap(
        self, dp: Datapath, program: ActionProgram, cache: _EncapCache
    ) -> tuple[Any, ...]:
        """What :meth:`ingress` loads for a program in ``dp``, kept in ``cache`` (and on its
        flows: Flow.encap).  A tuple: the longest frame the program encapsulates without
        fragments, or _NOT_VXLAN (not exactly set(tunnel) + output to a VXLAN vport: its
        actions run, _run_actions), _DROPPED (no template: the lookup is counted in
        _encap_slow, and tried again in the next batch; or the uplink is down), _SLOW (a UDP
        checksum: _encap_slow); the template's constant fields; the vport's statistics; the
        :class:`_EncapTarget` for _encap_slow; the cache's token (the tuple is stale once the
        cache has another)."""
        plans = self._encap_plans
        plan = plans.get(program)
        if plan is None:
            if len(plans) >= MAX_ENCAP_PLANS:
                plans.clear()
            plan = plans[program] = _encap_plan(program)
        fast = cache.no_encap
        vport = None if plan is False else dp.vports.get(plan.port_no)
        if plan is not False and vport is not None and vport.type is VportType.VXLAN:
            template = self.tunnel.lookup_template(
                plan.params, vport.dst_port or OVS_VXLAN_DEFAULT_PORT, count=False
            )
            target = _EncapTarget(plan.params, vport, template)
            if template is None or not cache.up:
                cache.retry |= template is None
                fast = (_DROPPED, *_NO_FAST[1:-3], vport.stats, target, cache.token)
            else:
                # one tuple for every program of the same template and vport (flows to one
                # remote VTEP share it: fewer objects for a batch of many flows to touch)
                outer = template.outer
                shared = cache.shared.get((outer, vport))
                if shared is None:
                    limit = _SLOW if outer.csum else template.mtu + 14 - OUTER_HLEN
                    eth, ftp, addrs, dport, vx, ip_sum = outer.fast
                    # the UDP checksum (0) and the VXLAN header in one piece; the IPv4 total
                    # length is the inner length + 36; the checksum is 0xFFFE less (the sum - 1)
                    # % 0xFFFF, i.e. 0xFFFF less the sum modulo 0xFFFF, or 0 when it is 0 (no
                    # conditional)
                    tail = bytes(2) + vx.to_bytes(8, "big")
                    shared = cache.shared[(outer, vport)] = (
                        limit, eth, ftp, addrs, dport, tail, ip_sum + 35, vport.stats, target,
                        cache.token,
                    )  # fmt: skip
                fast = shared
        entries = cache.entries
        if len(entries) >= MAX_ENCAP_PLANS:
            entries.clear()
            cache.shared.clear()
        entries[program] = fast
        return fast

    def _encap_slow(self, slow: list[tuple[_EncapTarget, bytes, bytes]]) -> None:
        """Tunnel-flow frames the bulk path does not send: those that cannot be sent now
        (no template: counted by a lookup, which may ask for the next hop's MAC; or the uplink
        is down), those whose outer packet exceeds the uplink's MTU (dropped with DF, else sent
        as outer fragments, packets of the extension's own that complete the frame with the
        last), and those of templates with a UDP checksum."""
        switch = self.switch
        tunnel = self.tunnel
        sends: list[Packet] = []
        whole: list[bytes] = []
        dropped = 0
        uplink = None
        for target, frame, key in slow:
            params, vport, template = target
            stats = vport.stats
            if template is None or not template.uplink.operational:
                if template is None:
                    tunnel.lookup_template(params, vport.dst_port or OVS_VXLAN_DEFAULT_PORT)
                else:
                    tunnel.counters.no_uplink += 1
                stats.tx_dropped += 1
                dropped += 1
                continue
            pieces = tunnel.wrap(template, frame, hash(key) or 1)
            if pieces is None:
                stats.tx_dropped += 1
                dropped += 1
                continue
            stats.tx_packets += 1
            stats.tx_bytes += len(frame)
            uplink = template.uplink
            if len(pieces) == 1:
                whole += pieces  # one frame for one switch frame: forwarded like the bulk's
                continue
            ref = FrameRef(switch)
            for piece in pieces:
                packet = Packet(piece, None, ref)
                packet.dests.append(template.uplink)
                sends.append(packet)
            ref.refs += len(pieces) - 1
        if dropped:
            switch.complete(dropped)
        if whole:
            switch.forward(uplink, whole)  # type: ignore[arg-type]
        if sends:
            self.created += len(sends)
            switch.send(sends)

    def _tunnel_tx_packets(self) -> list[Packet]:
        """The endpoint's own frames (ARP requests) as packets of the extension's own."""
        frames = self.tunnel.take_tx()
        uplink = self.tunnel.uplink()
        if uplink is None or not uplink.operational:
            return []
        packets = []
        for frame in frames:
            packet = Packet(frame, None, OWN)
            packet.dests.append(uplink)
            packets.append(packet)
        self.created += len(packets)
        return packets

    def _send_tunnel_tx(self) -> None:
        packets = self._tunnel_tx_packets()
        if packets:
            self.switch.send(packets)


MAX_ENCAP_PLANS = 4096
# an encapsulation's limit when it is not the longest frame the bulk path encapsulates:
_DROPPED = -1  # its frames cannot be sent now (no template, the uplink down): _encap_slow
_NOT_VXLAN = -2  # not set(tunnel) + output to a VXLAN vport: the general path
_SLOW = -3  # its template has a UDP checksum: _encap_slow
# an entry of _resolve_encap for a program that is no encapsulation (its last item, the cache's
# token, is added per cache)
_NO_FAST: tuple[Any, ...] = (_NOT_VXLAN, b"", 0, b"", 0, b"", 0, None, None, None)
# the outer headers as the bulk path packs them: OUTER_STRUCT with the UDP checksum (0) and the
# VXLAN header as one 10-byte piece
_OUTER_BULK = struct.Struct("!16sHHIH8sHHH10s")
assert _OUTER_BULK.size == OUTER_STRUCT.size
SPORT_WIDTH = SPORT_MAX - SPORT_MIN


class _EncapPlan(NamedTuple):
    """A flow program that is exactly set(tunnel(...)) then an output: its tunnel parameters
    and output port number."""

    params: TunnelParams
    port_no: int


class _EncapTarget(NamedTuple):
    """Where a program's packets go, for _encap_slow: the tunnel parameters, the VXLAN vport,
    the template (None: no template now)."""

    params: TunnelParams
    vport: Vport
    template: Template | None


class _EncapCache:
    """One datapath's resolved encapsulations (:meth:`Pipeline._resolve_encap`) by program,
    valid for ``stamp``: the endpoint's template generation, whether the uplink is up, the
    datapath's tunnel vports.  Its flows keep theirs (Flow.encap), each holding ``token``: a
    new token makes them stale.  ``retry``: a template lookup failed, so start afresh next
    batch.  ``uplink``, ``up``: the uplink and its state in the current batch."""

    __slots__ = ("entries", "no_encap", "retry", "shared", "stamp", "token", "up", "uplink")

    def __init__(self) -> None:
        self.entries: dict[ActionProgram, tuple[Any, ...]] = {}
        # the entries that have a template, by (template, vport): programs share them
        self.shared: dict[tuple[OuterTemplate, Vport], tuple[Any, ...]] = {}
        self.uplink: SwitchPort | None = None
        self.up = False
        self.renew(())

    def renew(self, stamp: tuple[Any, ...]) -> None:
        """Forget every entry (those flows keep are stale from now on)."""
        self.entries.clear()
        self.shared.clear()
        self.stamp = stamp
        self.retry = False
        self.token = object()
        self.no_encap = (*_NO_FAST[:-1], self.token)  # the entry of any other program


def _encap_plan(program: ActionProgram) -> _EncapPlan | Literal[False]:
    """The encapsulation plan of a program, or False if it is not set(tunnel) + output."""
    actions = program.actions
    if len(actions) != 2:
        return False
    (set_name, set_value), (out_name, port_no) = actions
    if set_name != "set" or out_name != "output" or not isinstance(set_value, Mapping):
        return False
    if len(set_value) != 1 or not isinstance(set_value.get("tunnel"), Mapping):
        return False
    params = TunnelParams.from_key(set_value["tunnel"])
    if params is None:
        return False  # the general path counts it
    return _EncapPlan(params, int(port_no))
