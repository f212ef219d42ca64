"""What the NIC backends share: counters, errors, interface names, the drain-style receive loop.

A backend is a :class:`~ovsdp.vswitch.switch.NicBackend` (``transmit(frames)``, called
synchronously from the packet path, never blocking) plus a trio task (:meth:`FdBackend.run`)
that reads frames from its file descriptor and hands them to the switch in batches.

I/O is drain-style (docs/nic.md): wait until the descriptor is readable, then read without
blocking until EAGAIN or ``batch`` frames, then one ``VSwitch.receive(port, frames)``; after a
full batch the task yields (a checkpoint, no syscall) and reads on.  There is never one ``await``
per frame.
"""

from __future__ import annotations

import abc
import errno
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import trio

from ..vswitch.switch import SwitchPort, VSwitch

log = logging.getLogger("ovsdp.nic")

BATCH = 64
"""Frames read per batch (one ``VSwitch.receive`` call) before the task yields."""

ERROR_STREAK = 64
ERROR_BACKOFF = 0.1
"""After this many failed reads in a row without a frame, wait this long between tries."""

IFNAMSIZ = 16
_LOGGED_ERRORS = 10  # tracebacks of packet-path exceptions logged per backend, then counted only


class NicError(Exception):
    """A backend cannot start: no such interface, no permission, a device of another kind."""


class DeviceGone(Exception):
    """The backend's device went away for good (a deleted TAP device): its task ends."""


@dataclass
class NicCounters:
    """What a backend counted since it was opened (frames)."""

    rx: int = 0  # frames read and handed to the switch
    tx: int = 0  # frames written to the device
    tx_dropped: int = 0  # frames transmit() could not write (full queue, errors, closed)
    rx_errors: int = 0  # failed reads, truncated frames, frames the packet path raised on
    tx_errors: int = 0  # the part of tx_dropped that failed for a reason other than a full queue
    rx_dropped: int = 0  # frames the kernel dropped because ovsdp did not read them in time

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


def check_ifname(name: str) -> None:
    """A Linux interface name (1-15 bytes; not ``.``/``..``; no ``/``, ``:`` or white space)."""
    raw = name.encode()
    if not 0 < len(raw) < IFNAMSIZ:
        raise NicError(f"interface name {name!r} must be 1 to {IFNAMSIZ - 1} bytes")
    if name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        raise NicError(f"{name!r} is not a valid interface name")


def describe(exc: OSError) -> str:
    """``strerror`` of an OSError (its errno name if it has no text)."""
    if exc.strerror:
        return exc.strerror
    return errno.errorcode.get(exc.errno or 0, str(exc))


class FdBackend(abc.ABC):
    """A NIC backend on one non-blocking file descriptor; subclasses open it and move frames."""

    kind = "fd"
    FATAL_READ_ERRORS: frozenset[int] = frozenset({errno.EBADF, errno.EBADFD})

    def __init__(self, device: str, *, batch: int = BATCH) -> None:
        check_ifname(device)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.device = device
        self.batch = batch
        self.fd = -1
        self.counters = NicCounters()
        self._logged = 0
        self._error_streak = 0  # read errors since the last frame read

    def __repr__(self) -> str:
        state = "open" if self.fd >= 0 else "closed"
        return f"<{type(self).__name__} {self.device} {state}>"

    # -- what subclasses provide ----------------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None:
        """Open (and configure) the device; NicError with a clear reason if it cannot be."""

    @abc.abstractmethod
    def transmit(self, frames: Sequence[bytes]) -> None:
        """Write frames without blocking; what cannot be written now is dropped and counted."""

    @abc.abstractmethod
    def read_batch(self, limit: int) -> list[bytes]:
        """Up to ``limit`` frames that are ready now ([] when none); DeviceGone if the device
        is gone for good."""

    def send_each(
        self, send: Callable[[bytes], object], frames: Sequence[bytes], dropped_errno: int = 0
    ) -> None:
        """:meth:`transmit`'s loop: ``send`` each frame until EAGAIN (the rest of the batch is
        dropped: a full NIC ring), counting what went, what failed and what was dropped.  An
        OSError with ``dropped_errno`` is a drop (the device queue's), not an error."""
        sent = failed = 0
        for frame in frames:
            try:
                send(frame)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != dropped_errno:
                    failed += 1
                continue
            sent += 1
        counters = self.counters
        counters.tx += sent
        counters.tx_errors += failed
        counters.tx_dropped += len(frames) - sent

    def read_error(self, exc: OSError) -> None:
        """Count a failed read (the batch ends there)."""
        self.counters.rx_errors += 1
        self._error_streak += 1
        if self._error_streak == 1:
            log.warning("%s %s: read failed: %s", self.kind, self.device, describe(exc))

    def _release(self) -> None:
        """Close the descriptor (and whatever else the backend holds)."""
        os.close(self.fd)

    # -- shared ---------------------------------------------------------------------------------

    @property
    def transmitted(self) -> int:
        """Frames the switch delivered to this NIC (written or dropped), like MemoryBackend's."""
        return self.counters.tx + self.counters.tx_dropped

    def stats(self) -> NicCounters:
        """The counters, with what the kernel reports folded in first."""
        return self.counters

    def fileno(self) -> int:
        """The descriptor frames are read from (-1 once closed)."""
        return self.fd

    def close(self) -> None:
        """Close the descriptor (idempotent); a receive task waiting on it is woken first."""
        if self.fd < 0:
            return
        try:
            trio.lowlevel.notify_closing(self.fd)
        except RuntimeError:
            pass  # not inside trio: nobody can be waiting
        try:
            self._release()
        finally:
            self.fd = -1

    def __enter__(self) -> FdBackend:
        if self.fd < 0:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def run(
        self,
        switch: VSwitch,
        port: SwitchPort,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read frames and hand them to ``switch`` as ``port``'s ingress until cancelled."""
        if self.fd < 0:
            raise NicError(f"{self.kind} {self.device}: not open")
        receive = switch.receive
        read_batch = self.read_batch
        limit = self.batch
        task_status.started()
        while True:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except trio.ClosedResourceError:
                return  # close() while waiting
            while True:
                try:
                    frames = read_batch(limit)
                except DeviceGone as exc:
                    log.error("%s %s: %s; no more frames from it", self.kind, self.device, exc)
                    return
                if frames:
                    self._error_streak = 0
                    try:
                        receive(port, frames)
                    except Exception:
                        self._packet_path_failed(len(frames))
                elif self._error_streak > ERROR_STREAK:
                    # a descriptor that polls readable and only fails: do not spin on it
                    await trio.sleep(ERROR_BACKOFF)
                if len(frames) < limit:
                    break
                await trio.lowlevel.checkpoint()
                if self.fd < 0:
                    return

    def _packet_path_failed(self, count: int) -> None:
        """The switch raised on a batch: count its frames as errors, log the first few."""
        self.counters.rx_errors += count
        if self._logged < _LOGGED_ERRORS:
            self._logged += 1
            log.exception("%s %s: the packet path failed on a batch", self.kind, self.device)
