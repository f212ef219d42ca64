"""L2 learning and forwarding, sans I/O: what ovs-vswitchd's NORMAL action and its revalidators
decide for a bridge of trunk ports, without sockets (the I/O loop is :mod:`.service`).

* :class:`MacTable` -- (VLAN, MAC) -> port, least recently seen first, with aging and a size cap;
* :class:`Forwarder` -- turns MISS upcalls into megaflows and executes (:meth:`Forwarder.miss`),
  keeps an index of the flows it installed (by UFID, by MAC address they depend on, by in_port,
  flooding ones), deletes the flows a MAC move, a MAC expiry or a port change makes wrong, and
  picks idle flows from a flow dump (:meth:`Forwarder.revalidate`).

Everything the forwarder wants done is queued and taken as one :class:`Batch` of
:mod:`userspace.dpif` operations (deletes, then puts, then executes); the results go back through
:meth:`Forwarder.finish`. Times are milliseconds on CLOCK_MONOTONIC, the clock of a flow's
``used``.
"""

from __future__ import annotations

import errno
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ovsdp.netlink.structs import OvsKeyEthernet

from ..dpif import Execute, FlowDel, FlowPut, OpResult
from ..odp import zero_mask
from .config import TunnelConfig

MacKey = tuple[int, bytes]
"""A MAC table key: (VLAN id, 0 when untagged; address)."""

Action = tuple[str, Any]

FULL32 = 0xFFFFFFFF
FULL64 = (1 << 64) - 1
VLAN_MATCH = 0x1FFF  # VID and the CFI ("tag present") bit; the PCP is wildcarded
RESERVED_PREFIX = b"\x01\x80\xc2\x00\x00"  # 01:80:c2:00:00:0x, IEEE 802.1D reserved (BPDUs)
_ETH_MASK = OvsKeyEthernet(b"\xff" * 6, b"\xff" * 6)
_PLAIN = struct.Struct("<IH")
NEVER = 1 << 62  # ms: a deadline that never comes
REPUT_MS = 1000  # an upcall for a flow put this long ago: the datapath lost it, put it again

OUTPUT = "output"
FLOOD = "flood"
DROP = "drop"


def output_actions(port_no: int, tunnel: TunnelConfig | None = None) -> list[Action]:
    """The actions that send a frame out of a port (a vxlan port: set the tunnel key first)."""
    if tunnel is None:
        return [("output", port_no)]
    tun: dict[str, Any] = {"id": tunnel.key, "ipv4_dst": tunnel.remote_ip, "ttl": tunnel.ttl}
    if tunnel.local_ip:
        tun["ipv4_src"] = tunnel.local_ip
    tun["tp_dst"] = tunnel.dst_port
    tun["dont_fragment"] = True
    return [("set", {"tunnel": tun}), ("output", port_no)]


@dataclass(frozen=True)
class PortSpec:
    """A port the forwarder switches between: its name, how to send out of it, and (vxlan
    ports with a remote) which tunnel (VNI, remote IPv4) its received frames must come from."""

    name: str
    actions: tuple[Action, ...]
    accept: tuple[int, int] | None = None

    @classmethod
    def make(cls, port_no: int, name: str, tunnel: TunnelConfig | None = None) -> PortSpec:
        accept = None if tunnel is None else (tunnel.key, tunnel.remote_ip)
        return cls(name, tuple(output_actions(port_no, tunnel)), accept)


class MacEntry:
    """Where an address was last seen, and when (ms)."""

    __slots__ = ("port", "seen")

    def __init__(self, port: int, seen: int) -> None:
        self.port = port
        self.seen = seen


