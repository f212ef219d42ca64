"""The dpif API over the pseudo-device: what OVS's dpif-provider offers, as dpif-netlink does it.

* :meth:`Dpif.open` opens or creates a datapath and negotiates user features exactly as
  dpif-netlink does (the bit-31 probe, then per-CPU dispatch, then per-vport PIDs);
* ports: add, delete, query by number and by name, dump, upcall PIDs;
* flows: put (create, modify, may-create, zero stats, probe), get, delete, flush, dump (full or
  terse, by UFID), and a batched :meth:`Dpif.operate` that sends many requests in one record;
* execute; receiving upcalls; :class:`PortMonitor` for port events.

Keys and masks are dicts of the ``ovs_key`` attribute space, action lists lists of
``(name, value)``, exactly the netlink codec's values (:mod:`userspace.odp` turns them into OVS's
text and back).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ovsdp.netlink.constants import (
    NLM_F_CREATE,
    NLM_F_ECHO,
    NLM_F_REQUEST,
    OVS_DP_F_UNSUPPORTED,
    DpCmd,
    DpFeature,
    FlowCmd,
    PacketCmd,
    UfidFlag,
    VportCmd,
    VportType,
)
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import ErrorMessage, GenlMessage

from .netlink_socket import NetlinkSocket, Request, Result

log = logging.getLogger(__name__)

DP = "ovs_datapath"
VPORT = "ovs_vport"
FLOW = "ovs_flow"
PACKET = "ovs_packet"

TYPE_NAMES = {
    "netdev": VportType.NETDEV,
    "system": VportType.NETDEV,
    "internal": VportType.INTERNAL,
    "gre": VportType.GRE,
    "vxlan": VportType.VXLAN,
    "geneve": VportType.GENEVE,
}
"""Port type names as ovs-dpctl spells them (``system`` is how it shows netdev ports)."""

OVSP_NONE = 0xFFFF


def type_name(vport_type: int) -> str:
    """ovs-dpctl's name for a vport type (``system`` for netdev ports)."""
    names = {
        VportType.NETDEV: "system",
        VportType.INTERNAL: "internal",
        VportType.GRE: "gre",
        VportType.VXLAN: "vxlan",
        VportType.GENEVE: "geneve",
    }
    return names.get(vport_type, f"type{vport_type}")  # type: ignore[call-overload]


def port_type(name: str) -> int:
    """The vport type number of a type name (EAFNOSUPPORT for an unknown one, as the kernel)."""
    try:
        return int(TYPE_NAMES[name])
    except KeyError:
        raise NetlinkError(errno.EAFNOSUPPORT, f"unknown port type {name!r}") from None


@dataclass
class DpStats:
    """A datapath's counters (ovs_dp_stats and ovs_dp_megaflow_stats)."""

    n_hit: int
    n_missed: int
    n_lost: int
    n_flows: int
    n_mask_hit: int
    n_masks: int
    n_cache_hit: int
    user_features: int
    masks_cache_size: int | None


@dataclass
class PortInfo:
    """A vport as a GET reply describes it."""

    port_no: int
    name: str
    type: int
    upcall_pids: tuple[int, ...]
    stats: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    ifindex: int = 0

    @property
    def type_name(self) -> str:
        return type_name(self.type)


@dataclass
class FlowStats:
    """What a flow reply says of its use (``used``: ms on CLOCK_MONOTONIC, 0 = never)."""

    n_packets: int = 0
    n_bytes: int = 0
    used: int = 0
    tcp_flags: int = 0


@dataclass
class DpFlow:
    """A flow as the datapath reports it."""

    key: dict[str, Any] | None
    mask: dict[str, Any] | None
    actions: list[tuple[str, Any]] | None
    ufid: bytes | None
    stats: FlowStats


@dataclass
class Upcall:
    """An OVS_PACKET_CMD_MISS or OVS_PACKET_CMD_ACTION upcall."""

    cmd: int
    dp_ifindex: int
    key: dict[str, Any]
    packet: bytes
    hash: int = 0
    userdata: bytes | None = None
    actions: list[tuple[str, Any]] | None = None
    egress_tun_key: dict[str, Any] | None = None
    mru: int | None = None
    orig_len: int | None = None

    @property
    def is_miss(self) -> bool:
        return self.cmd == PacketCmd.MISS


