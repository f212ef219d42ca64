"""The TAP backend: a VM's NIC as a Linux TAP device (``/dev/net/tun``, IFF_TAP | IFF_NO_PI).

The TAP netdev *is* the VM's NIC: the kernel network stack behind it (the host's, or a network
namespace's once the device is moved there) plays the VM.  Frames that stack sends out of the
device become readable on ovsdp's descriptor (the port's ingress); frames the switch delivers to
the port are written to the descriptor and arrive at the device as received.  So the device's
MAC is the VM's MAC, the source of the VM's frames: ovsdp gives a device it creates the switch
port's MAC (Hyper-V gives a VM's NIC the port's MAC the same way) and the port's MTU, and sets it
up.  A device that existed before (a persistent TAP made with ``ip tuntap add``) keeps its MAC;
ovsdp sets its MTU and brings it up, and leaves it in place when it closes.  A device ovsdp
created is not persistent: it goes away when ovsdp closes its descriptor, wherever it was moved.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import socket
import struct
from collections.abc import Sequence

from ..vswitch.switch import format_mac
from .base import BATCH, DeviceGone, FdBackend, NicError, describe

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
TUNSETSNDBUF = 0x400454D4  # _IOW('T', 212, int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_TUN_EXCL = 0x8000
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, ifr_flags, rest of the union

ROOT_HINT = " (TAP devices need CAP_NET_ADMIN: run ovsdp as root)"

READ_SIZE = 65536
"""Bytes asked for per read: any frame a TAP device without a vnet header can hand over."""


def interface_index(name: str) -> int | None:
    """The ifindex of ``name`` in this network namespace, or None."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def configure_link(
    name: str, *, mtu: int | None = None, mac: bytes | None = None, up: bool = True
) -> None:
    """Set the MTU and MAC of interface ``name`` and bring it up (pyroute2, rtnetlink)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError as RtnlError

    changes: dict[str, object] = {}
    if mtu is not None:
        changes["mtu"] = mtu
    if mac is not None:
        changes["address"] = format_mac(mac)
    if up:
        changes["state"] = "up"
    if not changes:
        return
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise NicError(f"no interface named {name!r}")
            ipr.link("set", index=found[0], **changes)
    except RtnlError as exc:
        what = ", ".join(f"{k} {v}" for k, v in changes.items())
        raise NicError(f"cannot set {what} on {name!r}: {os.strerror(exc.code)}") from None


class TapBackend(FdBackend):
    """A TAP device, created (or attached to, if it exists) and read drain-style."""

    kind = "tap"
    FATAL_READ_ERRORS = frozenset({errno.EBADF, errno.EBADFD, errno.ENXIO})

    def __init__(
        self,
        name: str,
        *,
        mtu: int | None = None,
        mac: bytes | None = None,
        sndbuf: int | None = None,
        batch: int = BATCH,
    ) -> None:
        super().__init__(name, batch=batch)
        self.mtu = mtu
        self.mac = mac
        self.sndbuf = sndbuf
        self.created = False  # whether ovsdp made the device (it goes away on close)

    def open(self) -> None:
        """Create or attach to the device, configure it, make the descriptor non-blocking."""
        if self.fd >= 0:
            return
        name = self.device
        existed = interface_index(name) is not None
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            hint = ROOT_HINT if exc.errno in (errno.EACCES, errno.EPERM) else ""
            raise NicError(f"cannot open {TUN_PATH}: {describe(exc)}{hint}") from None
        try:
            flags = IFF_TAP | IFF_NO_PI | (0 if existed else IFF_TUN_EXCL)
            try:
                fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
            except OSError as exc:
                raise NicError(self._setiff_reason(exc, existed)) from None
            if self.sndbuf is not None:
                fcntl.ioctl(fd, TUNSETSNDBUF, struct.pack("i", self.sndbuf))
            self.created = not existed
            configure_link(name, mtu=self.mtu, mac=self.mac if self.created else None)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _setiff_reason(self, exc: OSError, existed: bool) -> str:
        name = self.device
        if exc.errno == errno.EPERM:
            verb = "attach to" if existed else "create"
            return f"cannot {verb} TAP device {name!r}: {describe(exc)}{ROOT_HINT}"
        if exc.errno == errno.EINVAL and existed:
            return f"{name!r} exists and is not a TAP device"
        if exc.errno == errno.EBUSY:
            if existed:
                return f"TAP device {name!r} is in use by another process"
            return f"TAP device {name!r} appeared while ovsdp was creating it"
        return f"cannot set up TAP device {name!r}: {describe(exc)}"

    def read_batch(self, limit: int) -> list[bytes]:
        """Up to ``limit`` frames, each one ``read`` of the descriptor."""
        frames: list[bytes] = []
        append = frames.append
        read = os.read
        fd = self.fd
        for _ in range(limit):
            try:
                append(read(fd, READ_SIZE))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in self.FATAL_READ_ERRORS:
                    raise DeviceGone(describe(exc)) from None
                self.read_error(exc)
                break
        self.counters.rx += len(frames)
        return frames

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Write each frame; on EAGAIN the rest of the batch is dropped (a full NIC ring)."""
        fd = self.fd
        if fd < 0:
            self.counters.tx_dropped += len(frames)
            return
        self.send_each(functools.partial(os.write, fd), frames)

    def _release(self) -> None:
        os.close(self.fd)
        self.created = False