class MacTable:
    """(VLAN, MAC) -> port, least recently seen first (a refresh moves an entry to the end):
    eviction takes the front."""

    def __init__(self, size: int, aging_ms: int) -> None:
        self.size = size
        self.aging_ms = aging_ms
        self.entries: dict[MacKey, MacEntry] = {}
        self.learned = 0  # new addresses
        self.moves = 0  # addresses seen on another port
        self.evicted = 0  # removed for room
        self.expired = 0  # removed for age
        self.next_expiry = NEVER  # no entry can expire before (ms)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, key: MacKey) -> int | None:
        """The port an address is on, if known."""
        entry = self.entries.get(key)
        return None if entry is None else entry.port

    def learn(self, key: MacKey, port: int, now: int) -> list[MacKey]:
        """Seen on ``port`` now; the keys whose location changed (new, moved, evicted)."""
        entries = self.entries
        entry = entries.pop(key, None)
        if entry is not None:
            entries[key] = entry  # most recently seen: to the end
            if now > entry.seen:
                entry.seen = now
            if entry.port == port:
                return []
            entry.port = port
            self.moves += 1
            return [key]
        changed = [key]
        while len(entries) >= self.size:
            oldest = next(iter(entries))
            del entries[oldest]
            changed.append(oldest)
            self.evicted += 1
        entries[key] = MacEntry(port, now)
        self.learned += 1
        if now + self.aging_ms < self.next_expiry:
            self.next_expiry = now + self.aging_ms
        return changed

    def refresh(self, key: MacKey, port: int, when: int) -> None:
        """Traffic from ``key`` on ``port`` at ``when`` (a flow's ``used``): keep it alive."""
        entry = self.entries.get(key)
        if entry is not None and entry.port == port and when > entry.seen:
            entry.seen = when
            del self.entries[key]
            self.entries[key] = entry

    def expire(self, now: int) -> list[MacKey]:
        """Remove the entries not seen for the aging time; their keys."""
        # A full scan: refreshes from flow statistics carry times older than entries learned
        # since, so the order is only roughly by age (it serves eviction well enough).
        if now < self.next_expiry:
            return []
        limit = now - self.aging_ms
        entries = self.entries
        out = [key for key, entry in entries.items() if entry.seen <= limit]
        for key in out:
            del entries[key]
        self.expired += len(out)
        oldest = min((e.seen for e in entries.values()), default=None)
        self.next_expiry = NEVER if oldest is None else oldest + self.aging_ms
        return out

    def forget_port(self, port: int) -> list[MacKey]:
        """Remove every address on ``port``; their keys."""
        out = [k for k, e in self.entries.items() if e.port == port]
        for key in out:
            del self.entries[key]
        return out


class Flow:
    """A megaflow the forwarder installed (or is about to)."""

    __slots__ = (
        "actions",
        "alive",
        "dst",
        "flood",
        "gen",
        "in_port",
        "installed",
        "key",
        "kind",
        "mask",
        "match",
        "seen",
        "sent",
        "src",
        "ufid",
        "used",
    )

    def __init__(
        self,
        match: tuple[Any, ...],
        ufid: bytes,
        key: dict[str, Any],
        mask: dict[str, Any],
        actions: list[Action],
        kind: str,
        in_port: int,
        src: MacKey | None,
        dst: MacKey | None,
        now: int,
    ) -> None:
        self.match = match
        self.ufid = ufid
        self.key = key
        self.mask = mask
        self.actions = actions
        self.kind = kind  # OUTPUT, FLOOD or DROP
        self.in_port = in_port
        self.src = src  # the learned source it depends on
        self.dst = dst  # the destination whose location it depends on (unicast only)
        self.flood = kind == FLOOD
        self.installed = now
        self.used = 0  # the datapath's last report (0: never used)
        self.gen = 0  # revalidation generation when the put was sent
        self.seen = -1  # last revalidation that found it in the datapath
        self.sent = False  # put sent
        self.alive = True

    def __repr__(self) -> str:
        return f"Flow({self.kind} in_port={self.in_port} ufid={self.ufid.hex()})"


@dataclass
class Counters:
    """What the forwarder did (cumulative)."""

    upcalls: int = 0  # misses handled
    flows_new: int = 0  # puts sent
    flows_deleted: int = 0  # deletes sent (invalidated or expired)
    flows_expired: int = 0  # of which idle
    flows_vanished: int = 0  # ours, missing from a dump (deleted by someone else)
    put_errors: int = 0
    put_exists: int = 0  # EEXIST on put: benign (another handler raced)
    del_missing: int = 0  # ENOENT on delete: benign (already gone)
    executes: int = 0
    execute_errors: int = 0
    queued: int = 0  # upcalls of a flow already being installed (executed only)
    dropped: int = 0  # decisions to drop (multicast source, reserved, same port, tunnel)
    unhandled: int = 0  # upcalls that are not Ethernet frames
    reinstalled: int = 0  # flows put again: upcalls long after their put (deleted by others)
    overruns: int = 0  # upcall socket overruns (ENOBUFS: upcalls dropped, see n_lost)