@dataclass
class FlowPut:
    """One flow put of a batch (:meth:`Dpif.operate`)."""

    key: dict[str, Any]
    mask: dict[str, Any] | None
    actions: list[tuple[str, Any]]
    ufid: bytes | None = None
    create: bool = True
    modify: bool = False
    zero_stats: bool = False
    probe: bool = False
    want_stats: bool = False


@dataclass
class FlowDel:
    """One flow delete of a batch."""

    key: dict[str, Any] | None = None
    ufid: bytes | None = None
    want_stats: bool = False


@dataclass
class FlowGet:
    """One flow get of a batch."""

    key: dict[str, Any] | None = None
    ufid: bytes | None = None


@dataclass
class Execute:
    """One packet execute of a batch."""

    packet: bytes
    key: dict[str, Any]
    actions: list[tuple[str, Any]]
    probe: bool = False
    upcall_pid: int | None = None
    mru: int | None = None
    hash: int | None = None


Op = FlowPut | FlowDel | FlowGet | Execute


@dataclass
class OpResult:
    """What one operation of a batch got."""

    error: NetlinkError | None = None
    flow: DpFlow | None = None
    stats: FlowStats | None = None


def _flow_stats(attrs: dict[str, Any]) -> FlowStats:
    stats = attrs.get("stats")
    return FlowStats(
        stats.n_packets if stats else 0,
        stats.n_bytes if stats else 0,
        attrs.get("used", 0),
        attrs.get("tcp_flags", 0),
    )


def parse_flow(msg: GenlMessage) -> DpFlow:
    """A flow reply as a :class:`DpFlow` (EINVAL without KEY or UFID, as dpif-netlink)."""
    attrs = msg.attrs
    if "key" not in attrs and "ufid" not in attrs:
        raise NetlinkError(errno.EINVAL, "a flow reply without KEY or UFID")
    return DpFlow(
        attrs.get("key"),
        attrs.get("mask"),
        attrs.get("actions"),
        attrs.get("ufid"),
        _flow_stats(attrs),
    )


def parse_port(msg: GenlMessage) -> PortInfo:
    """A vport reply as a :class:`PortInfo`."""
    attrs = msg.attrs
    return PortInfo(
        attrs["port_no"],
        attrs["name"],
        attrs["type"],
        tuple(attrs.get("upcall_pid", ())),
        attrs.get("stats"),
        dict(attrs.get("options", {})),
        attrs.get("ifindex", 0),
    )


def parse_upcall(msg: GenlMessage) -> Upcall:
    """An upcall message (EINVAL for a malformed one: dpif-netlink needs PACKET and KEY)."""
    attrs = msg.attrs
    packet = attrs.get("packet")
    if (
        msg.cmd not in (PacketCmd.MISS, PacketCmd.ACTION)
        or packet is None
        or len(packet) < 14
        or "key" not in attrs
    ):
        raise NetlinkError(errno.EINVAL, f"not an upcall: cmd {msg.cmd}")
    return Upcall(
        msg.cmd,
        msg.dp_ifindex or 0,
        attrs["key"],
        packet,
        attrs.get("hash", 0),
        attrs.get("userdata"),
        attrs.get("actions"),
        attrs.get("egress_tun_key"),
        attrs.get("mru"),
        attrs.get("len"),
    )


