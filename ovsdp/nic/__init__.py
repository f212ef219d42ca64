"""NIC backends on real devices: TAP (a VM's NIC) and AF_PACKET (an existing interface).

Each backend is a :class:`~ovsdp.vswitch.switch.NicBackend` (``transmit`` never blocks: what
the device cannot take now is dropped and counted, as a full NIC ring would) and a trio task that
reads frames drain-style and hands them to the switch in batches.  This package is I/O (trio,
sockets, ioctls); the switch and the datapath stay sans-I/O.  docs/nic.md describes the design.

:func:`open_nics` opens the backends a configuration asks for and plugs them into the switch's
ports; :func:`run_nics` runs their receive tasks until cancelled and closes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

from ..vswitch.switch import SwitchPort, VSwitch
from .afpacket import AfPacketBackend
from .base import BATCH, FdBackend, NicCounters, NicError, check_ifname
from .tap import TapBackend

__all__ = [
    "BATCH",
    "AfPacketBackend",
    "FdBackend",
    "NicCounters",
    "NicError",
    "TapBackend",
    "check_ifname",
    "close_nics",
    "open_backend",
    "open_nics",
    "run_nics",
]

REAL_BACKENDS = ("tap", "afpacket")


def open_backend(kind: str, device: str, port: SwitchPort) -> FdBackend:
    """Open a ``tap`` or ``afpacket`` backend on ``device`` for ``port``."""
    backend: FdBackend
    if kind == "tap":
        backend = TapBackend(device, mtu=port.mtu, mac=port.mac)
    elif kind == "afpacket":
        backend = AfPacketBackend(device)
    else:
        raise NicError(f"unknown NIC backend {kind!r} (one of {REAL_BACKENDS})")
    backend.open()
    return backend


def open_nics(
    switch: VSwitch, wanted: Iterable[tuple[str, str, str]]
) -> list[tuple[SwitchPort, FdBackend]]:
    """Open a backend per ``(port name, kind, device)`` and plug it into the port.

    All or nothing: if one cannot be opened, the ones already opened are closed and unplugged,
    and :class:`NicError` says which port and why.
    """
    wanted = list(wanted)
    devices = [device for _name, _kind, device in wanted]
    shared = sorted({d for d in devices if devices.count(d) > 1})
    if shared:
        raise NicError(f"more than one port on interface {', '.join(map(repr, shared))}")
    opened: list[tuple[SwitchPort, FdBackend]] = []
    try:
        for name, kind, device in wanted:
            port = switch.port(name)
            try:
                backend = open_backend(kind, device, port)
            except NicError as exc:
                raise NicError(f"port {name}: {exc}") from None
            opened.append((port, backend))
            switch.set_backend(name, backend)
    except BaseException:
        close_nics(opened)
        raise
    return opened


def close_nics(nics: Iterable[tuple[SwitchPort, FdBackend]]) -> None:
    """Unplug and close backends (a TAP device ovsdp created goes away with its descriptor)."""
    for port, backend in nics:
        if port.nic.backend is backend:
            port.nic.backend = None
        backend.close()


async def run_nics(
    switch: VSwitch,
    nics: list[tuple[SwitchPort, FdBackend]],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every backend's receive task until cancelled; then close them all."""
    try:
        async with trio.open_nursery() as nursery:
            for port, backend in nics:
                await nursery.start(backend.run, switch, port)
            task_status.started()
    finally:
        close_nics(nics)