@dataclass
class Batch:
    """The operations of one wakeup: deletes, puts, executes, in that order."""

    dels: list[FlowDel] = field(default_factory=list)
    puts: list[FlowPut] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)  # the flow of each put
    execs: list[Execute] = field(default_factory=list)

    @property
    def ops(self) -> list[FlowDel | FlowPut | Execute]:
        return [*self.dels, *self.puts, *self.execs]

    def __len__(self) -> int:
        return len(self.dels) + len(self.puts) + len(self.execs)


def ufid_of(match: tuple[Any, ...]) -> bytes:
    """A flow's UFID: a 128-bit hash of what it matches (as ovs-vswitchd hashes the key)."""
    in_port, src, dst, ethertype, vlans, tun = match
    if vlans is None and tun is None:
        data = _PLAIN.pack(in_port, ethertype if ethertype is not None else 0x10000 - 1) + src + dst
    else:
        data = repr(match).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


def _mask(has_ethertype: bool, vlans: int, tunnel: bool) -> dict[str, Any]:
    mask: dict[str, Any] = {"recirc_id": FULL32}
    if tunnel:
        mask["tunnel"] = {"id": FULL64, "ipv4_src": FULL32}
    mask["in_port"] = FULL32
    mask["ethernet"] = _ETH_MASK
    if has_ethertype:
        mask["ethertype"] = 0xFFFF
    if vlans:
        inner: dict[str, Any] = {"ethertype": 0xFFFF}
        for _ in range(vlans - 1):
            inner = {"ethertype": 0xFFFF, "vlan": VLAN_MATCH, "encap": inner}
        mask["vlan"] = VLAN_MATCH
        mask["encap"] = inner
    return mask


L3_ATTR = {
    0x0800: "ipv4",
    0x86DD: "ipv6",
    0x0806: "arp",
    0x8035: "arp",
    0x8847: "mpls",
    0x8848: "mpls",
}
"""The attribute an ethertype makes the kernel expect in a key (match_validate)."""
_zeros: dict[tuple[str, int], Any] = {}


def _zero(name: str, value: Any) -> Any:
    """An attribute's all-zero value (cached per attribute, and per length for MPLS)."""
    size = len(value) if name == "mpls" else 0
    zero = _zeros.get((name, size))
    if zero is None:
        zero = _zeros[(name, size)] = zero_mask({name: value})[name]
    return zero


def _l2_level(level: dict[str, Any], out: dict[str, Any]) -> None:
    """Ethertype, VLANs and the L3 attribute (zeroed) of one level of a key."""
    ethertype = level.get("ethertype")
    if ethertype is not None:
        out["ethertype"] = ethertype
    if "vlan" in level:
        out["vlan"] = level["vlan"]
        encap = level.get("encap")
        if encap is not None:
            inner: dict[str, Any] = {}
            _l2_level(encap, inner)
            out["encap"] = inner
        return
    name = None if ethertype is None else L3_ATTR.get(ethertype)
    if name is not None and name in level:
        out[name] = _zero(name, level[name])


def l2_key(key: dict[str, Any]) -> dict[str, Any]:
    """The key a megaflow is put with: the packet's key with everything the mask wildcards
    zeroed (what the datapath stores for it anyway), and no L4 attribute: with IP protocol 0
    the kernel's rules expect none, so only the L3 attribute an ethertype requires remains."""
    out: dict[str, Any] = {"recirc_id": key.get("recirc_id", 0)}
    if "tunnel" in key:
        out["tunnel"] = key["tunnel"]
    out["in_port"] = key["in_port"]
    out["ethernet"] = key["ethernet"]
    _l2_level(key, out)
    return out


def _vlan_chain(key: dict[str, Any]) -> tuple[int, ...]:
    """The VLAN TCIs (as matched) and the inner ethertype of a tagged key."""
    chain: list[int] = []
    level: dict[str, Any] | None = key
    while level is not None and "vlan" in level:
        chain.append(level["vlan"] & VLAN_MATCH)
        level = level.get("encap")
        if level is None:
            break
        chain.append(level.get("ethertype", -1))
    return tuple(chain)