class Dpif:
    """An open datapath."""

    def __init__(self, sock: NetlinkSocket, name: str, dp_ifindex: int, features: int) -> None:
        self.sock = sock
        self.name = name
        self.dp_ifindex = dp_ifindex
        self.user_features = features

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        name: str,
        *,
        create: bool = False,
        sock: NetlinkSocket | None = None,
        path: str | None = None,
    ) -> Dpif:
        """Open (or create) a datapath and negotiate features the way dpif-netlink does:
        ask for features plus the invalid bit 31 (a datapath that checks says EOPNOTSUPP),
        then for per-CPU dispatch, then for per-vport PIDs; then try TC_RECIRC_SHARING."""
        sock = sock or NetlinkSocket(path)
        base = DpFeature.UNALIGNED
        if create:
            try:
                reply = cls._dp_request(
                    sock,
                    DpCmd.NEW,
                    name,
                    base | DpFeature.VPORT_PIDS | OVS_DP_F_UNSUPPORTED,
                    {"upcall_pid": 0},
                )
            except NetlinkError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EEXIST, errno.EBUSY):
                    raise
                if exc.errno in (errno.EEXIST, errno.EBUSY):
                    return cls.open(name, sock=sock)
                reply = None
            if reply is not None:
                # A datapath that ignores unknown features: no negotiation possible.
                return cls._finish(sock, reply, negotiated=False)
            for features in (base | DpFeature.DISPATCH_UPCALL_PER_CPU, base | DpFeature.VPORT_PIDS):
                try:
                    reply = cls._dp_request(sock, DpCmd.NEW, name, features, {"upcall_pid": 0})
                    return cls._finish(sock, reply, negotiated=True)
                except NetlinkError as exc:
                    if exc.errno in (errno.EEXIST, errno.EBUSY):
                        return cls.open(name, sock=sock)
                    if exc.errno != errno.EOPNOTSUPP:
                        raise
            raise NetlinkError(errno.EOPNOTSUPP, f"datapath {name}: no feature set accepted")
        current = sock.transact(DP, DpCmd.GET, {"name": name})[0]
        existing = current.attrs.get("user_features", 0)
        try:
            reply = cls._dp_request(
                sock,
                DpCmd.SET,
                name,
                existing | base | DpFeature.VPORT_PIDS | OVS_DP_F_UNSUPPORTED,
                {},
            )
            return cls._finish(sock, reply, negotiated=False)
        except NetlinkError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
        for features in (
            # per-CPU dispatch instead of per-vport PIDs (dpif-netlink clears VPORT_PIDS)
            (existing & ~DpFeature.VPORT_PIDS) | base | DpFeature.DISPATCH_UPCALL_PER_CPU,
            (existing & ~DpFeature.DISPATCH_UPCALL_PER_CPU) | base | DpFeature.VPORT_PIDS,
        ):
            try:
                reply = cls._dp_request(sock, DpCmd.SET, name, features, {})
                return cls._finish(sock, reply, negotiated=True)
            except NetlinkError as exc:
                if exc.errno != errno.EOPNOTSUPP:
                    raise
        raise NetlinkError(errno.EOPNOTSUPP, f"datapath {name}: no feature set accepted")

    @staticmethod
    def _dp_request(
        sock: NetlinkSocket, cmd: int, name: str, features: int, extra: dict[str, Any]
    ) -> GenlMessage:
        attrs = {"name": name, "user_features": int(features), **extra}
        return sock.transact(DP, cmd, attrs, flags=NLM_F_ECHO)[0]

    @classmethod
    def _finish(cls, sock: NetlinkSocket, reply: GenlMessage, negotiated: bool) -> Dpif:
        dpif = cls(
            sock, reply.attrs["name"], reply.dp_ifindex or 0, reply.attrs.get("user_features", 0)
        )
        if not negotiated:
            # dpif-netlink: "does not support feature negotiation": settle for the basics
            reply = cls._dp_request(
                sock, DpCmd.SET, dpif.name, DpFeature.UNALIGNED | DpFeature.VPORT_PIDS, {}
            )
            dpif.user_features = reply.attrs.get("user_features", 0)
            return dpif
        try:
            reply = cls._dp_request(
                sock, DpCmd.SET, dpif.name, dpif.user_features | DpFeature.TC_RECIRC_SHARING, {}
            )
            dpif.user_features = reply.attrs.get("user_features", 0)
        except NetlinkError:
            pass  # no tc here either: keep what was negotiated
        return dpif

    @staticmethod
    def enumerate(sock: NetlinkSocket) -> list[str]:
        """The names of every datapath."""
        return [m.attrs["name"] for m in sock.dump(DP, DpCmd.GET)]

    @property
    def per_cpu(self) -> bool:
        """Whether upcalls are dispatched per CPU (else per vport)."""
        return bool(self.user_features & DpFeature.DISPATCH_UPCALL_PER_CPU)

    def delete(self) -> None:
        """Delete the datapath with its ports and flows."""
        self.sock.transact(DP, DpCmd.DEL, {"name": self.name})

    def get_stats(self) -> DpStats:
        """The datapath's counters."""
        attrs = self.sock.transact(DP, DpCmd.GET, {"name": self.name})[0].attrs
        s, m = attrs["stats"], attrs.get("megaflow_stats")
        return DpStats(
            s.n_hit,
            s.n_missed,
            s.n_lost,
            s.n_flows,
            m.n_mask_hit if m else 0,
            m.n_masks if m else 0,
            m.n_cache_hit if m else 0,
            attrs.get("user_features", 0),
            attrs.get("masks_cache_size"),
        )

    def set_handler_pids(self, pids: Sequence[int]) -> None:
        """Where misses go: the datapath's per-CPU PIDs, or every port's upcall PIDs."""
        if self.per_cpu:
            self.sock.transact(
                DP,
                DpCmd.SET,
                {
                    "name": self.name,
                    "user_features": self.user_features,
                    "per_cpu_pids": tuple(pids),
                },
            )
            return
        for port in self.port_dump():
            self.port_set_upcall_pids(port.port_no, pids[:1] if not self.vport_pids else pids)

    @property
    def vport_pids(self) -> bool:
        return bool(self.user_features & DpFeature.VPORT_PIDS)

    # -- ports --------------------------------------------------------------------------------

    def port_add(
        self,
        name: str,
        vport_type: str | int = "netdev",
        *,
        port_no: int | None = None,
        options: dict[str, Any] | None = None,
        upcall_pids: Sequence[int] = (0,),
    ) -> int:
        """Add a port; its number (the one asked for, else the lowest free)."""
        vtype = port_type(vport_type) if isinstance(vport_type, str) else vport_type
        attrs: dict[str, Any] = {"name": name, "type": vtype, "upcall_pid": tuple(upcall_pids)}
        if port_no is not None:
            attrs["port_no"] = port_no
        if options:
            attrs["options"] = options
        reply = self.sock.transact(
            VPORT, VportCmd.NEW, attrs, flags=NLM_F_ECHO, dp_ifindex=self.dp_ifindex
        )[0]
        port: int = reply.attrs["port_no"]
        return port

    def port_del(self, port_no: int) -> None:
        """Delete a port by number (queried first, as dpif-netlink does)."""
        self.port_query_by_number(port_no)
        self.sock.transact(VPORT, VportCmd.DEL, {"port_no": port_no}, dp_ifindex=self.dp_ifindex)

    def port_query_by_number(self, port_no: int) -> PortInfo:
        """A port by number (ENODEV if there is none)."""
        reply = self.sock.transact(
            VPORT, VportCmd.GET, {"port_no": port_no}, dp_ifindex=self.dp_ifindex
        )[0]
        return parse_port(reply)

    def port_query_by_name(self, name: str) -> PortInfo:
        """A port by name (ENODEV if there is none, or it is in another datapath)."""
        reply = self.sock.transact(VPORT, VportCmd.GET, {"name": name}, dp_ifindex=self.dp_ifindex)[
            0
        ]
        if reply.dp_ifindex != self.dp_ifindex:
            raise NetlinkError(errno.ENODEV, f"port {name} is in another datapath")
        return parse_port(reply)

    def port_dump(self) -> Iterator[PortInfo]:
        """Every port, as the dump reads them."""
        for msg in self.sock.dump(VPORT, VportCmd.GET, dp_ifindex=self.dp_ifindex):
            yield parse_port(msg)

    def port_set_upcall_pids(self, port_no: int, pids: Sequence[int]) -> None:
        """Change a port's upcall PIDs."""
        self.sock.transact(
            VPORT,
            VportCmd.SET,
            {"port_no": port_no, "upcall_pid": tuple(pids)},
            dp_ifindex=self.dp_ifindex,
        )

    # -- flows --------------------------------------------------------------------------------

    def _put_request(self, op: FlowPut) -> Request:
        # create only: NEW + CREATE; create|modify: NEW; modify only: SET (reference §6.4)
        cmd = FlowCmd.SET if (op.modify and not op.create) else FlowCmd.NEW
        flags = NLM_F_REQUEST
        if op.create and not op.modify:
            flags |= NLM_F_CREATE
        if op.want_stats:
            flags |= NLM_F_ECHO
        attrs: dict[str, Any] = {"key": op.key}
        if op.mask is not None:
            attrs["mask"] = op.mask
        attrs["actions"] = op.actions
        if op.ufid is not None:
            attrs["ufid"] = op.ufid
        if op.zero_stats:
            attrs["clear"] = True
        if op.probe:
            attrs["probe"] = True
        return Request(FLOW, cmd, attrs, flags, self.dp_ifindex)

    def _del_request(self, op: FlowDel) -> Request:
        attrs: dict[str, Any] = {}
        if op.key is not None:
            attrs["key"] = op.key
        if op.ufid is not None:
            attrs["ufid"] = op.ufid
        flags = NLM_F_REQUEST | (NLM_F_ECHO if op.want_stats else 0)
        return Request(FLOW, FlowCmd.DEL, attrs, flags, self.dp_ifindex)

    def _get_request(self, op: FlowGet) -> Request:
        attrs: dict[str, Any] = {}
        if op.key is not None:
            attrs["key"] = op.key
        if op.ufid is not None:
            attrs["ufid"] = op.ufid
        return Request(FLOW, FlowCmd.GET, attrs, NLM_F_REQUEST | NLM_F_ECHO, self.dp_ifindex)

    def _execute_request(self, op: Execute) -> Request:
        attrs: dict[str, Any] = {"packet": op.packet, "key": op.key, "actions": op.actions}
        if op.probe:
            attrs["probe"] = True
        if op.mru is not None:
            attrs["mru"] = op.mru
        if op.hash is not None:
            attrs["hash"] = op.hash
        if op.upcall_pid is not None:
            attrs["upcall_pid"] = op.upcall_pid
        return Request(PACKET, PacketCmd.EXECUTE, attrs, NLM_F_REQUEST, self.dp_ifindex)

    def _request(self, op: Op) -> Request:
        if isinstance(op, FlowPut):
            return self._put_request(op)
        if isinstance(op, FlowDel):
            return self._del_request(op)
        if isinstance(op, FlowGet):
            return self._get_request(op)
        return self._execute_request(op)

    @staticmethod
    def _outcome(op: Op, result: Result) -> OpResult:
        if result.error is not None:
            return OpResult(result.error)
        if not result.replies:
            return OpResult()
        reply = result.replies[0]
        if isinstance(op, FlowGet):
            return OpResult(flow=parse_flow(reply), stats=_flow_stats(reply.attrs))
        return OpResult(stats=_flow_stats(reply.attrs))

    def operate(self, ops: Sequence[Op], batch: int = 64) -> list[OpResult]:
        """Many operations, ``batch`` per record; each gets its result (nothing is raised)."""
        out: list[OpResult] = []
        for start in range(0, len(ops), batch):
            chunk = ops[start : start + batch]
            requests = [self._request(op) for op in chunk]
            try:
                results = self.sock.transact_many(requests)
            except NetlinkError:
                # the record could not be made (an op that does not encode, a record too big):
                # each op on its own, so only the bad one fails
                results = [self._alone(request) for request in requests]
            out.extend(self._outcome(op, r) for op, r in zip(chunk, results, strict=True))
        return out

    def _alone(self, request: Request) -> Result:
        try:
            return self.sock.transact_many([request])[0]
        except NetlinkError as exc:
            return Result(error=exc)

    def _one(self, op: Op) -> OpResult:
        result = self.operate([op])[0]
        if result.error is not None:
            raise result.error
        return result

    def flow_put(
        self,
        key: dict[str, Any],
        mask: dict[str, Any] | None,
        actions: list[tuple[str, Any]],
        *,
        ufid: bytes | None = None,
        create: bool = True,
        modify: bool = False,
        zero_stats: bool = False,
        probe: bool = False,
        want_stats: bool = False,
    ) -> FlowStats | None:
        """Install or change a flow (create: fail if it exists; modify: fail if it does not;
        both: either); the flow's statistics before the change when ``want_stats``."""
        op = FlowPut(key, mask, actions, ufid, create, modify, zero_stats, probe, want_stats)
        return self._one(op).stats

    def flow_get(self, key: dict[str, Any] | None = None, ufid: bytes | None = None) -> DpFlow:
        """A flow by UFID or by key (ENOENT if absent)."""
        flow = self._one(FlowGet(key, ufid)).flow
        assert flow is not None
        return flow

    def flow_del(
        self,
        key: dict[str, Any] | None = None,
        ufid: bytes | None = None,
        *,
        want_stats: bool = True,
    ) -> FlowStats | None:
        """Delete a flow; its final statistics when ``want_stats``."""
        if key is None and ufid is None:
            raise NetlinkError(errno.EINVAL, "flow_del needs a key or a UFID (flush deletes all)")
        return self._one(FlowDel(key, ufid, want_stats)).stats

    def flow_flush(self) -> None:
        """Delete every flow."""
        self.sock.transact(FLOW, FlowCmd.DEL, {}, dp_ifindex=self.dp_ifindex)

    def flow_dump(self, *, terse: bool = False) -> Iterator[DpFlow]:
        """Every flow (terse: UFID and statistics only)."""
        attrs: dict[str, Any] = {}
        if terse:
            attrs["ufid_flags"] = int(
                UfidFlag.OMIT_KEY | UfidFlag.OMIT_MASK | UfidFlag.OMIT_ACTIONS
            )
        for msg in self.sock.dump(FLOW, FlowCmd.GET, attrs, dp_ifindex=self.dp_ifindex):
            yield parse_flow(msg)

    def execute(
        self,
        packet: bytes,
        key: dict[str, Any],
        actions: list[tuple[str, Any]],
        *,
        probe: bool = False,
        upcall_pid: int | None = None,
        mru: int | None = None,
        hash_: int | None = None,
    ) -> None:
        """Run actions on a packet (the key supplies its metadata: in_port, priority, ...)."""
        self._one(Execute(packet, key, actions, probe, upcall_pid, mru, hash_))

    # -- upcalls ------------------------------------------------------------------------------

    @staticmethod
    def recv_upcalls(sock: NetlinkSocket, timeout: float | None = None) -> list[Upcall]:
        """Upcalls waiting on ``sock`` (a handler's socket); NetlinkError(ENOBUFS) after an
        overrun, which a handler counts as lost and reads on.  A malformed upcall is logged and
        skipped (as dpif-netlink drops it), not allowed to cost the others of its batch."""
        out = []
        packet_id = sock.family(PACKET).id
        for msg in sock.recv(timeout):
            if isinstance(msg, GenlMessage) and msg.type == packet_id:
                try:
                    out.append(parse_upcall(msg))
                except NetlinkError as exc:
                    log.warning("dropped a malformed upcall: %s", exc.reason)
        return out


