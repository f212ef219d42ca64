"""``monitor``: print a datapath's port events and upcalls as they arrive, until interrupted.

Port events come from the ``ovs_vport`` multicast group (:class:`~userspace.dpif.PortMonitor`),
which any number of listeners can join.  Upcalls go to one place: the datapath's handler PIDs
(per CPU) or its ports' upcall PIDs (per vport).  To see them, ``monitor`` points those at its
own socket, which takes the upcalls away from whatever handler was receiving them, and puts the
old PIDs back when it stops.  ``--no-upcalls`` leaves the upcalls alone.
"""

from __future__ import annotations

import errno
import select
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from ovsdp.netlink.constants import DpCmd
from ovsdp.netlink.errors import NetlinkError
from userspace.dpif import DP, Dpif, PortEvent, PortMonitor, Upcall
from userspace.netlink_socket import NetlinkSocket
from userspace.odp import format_actions, format_key

from .context import Context, dpif_name


def format_event(event: PortEvent) -> str:
    """One line for a port event."""
    if event.kind == "resync":
        return "ports: resync (events were lost: read the ports again)"
    if event.kind == "appeared":
        return f"port -: {event.name} appeared (a switch port no vport holds)"
    return f"port {event.port_no}: {event.name} {event.kind}"


def format_upcall(upcall: Upcall, names: dict[str, int] | None, verbosity: int) -> str:
    """One line for an upcall: its kind, its key in ODP text, and what came with it (with -m,
    and a second line with the packet in hex)."""
    kind = "miss" if upcall.is_miss else "action"
    text = f"upcall {kind}: " + format_key(
        upcall.key, None, verbosity > 0, names if verbosity else None
    )
    text += f", len:{len(upcall.packet)}"
    if upcall.orig_len is not None:
        text += f", orig_len:{upcall.orig_len}"
    if upcall.hash:
        text += f", hash:{upcall.hash:#x}"
    if upcall.mru:
        text += f", mru:{upcall.mru}"
    if upcall.userdata is not None:
        text += f", userdata:{bytes(upcall.userdata).hex()}"
    if upcall.egress_tun_key:
        text += ", egress_tun_key:" + format_key({"tunnel": upcall.egress_tun_key})
    if upcall.actions is not None:
        text += ", actions:" + format_actions(upcall.actions, names)
    if verbosity:
        text += "\n  packet:" + bytes(upcall.packet).hex()
    return text


class _Claim:
    """The upcall PIDs a datapath had before ``monitor`` took them, to give them back."""

    def __init__(self, dpif: Dpif, pid: int) -> None:
        self.dpif = dpif
        self.per_cpu: tuple[int, ...] | None = None
        self.ports: dict[int, tuple[int, ...]] = {}
        if dpif.per_cpu:
            attrs = dpif.sock.transact(DP, DpCmd.GET, {"name": dpif.name})[0].attrs
            self.per_cpu = tuple(attrs.get("per_cpu_pids", ()))
        else:
            self.ports = {p.port_no: p.upcall_pids for p in dpif.port_dump()}
        dpif.set_handler_pids([pid])

    def release(self) -> None:
        """Put the old PIDs back (ports that went away meanwhile are skipped)."""
        dpif = self.dpif
        if self.per_cpu is not None:
            dpif.sock.transact(
                DP,
                DpCmd.SET,
                {
                    "name": dpif.name,
                    "user_features": dpif.user_features,
                    "per_cpu_pids": self.per_cpu,
                },
            )
            return
        for port_no, pids in self.ports.items():
            try:
                dpif.port_set_upcall_pids(port_no, pids or (0,))
            except NetlinkError as exc:
                if exc.errno not in (errno.ENODEV, errno.ENOENT):
                    raise


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_monitor(ctx: Context, argv: Sequence[str]) -> int:
    """``monitor [DP]``: port events and upcalls, one line each, until SIGINT or SIGTERM."""
    dpif = ctx.opt_open(argv, 2)
    names = ctx.port_names(dpif) if ctx.params.names else None
    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, _interrupt)
    monitor = PortMonitor(dpif, ctx.socket_path)
    handler: NetlinkSocket | None = None
    claim: _Claim | None = None
    try:
        try:
            if ctx.params.upcalls:
                handler = NetlinkSocket(ctx.socket_path)
                claim = _Claim(dpif, handler.pid)
            what = "port events and upcalls" if handler else "port events"
            notice = f"monitoring {dpif_name(dpif)}: {what}; interrupt to stop"
            ctx.stderr.write(f"{ctx.prog}: {notice}\n")
            ctx.stderr.flush()
            _loop(ctx, dpif, monitor, handler, names)
        except KeyboardInterrupt:
            pass
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                if claim is not None:
                    claim.release()
            finally:
                monitor.close()
                if handler is not None:
                    handler.close()
    finally:
        for signum, old in handlers.items():
            signal.signal(signum, old)
    return 0


def _loop(
    ctx: Context,
    dpif: Dpif,
    monitor: PortMonitor,
    handler: NetlinkSocket | None,
    names: dict[str, int] | None,
) -> None:
    first = True
    verbosity = ctx.params.verbosity
    while True:
        busy = False
        for event in monitor.poll(0):
            busy = True
            if first and event.kind == "resync":
                continue  # the subscription's own start, not a loss
            ctx.print(format_event(event))
            if names is not None:
                names = ctx.port_names(dpif)
        first = False
        if handler is not None:
            try:
                upcalls = Dpif.recv_upcalls(handler, 0)
            except NetlinkError as exc:
                if exc.errno == errno.ENOBUFS:
                    ctx.print("upcalls: lost (the receive queue overflowed)")
                elif exc.errno != errno.EINVAL:  # EINVAL: a malformed message, skipped
                    raise
                upcalls = []
                busy = True
            for upcall in upcalls:
                busy = True
                if upcall.dp_ifindex in (0, dpif.dp_ifindex):
                    ctx.print(format_upcall(upcall, names, verbosity))
        ctx.flush()
        if not busy:
            waiting = [monitor] + ([handler] if handler is not None else [])
            select.select(waiting, [], [], None)