class Forwarder:
    """The decisions of a learning switch over a datapath's ports; see the module docstring."""

    def __init__(
        self,
        *,
        idle_timeout_ms: int = 10_000,
        mac_aging_ms: int = 300_000,
        mac_table_size: int = 65536,
    ) -> None:
        self.idle_ms = idle_timeout_ms
        self.reput_ms = REPUT_MS
        self.next_expiry = NEVER  # no flow can idle out before (ms)
        self.macs = MacTable(mac_table_size, mac_aging_ms)
        self.ports: dict[int, PortSpec] = {}
        self.counters = Counters()
        self.flows: dict[tuple[Any, ...], Flow] = {}
        self.by_ufid: dict[bytes, Flow] = {}
        self.by_mac: dict[MacKey, set[Flow]] = {}
        self.by_port: dict[int, set[Flow]] = {}
        self.flooding: set[Flow] = set()
        self.generation = 0
        self._flood: dict[int, list[Action]] = {}
        self._unicast: dict[int, list[Action]] = {}
        self._exec_keys: dict[int, dict[str, Any]] = {}
        self._masks: dict[tuple[bool, int, bool], dict[str, Any]] = {}
        self._pending: list[Flow] = []
        self._dels: list[FlowDel] = []
        self._execs: list[Execute] = []

    def reset(self) -> None:
        """Forget every flow, address and port (the datapath was created again)."""
        for flow in list(self.by_ufid.values()):
            self._unindex(flow)
        self._pending.clear()
        self._dels.clear()
        self._execs.clear()
        self.macs.entries.clear()
        self.macs.next_expiry = NEVER
        self.next_expiry = NEVER
        self.ports.clear()
        self._flood.clear()
        self._unicast.clear()

    # -- ports --------------------------------------------------------------------------------

    def port_up(self, port_no: int, spec: PortSpec) -> bool:
        """A port takes part (again, or with new output actions); whether anything changed."""
        if self.ports.get(port_no) == spec:
            return False
        self.ports[port_no] = spec
        self._ports_changed()
        return True

    def port_down(self, port_no: int) -> bool:
        """A port is gone (or down): its flows, its addresses, every flooding flow go."""
        if self.ports.pop(port_no, None) is None:
            return False
        for flow in list(self.by_port.get(port_no, ())):
            self._invalidate(flow)
        for key in self.macs.forget_port(port_no):
            self._invalidate_mac(key)
        self._ports_changed()
        return True

    def sync_ports(self, ports: dict[int, PortSpec]) -> None:
        """The whole port set, as a dump read it (a resync)."""
        for port_no in [p for p in self.ports if p not in ports]:
            self.port_down(port_no)
        for port_no, spec in ports.items():
            self.port_up(port_no, spec)

    def _ports_changed(self) -> None:
        self._flood.clear()
        self._unicast.clear()
        for flow in list(self.flooding):
            self._invalidate(flow)

    def flood_actions(self, in_port: int) -> list[Action]:
        """Every port but ``in_port`` (cached until the port set changes)."""
        actions = self._flood.get(in_port)
        if actions is None:
            actions = []
            for port_no in sorted(self.ports):
                if port_no != in_port:
                    actions.extend(self.ports[port_no].actions)
            self._flood[in_port] = actions
        return actions

    def unicast_actions(self, port_no: int) -> list[Action]:
        """The actions that send out of one port (cached)."""
        actions = self._unicast.get(port_no)
        if actions is None:
            spec = self.ports.get(port_no)
            actions = list(spec.actions) if spec is not None else [("output", port_no)]
            self._unicast[port_no] = actions
        return actions

    # -- misses -------------------------------------------------------------------------------

    def miss(self, key: dict[str, Any], packet: bytes, now: int) -> Flow | None:
        """Decide for one MISS upcall: learn its source, queue a megaflow and the packet's
        execute. The flow (None: not an Ethernet frame)."""
        counters = self.counters
        counters.upcalls += 1
        eth = key.get("ethernet")
        if eth is None:
            counters.unhandled += 1
            return None
        in_port = key["in_port"]
        src = eth.src
        dst = eth.dst
        ethertype = key.get("ethertype")
        vlans: tuple[int, ...] | None = None
        vid = 0
        if "vlan" in key:
            vlans = _vlan_chain(key)
            vid = vlans[0] & 0xFFF
        tunnel = key.get("tunnel")
        tun = None if tunnel is None else (tunnel.get("id", 0), tunnel.get("ipv4_src", 0))
        match = (in_port, src, dst, ethertype, vlans, tun)
        flow = self.flows.get(match)
        if flow is not None:
            # a packet that missed before its flow was installed: same actions
            counters.queued += 1
            if flow.sent and now - flow.installed >= self.reput_ms:
                # not in flight any more: someone deleted the flow (a flush): put it again
                counters.reinstalled += 1
                flow.sent = False
                flow.installed = now
                self._pending.append(flow)
            self._execute(key, in_port, packet, flow.actions)
            return flow

        src_key: MacKey | None = None
        dst_key: MacKey | None = None
        out_port = -1
        spec = self.ports.get(in_port)
        if src[0] & 1 or (tun is not None and spec is not None and spec.accept not in (None, tun)):
            kind = DROP  # a multicast source (NORMAL drops it), or a tunnel we do not accept
        else:
            src_key = (vid, src)
            for changed in self.macs.learn(src_key, in_port, now):
                self._invalidate_mac(changed)
            if dst[0] & 1:
                kind = DROP if dst[:5] == RESERVED_PREFIX and dst[5] < 0x10 else FLOOD
            else:
                dst_key = (vid, dst)
                entry = self.macs.entries.get(dst_key)
                if entry is None:
                    kind = FLOOD
                elif entry.port == in_port:
                    kind = DROP
                else:
                    kind = OUTPUT
                    out_port = entry.port

        if kind == FLOOD:
            actions = self.flood_actions(in_port)
        elif kind == OUTPUT:
            actions = self.unicast_actions(out_port)
        else:
            actions = []
            counters.dropped += 1
        shape = (ethertype is not None, (len(vlans) + 1) // 2 if vlans else 0, tun is not None)
        mask = self._masks.get(shape)
        if mask is None:
            mask = self._masks[shape] = _mask(*shape)
        ufid = ufid_of(match)
        flow = Flow(match, ufid, l2_key(key), mask, actions, kind, in_port, src_key, dst_key, now)
        self._index(flow)
        self._pending.append(flow)
        self._execute(key, in_port, packet, actions)
        return flow

    def _execute(
        self, key: dict[str, Any], in_port: int, packet: bytes, actions: list[Action]
    ) -> None:
        if not actions:
            return
        meta: dict[str, Any] | None
        if key.get("tunnel") or key.get("priority") or key.get("skb_mark"):
            meta = {n: key[n] for n in ("priority", "tunnel", "in_port", "skb_mark") if n in key}
        else:
            meta = self._exec_keys.get(in_port)
            if meta is None:
                meta = self._exec_keys[in_port] = {"in_port": in_port}
        self._execs.append(Execute(packet, meta, actions))

    # -- the flow index -----------------------------------------------------------------------

    def _index(self, flow: Flow) -> None:
        self.flows[flow.match] = flow
        self.by_ufid[flow.ufid] = flow
        by_port = self.by_port.get(flow.in_port)
        if by_port is None:
            by_port = self.by_port[flow.in_port] = set()
        by_port.add(flow)
        for mac in (flow.src, flow.dst):
            if mac is not None:
                flows = self.by_mac.get(mac)
                if flows is None:
                    flows = self.by_mac[mac] = set()
                flows.add(flow)
        if flow.flood:
            self.flooding.add(flow)

    def _unindex(self, flow: Flow) -> None:
        flow.alive = False
        if self.flows.get(flow.match) is flow:
            del self.flows[flow.match]
        if self.by_ufid.get(flow.ufid) is flow:
            del self.by_ufid[flow.ufid]
        self.by_port[flow.in_port].discard(flow)
        for mac in (flow.src, flow.dst):
            if mac is not None:
                flows = self.by_mac.get(mac)
                if flows is not None:
                    flows.discard(flow)
                    if not flows:
                        del self.by_mac[mac]
        if flow.flood:
            self.flooding.discard(flow)

    def _invalidate(self, flow: Flow) -> None:
        """The flow is wrong now: forget it, and delete it if its put was sent."""
        if not flow.alive:
            return
        self._unindex(flow)
        if flow.sent:
            self._dels.append(FlowDel(ufid=flow.ufid))
            self.counters.flows_deleted += 1

    def _invalidate_mac(self, key: MacKey) -> None:
        """An address changed place (learned, moved, expired, evicted, its port gone)."""
        flows = self.by_mac.get(key)
        if flows:
            for flow in list(flows):
                self._invalidate(flow)

    def flows_of_port(self, port_no: int) -> list[Flow]:
        """The live flows whose in_port is ``port_no``."""
        return [f for f in self.by_port.get(port_no, ()) if f.alive]

    # -- batches ------------------------------------------------------------------------------

    def take(self) -> Batch:
        """Everything queued since the last take: deletes, puts, executes."""
        batch = Batch(self._dels, [], [], self._execs)
        self._dels = []
        self._execs = []
        gen = self.generation
        for flow in self._pending:
            if flow.alive and not flow.sent:
                flow.sent = True
                flow.gen = gen
                batch.flows.append(flow)
                batch.puts.append(FlowPut(flow.key, flow.mask, flow.actions, flow.ufid))
                if flow.installed + self.idle_ms < self.next_expiry:
                    self.next_expiry = flow.installed + self.idle_ms
        self._pending = []
        self.counters.flows_new += len(batch.puts)
        self.counters.executes += len(batch.execs)
        return batch

    def finish(self, batch: Batch, results: Sequence[OpResult]) -> list[tuple[Flow, Any]]:
        """The results of a batch's operations (in ``batch.ops`` order); the flows whose put
        failed for another reason than EEXIST, with their error (they are forgotten)."""
        counters = self.counters
        failed: list[tuple[Flow, Any]] = []
        n_dels = len(batch.dels)
        for result in results[:n_dels]:
            if result.error is not None:
                counters.del_missing += 1
        put_results = results[n_dels : n_dels + len(batch.puts)]
        for flow, result in zip(batch.flows, put_results, strict=True):
            error = result.error
            if error is None:
                continue
            if error.errno == errno.EEXIST:
                counters.put_exists += 1
                continue
            counters.put_errors += 1
            failed.append((flow, error))
            if flow.alive:
                flow.sent = False
                self._unindex(flow)
        for result in results[n_dels + len(batch.puts) :]:
            if result.error is not None:
                counters.execute_errors += 1
        return failed

    # -- revalidation -------------------------------------------------------------------------

    def revalidation_due(self, now: int) -> bool:
        """Whether a dump can find anything to do: a flow that may have idled out, or an
        address that may age (its flows' statistics refresh it first)."""
        return now >= self.next_expiry or now >= self.macs.next_expiry

    def begin_revalidation(self) -> int:
        """A flow dump starts: its generation (flows put from now on are not judged by it)."""
        self.generation += 1
        return self.generation

    def revalidate(self, ufid: bytes | None, used: int, now: int) -> bool:
        """One dumped flow (UFID and ``used``, ms): refresh the source address it carries,
        delete it if idle. Whether it is one of ours."""
        if ufid is None:
            return False
        flow = self.by_ufid.get(ufid)
        if flow is None or not flow.sent:
            return False
        flow.seen = self.generation
        if used > flow.used:
            flow.used = used
            if flow.src is not None:
                self.macs.refresh(flow.src, flow.in_port, used)
        last = flow.used if flow.used > flow.installed else flow.installed
        if now - last >= self.idle_ms:
            self.counters.flows_expired += 1
            self._invalidate(flow)
        return True

    def end_revalidation(self, generation: int, now: int) -> None:
        """The dump is complete: forget ours it did not show (someone deleted them), then age
        the MAC table."""
        gone = [
            f
            for f in self.by_ufid.values()
            if f.sent and f.gen < generation and f.seen != generation
        ]
        for flow in gone:
            self.counters.flows_vanished += 1
            self._unindex(flow)
        deadline = NEVER
        for f in self.by_ufid.values():
            if f.sent:
                last = f.used if f.used > f.installed else f.installed
                if last < deadline:
                    deadline = last
        self.next_expiry = deadline + self.idle_ms if deadline < NEVER else NEVER
        self.age(now)

    def age(self, now: int) -> None:
        """Expire addresses not seen for the aging time (and the flows that depend on them)."""
        for key in self.macs.expire(now):
            self._invalidate_mac(key)

    def expired(self, dump: Iterable[tuple[bytes | None, int]], now: int) -> None:
        """A whole dump at once (tests, small tables): revalidate each, then end."""
        gen = self.begin_revalidation()
        for ufid, used in dump:
            self.revalidate(ufid, used, now)
        self.end_revalidation(gen, now)

    @property
    def n_flows(self) -> int:
        """Flows installed or about to be."""
        return len(self.by_ufid)
