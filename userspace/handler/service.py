"""The handler's I/O: sockets, the datapath, ports, and one poll loop around a :class:`Forwarder`.

One thread, blocking sockets, ``poll`` on three descriptors (the upcall socket, the port-event
socket, a wake-up pipe) with the revalidation tick as the timeout; docs/handler.md says why.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from dataclasses import asdict
from typing import Any

from ovsdp.netlink.constants import PacketCmd
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import GenlMessage

from ..dpif import OVSP_NONE, Dpif, PortMonitor
from ..netlink_socket import NetlinkSocket
from .config import HandlerConfig, PortConfig
from .forwarder import Batch, Forwarder, PortSpec

log = logging.getLogger("ovsdp.handler")

OPS_PER_RECORD = 128  # Dpif.operate: requests per record
DUMP_SLICE = 256  # dumped flows between two looks at the upcall socket
DUMP_SHARE = 10  # the next dump waits at least this many times the last one's duration
UPCALL_RXQ = 16 << 20  # bytes of upcalls the service may queue for the handler socket


def now_ms() -> int:
    """CLOCK_MONOTONIC in milliseconds: the clock of a flow's ``used``."""
    return time.monotonic_ns() // 1_000_000


class Handler:
    """ovs-vswitchd's part for a learning switch: see docs/handler.md.

    ``start()`` opens (or creates) the datapath, adds the configured ports and points upcalls
    at the handler socket; ``run()`` serves until ``stop()`` (callable from any thread or a
    signal handler); ``close()`` closes the sockets.
    """

    def __init__(
        self,
        config: HandlerConfig,
        path: str | None = None,
        *,
        verbose: bool = False,
        stats_interval: float = 10.0,
        upcall_rxq: int = UPCALL_RXQ,
    ) -> None:
        self.config = config
        self.path = path
        self.verbose = verbose
        self.stats_interval = stats_interval
        self.upcall_rxq = upcall_rxq
        self.fw = Forwarder(
            idle_timeout_ms=round(config.idle_timeout * 1000),
            mac_aging_ms=round(config.mac_aging * 1000),
            mac_table_size=config.mac_table_size,
        )
        self.pending: set[str] = set()  # configured ports the switch does not have yet
        self.handled = 0  # MISS upcalls whose operations have been sent and answered
        self.revalidations = 0
        self.last_dump_seconds = 0.0
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sockets: list[NetlinkSocket] = []
        self._dpif: Dpif | None = None
        self._dumper: Dpif | None = None
        self._upcalls: NetlinkSocket | None = None
        self._monitor: PortMonitor | None = None
        self._packet_family = -1
        self._last_summary: dict[str, Any] = {}

    # -- accessors (set by start) ---------------------------------------------------------------

    @property
    def dpif(self) -> Dpif:
        assert self._dpif is not None, "start() first"
        return self._dpif

    @property
    def upcall_sock(self) -> NetlinkSocket:
        assert self._upcalls is not None, "start() first"
        return self._upcalls

    @property
    def monitor(self) -> PortMonitor:
        assert self._monitor is not None, "start() first"
        return self._monitor

    @property
    def upcall_pid(self) -> int:
        """The PID misses are sent to."""
        return self.upcall_sock.pid

    # -- start and stop -----------------------------------------------------------------------

    def start(self) -> None:
        """Open the datapath, subscribe to port events, flush old flows, add the ports."""
        ctl = self._socket()
        self._dpif = dpif = Dpif.open(self.config.datapath, create=True, sock=ctl)
        dumps = self._socket()
        self._dumper = Dpif(dumps, dpif.name, dpif.dp_ifindex, dpif.user_features)
        self._upcalls = upcalls = self._socket()
        upcalls.properties(rxq_limit=self.upcall_rxq)
        self._packet_family = upcalls.family("ovs_packet").id
        self._monitor = PortMonitor(dpif, ctl.path)
        self._sockets.append(self._monitor.sock)
        self._set_up()
        self._port_events()  # the monitor's first poll: resync

    def _set_up(self) -> None:
        dpif = self.dpif
        # No state for flows a previous run left: start clean (docs/handler.md).
        dpif.flow_flush()
        dpif.set_handler_pids([self.upcall_pid])
        mode = "per-CPU" if dpif.per_cpu else "per-vport"
        log.info(
            "datapath %s (dp_ifindex %d): %s upcalls to PID %d",
            dpif.name,
            dpif.dp_ifindex,
            mode,
            self.upcall_pid,
        )
        for port in self.config.ports:
            self._add_port(port)

    def check_datapath(self) -> bool:
        """Create the datapath again if someone deleted it (ovs-dpctl del-dp); whether it was."""
        dpif = self.dpif
        try:
            dpif.get_stats()
            return False
        except NetlinkError as exc:
            if exc.errno != errno.ENODEV:
                raise
        log.warning("datapath %s is gone: creating it again", dpif.name)
        new = Dpif.open(self.config.datapath, create=True, sock=dpif.sock)
        for same in (dpif, self._dumper):  # the port monitor and the dumper hold these
            assert same is not None
            same.dp_ifindex, same.user_features = new.dp_ifindex, new.user_features
        self.fw.reset()
        self.pending.clear()
        self._set_up()
        self.resync()
        self.flush()
        return True

    def _socket(self) -> NetlinkSocket:
        sock = NetlinkSocket(self.path)
        self._sockets.append(sock)
        return sock

    def stop(self) -> None:
        """Ask ``run()`` to return (thread- and signal-safe)."""
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        """Close every socket (flows and ports stay, as ovs-vswitchd leaves them)."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve upcalls, port events and revalidation until ``stop()``."""
        upcalls = self.upcall_sock
        monitor = self.monitor
        poller = select.poll()
        for fd in (upcalls.fileno(), monitor.fileno(), self._wake_r):
            poller.register(fd, select.POLLIN)
        interval = self.config.revalidate_interval
        next_revalidation = time.monotonic() + interval
        next_summary = time.monotonic() + self.stats_interval
        while not self._stopping:
            now = time.monotonic()
            deadline = next_revalidation
            if self.stats_interval > 0:
                deadline = min(deadline, next_summary)
            timeout = max(0.0, deadline - now)
            if upcalls.session.unsolicited or monitor.sock.session.unsolicited:
                timeout = 0.0
            ready = {fd for fd, _ in poller.poll(timeout * 1000)}
            if upcalls.session.unsolicited or upcalls.fileno() in ready:
                self.handle_upcalls()
            if monitor.sock.session.unsolicited or monitor.fileno() in ready:
                self._port_events()
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 512)
                except BlockingIOError:
                    pass
            now = time.monotonic()
            if now >= next_revalidation:
                self.check_datapath()
                if self.fw.revalidation_due(now_ms()):
                    self.revalidate()
                # dumping a big table may take a tenth of the time at most
                next_revalidation = time.monotonic() + max(
                    interval, DUMP_SHARE * self.last_dump_seconds
                )
            if self.stats_interval > 0 and now >= next_summary:
                self.summary()
                next_summary = now + self.stats_interval

    # -- upcalls --------------------------------------------------------------------------------

    def handle_upcalls(self) -> int:
        """Read every upcall waiting, decide, send the batch; how many upcalls."""
        try:
            messages = self.upcall_sock.recv(0)
        except NetlinkError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.fw.counters.overruns += 1  # the datapath counts the upcalls in n_lost
            return 0
        now = now_ms()
        miss = self.fw.miss
        family = self._packet_family
        n = 0
        for msg in messages:
            if type(msg) is not GenlMessage or msg.type != family or msg.cmd != PacketCmd.MISS:
                continue
            attrs = msg.attrs
            key = attrs.get("key")
            packet = attrs.get("packet")
            if key is None or packet is None or len(packet) < 14:
                continue
            miss(key, packet, now)
            n += 1
        self.flush()
        self.handled += n
        return n

    def flush(self) -> Batch:
        """Send what the forwarder queued (one record per OPS_PER_RECORD operations)."""
        batch = self.fw.take()
        if not len(batch):
            return batch
        results = self.dpif.operate(batch.ops, batch=OPS_PER_RECORD)
        failed = self.fw.finish(batch, results)
        if self.verbose:
            self._log_batch(batch, failed)
        elif failed:
            flow, error = failed[0]
            log.warning("%d flow puts failed, first: %s (%s)", len(failed), flow, error)
        return batch

    def _log_batch(self, batch: Batch, failed: list[tuple[Any, Any]]) -> None:
        from ..odp import format_actions, format_key, format_ufid

        bad = {id(flow): error for flow, error in failed}
        for flow in batch.flows:
            error = bad.get(id(flow))
            log.info(
                "flow %s %s: %s actions:%s%s",
                format_ufid(flow.ufid),
                flow.kind,
                format_key(flow.key, flow.mask),
                format_actions(flow.actions) or "drop",
                f" FAILED ({error})" if error is not None else "",
            )
        for op in batch.dels:
            assert op.ufid is not None
            log.info("flow %s deleted", format_ufid(op.ufid))

    # -- revalidation ---------------------------------------------------------------------------

    def revalidate(self) -> None:
        """Dump the flows tersely, expire idle ones, refresh MACs, age the MAC table."""
        assert self._dumper is not None
        started = time.monotonic()
        fw = self.fw
        gen = fw.begin_revalidation()
        now = now_ms()
        for i, flow in enumerate(self._dumper.flow_dump(terse=True), 1):
            fw.revalidate(flow.ufid, flow.stats.used, now)
            if i % DUMP_SLICE == 0 and self._upcalls_waiting():
                self.handle_upcalls()  # flow setup goes on while big tables are dumped
        fw.end_revalidation(gen, now_ms())
        self.flush()
        self.revalidations += 1
        self.last_dump_seconds = time.monotonic() - started

    def _upcalls_waiting(self) -> bool:
        sock = self.upcall_sock
        if sock.session.unsolicited:
            return True
        ready, _, _ = select.select([sock.fileno()], [], [], 0)
        return bool(ready)

    # -- ports ----------------------------------------------------------------------------------

    def _spec(self, port_no: int, name: str) -> PortSpec:
        port = self.config.port(name)
        return PortSpec.make(port_no, name, port.tunnel if port is not None else None)

    def _port_pids(self) -> tuple[int, ...]:
        return (0,) if self.dpif.per_cpu else (self.upcall_pid,)

    def _add_port(self, port: PortConfig) -> None:
        dpif = self.dpif
        try:
            port_no = dpif.port_add(
                port.name, port.type, options=port.dp_options, upcall_pids=self._port_pids()
            )
            log.info("port %s: added as port %d (%s)", port.name, port_no, port.type)
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                if port.name not in self.pending:
                    log.info("port %s: not on the switch yet, waiting for it", port.name)
                self.pending.add(port.name)
                return
            # EEXIST: a vport of that name exists; EBUSY: its switch port is bound. Fine if
            # that is in our datapath (a restart), an error otherwise.
            info = None
            if exc.errno in (errno.EEXIST, errno.EBUSY):
                try:
                    info = dpif.port_query_by_name(port.name)
                except NetlinkError:
                    pass
            if info is None:
                log.error("port %s: cannot add it: %s", port.name, exc)
                self.pending.discard(port.name)
                return
            port_no = info.port_no
            self._fix_pids(port_no, info.upcall_pids)
            log.info("port %s: already in the datapath as port %d", port.name, port_no)
        self.pending.discard(port.name)
        self.fw.port_up(port_no, self._spec(port_no, port.name))
        self.flush()

    def _fix_pids(self, port_no: int, pids: tuple[int, ...]) -> None:
        if self.dpif.per_cpu or pids == (self.upcall_pid,):
            return
        try:
            self.dpif.port_set_upcall_pids(port_no, (self.upcall_pid,))
        except NetlinkError as exc:
            if exc.errno not in (errno.ENODEV, errno.ENOENT):
                raise

    def _port_events(self) -> None:
        for event in self.monitor.poll(0):
            if event.kind == "resync":
                self.resync()
            elif event.kind == "appeared":
                port = self.config.port(event.name or "")
                if port is not None and event.name in self.pending:
                    log.info("port %s: appeared on the switch", port.name)
                    self._add_port(port)
            elif event.kind == "added" and event.port_no is not None:
                self._port_added(event.port_no)
            elif event.kind == "deleted" and event.port_no is not None:
                self._port_deleted(event.port_no, event.name)
        self.flush()

    def _port_added(self, port_no: int) -> None:
        if port_no in (0, OVSP_NONE):
            return
        try:
            info = self.dpif.port_query_by_number(port_no)
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return  # gone again
            raise
        self._fix_pids(port_no, info.upcall_pids)
        self.pending.discard(info.name)
        if self.fw.port_up(port_no, self._spec(port_no, info.name)):
            log.info("port %s: up (port %d)", info.name, port_no)

    def _port_deleted(self, port_no: int, name: str | None) -> None:
        n_flows = len(self.fw.flows_of_port(port_no))
        if self.fw.port_down(port_no):
            log.info("port %s: down or removed (port %d), %d flows from it", name, port_no, n_flows)
        port = self.config.port(name or "")
        if port is None:
            return
        try:
            self.dpif.port_query_by_name(port.name)
        except NetlinkError as exc:
            if exc.errno not in (errno.ENODEV, errno.ENOENT):
                raise
            self._add_port(port)  # the vport itself went: a configured port comes back

    def resync(self) -> None:
        """Read the port list again (first poll, or after missed events)."""
        specs: dict[int, PortSpec] = {}
        for info in self.dpif.port_dump():
            if info.port_no == 0:
                continue
            self._fix_pids(info.port_no, info.upcall_pids)
            specs[info.port_no] = self._spec(info.port_no, info.name)
        self.fw.sync_ports(specs)
        names = {spec.name for spec in specs.values()}
        for port in self.config.ports:
            if port.name not in names:
                self._add_port(port)
        log.info("ports resynchronised: %d in the datapath", len(specs))

    # -- reporting ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and sizes, for summaries and tests."""
        fw = self.fw
        out = asdict(fw.counters)
        out.update(
            flows=fw.n_flows,
            macs=len(fw.macs),
            macs_learned=fw.macs.learned,
            mac_moves=fw.macs.moves,
            macs_expired=fw.macs.expired,
            ports=len(fw.ports),
            pending=sorted(self.pending),
            revalidations=self.revalidations,
        )
        return out

    def summary(self) -> None:
        """Log one line if anything changed since the last one."""
        stats = self.stats()
        compare = {k: v for k, v in stats.items() if k != "revalidations"}
        if compare == self._last_summary:
            return
        self._last_summary = compare
        log.info(
            "upcalls %d (overruns %d), flows %d (new %d, deleted %d, expired %d, failed %d), "
            "MACs %d (learned %d, moved %d, expired %d), ports %d",
            stats["upcalls"],
            stats["overruns"],
            stats["flows"],
            stats["flows_new"],
            stats["flows_deleted"],
            stats["flows_expired"],
            stats["put_errors"],
            stats["macs"],
            stats["macs_learned"],
            stats["mac_moves"],
            stats["macs_expired"],
            stats["ports"],
        )