@dataclass
class PortEvent:
    """A port change: ``kind`` is added, deleted, changed, or resync (read everything again)."""

    kind: str
    name: str | None = None
    port_no: int | None = None
    cmd: int | None = None


_EVENT_KINDS: dict[int, str] = {
    VportCmd.NEW: "added",
    VportCmd.DEL: "deleted",
    VportCmd.SET: "changed",
}


class PortMonitor:
    """Port events of one datapath, read from the ovs_vport multicast group.

    Like dpif-netlink's port_poll: the first poll reports a resync (state may have changed before
    the subscription), and so does any overrun.
    """

    def __init__(self, dpif: Dpif, path: str | None = None) -> None:
        self.dpif = dpif
        self.sock = NetlinkSocket(path or dpif.sock.path)
        self.sock.join(VPORT, "ovs_vport")
        self._first = True

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self, timeout: float | None = 0) -> list[PortEvent]:
        """Events since the last poll (waiting up to ``timeout`` for the first)."""
        if self._first:
            self._first = False
            return [PortEvent("resync")]
        try:
            messages = self.sock.recv(timeout)
        except NetlinkError as exc:
            if exc.errno == errno.ENOBUFS:
                return [PortEvent("resync")]
            raise
        events = []
        vport_id = self.sock.family(VPORT).id
        for msg in messages:
            if isinstance(msg, ErrorMessage):
                continue
            if (
                not isinstance(msg, GenlMessage)
                or msg.type != vport_id
                or msg.dp_ifindex != self.dpif.dp_ifindex
            ):
                continue
            attrs = msg.attrs
            kind = _EVENT_KINDS.get(msg.cmd)
            if kind is None:
                continue
            port_no = attrs.get("port_no")
            if kind == "added" and port_no == OVSP_NONE:
                kind = "appeared"  # a switch port no vport holds: userspace may add it
            events.append(PortEvent(kind, attrs.get("name"), port_no, msg.cmd))
        return events


def strerror(code: int) -> str:
    """os.strerror, for messages in ovs-dpctl's ``what (strerror)`` form."""
    return os.strerror(code)
