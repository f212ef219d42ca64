"""The pseudo-device's I/O shell: an AF_UNIX SOCK_SEQPACKET listener served by trio.

One accepted connection is one netlink socket instance of the :class:`~.device.Device`; one
SEQPACKET record is one netlink datagram.  I/O is drain-style: a task waits until its socket is
readable, then receives and handles records until EAGAIN (or a batch limit, for fairness), then
sends what they produced until the socket is full; there is never one ``await`` per message.
A second task per connection sends what arrives from elsewhere (upcalls, events, the rest of a
dump) and parks when there is nothing to send; the device wakes it.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import select
import socket
import stat
import struct
import termios
from collections.abc import Callable
from typing import Any

import trio

from ..netlink.message import encode_error, encode_noop
from .device import Connection, Credentials, Device

BATCH = 64
"""Records handled per wake-up before the task lets others run."""

MAX_RECORD = 1 << 20
"""Largest request record accepted; larger ones are refused with EMSGSIZE."""

MAX_QUEUED_REPLIES = 4096
"""Past this many unsent replies the service stops reading that client until it catches up."""

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_CRED = struct.Struct("3i")


class ServiceError(Exception):
    """The service cannot start (socket path in use, bad owner or group, ...)."""


def peer_credentials(sock: socket.socket) -> Credentials:
    """The connecting process's pid, uid, gid and supplementary groups."""
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    groups: tuple[int, ...] = ()
    try:
        # 1024 is the most Python's getsockopt accepts (256 groups); more raises ERANGE
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
    except OSError:
        pass  # an old kernel: the primary group still counts
    return Credentials(pid, uid, gid, groups)


def resolve_user(owner: int | str | None) -> int | None:
    """A uid from a user name or number."""
    if owner is None or isinstance(owner, int):
        return owner
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ServiceError(f"no user named {owner!r}") from None


def resolve_group(group: int | str | None) -> int | None:
    """A gid from a group name or number."""
    if group is None or isinstance(group, int):
        return group
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ServiceError(f"no group named {group!r}") from None


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file left by a crashed run; refuse a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServiceError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody answers: stale
        return
    except OSError as exc:
        raise ServiceError(f"cannot tell whether {path} is in use: {exc}") from None
    finally:
        probe.close()
    raise ServiceError(f"another service is listening on {path}")


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the peer has shut down (recv returns 0 both at EOF and for an empty record)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return bool(poller.poll(0))


class _ConnectionIO:
    """Moves records between one client socket and its Connection."""

    def __init__(self, device: Device, sock: socket.socket, conn: Connection) -> None:
        self.device = device
        self.sock = sock
        self.conn = conn
        self.writer_lot = trio.lowlevel.ParkingLot()
        self.drained_lot = trio.lowlevel.ParkingLot()
        self.broken = False
        self.buffer = bytearray(MAX_RECORD)
        conn.on_output = self.wake
        conn.peer_unread = self.peer_unread

    def peer_unread(self) -> int:
        """Bytes sent to the client that it has not read yet (SIOCOUTQ)."""
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        unread: int = struct.unpack("i", raw)[0]
        return unread

    def wake(self) -> None:
        """Called by the device when output appears; wakes the writer if it sleeps."""
        if self.writer_lot:
            self.writer_lot.unpark_all()

    def flush(self) -> bool:
        """Send until the socket is full or nothing is left; True when nothing is left."""
        try:
            done = self.conn.drain(self.sock.send)
        except OSError:
            self.broken = True  # the peer is gone: the reader sees EOF and cleans up
            return True
        if done and self.drained_lot:
            self.drained_lot.unpark_all()
        return done

    async def reader(self) -> None:
        """Receive request records until the client goes away."""
        sock = self.sock
        handle = self.device.handle_record
        conn = self.conn
        buffer = self.buffer
        view = memoryview(buffer)
        recv_into = sock.recv_into
        flush = self.flush
        while not self.broken:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(BATCH):
                try:
                    # MSG_TRUNC: a SEQPACKET receive reports the record's real length
                    nbytes = recv_into(buffer, 0, socket.MSG_TRUNC)
                except BlockingIOError:
                    break
                except OSError:
                    return
                if nbytes == 0 and _peer_closed(sock):
                    return  # EOF (an empty record from a live peer is a datagram with no messages)
                if nbytes > MAX_RECORD:
                    header = bytes(view[:16])
                    conn.queue_reply(
                        encode_error(
                            -errno.EMSGSIZE,
                            header,
                            conn.pid,
                            f"record of {nbytes} bytes exceeds {MAX_RECORD}",
                        )
                    )
                    if conn.txn_markers:  # a refused record is a record: it gets its marker
                        seq = struct.unpack_from("=I", header, 8)[0]
                        conn.queue_reply(encode_noop(seq, conn.pid))
                else:
                    handle(conn, bytes(view[:nbytes]))
                # Answer at once, as an echo server would: latency is the client's wait.
                if not flush():
                    self.wake()  # the socket is full: the writer waits for room
                    if conn.queued_replies > MAX_QUEUED_REPLIES:
                        break
            while conn.queued_replies > MAX_QUEUED_REPLIES and not self.broken:
                self.wake()
                await self.drained_lot.park()

    async def writer(self) -> None:
        """Send what the device queues outside requests (upcalls, events, dump records)."""
        while not self.broken:
            if self.flush():
                if not self.conn.has_output():
                    await self.writer_lot.park()
            else:
                await trio.lowlevel.wait_writable(self.sock)
        self.drained_lot.unpark_all()


class PseudoDevice:
    """The listening service around a :class:`Device`."""

    def __init__(
        self,
        device: Device,
        path: str,
        *,
        mode: int = 0o660,
        owner: int | str | None = None,
        group: int | str | None = None,
    ) -> None:
        self.device = device
        self.path = path
        self.mode = mode
        self.owner = resolve_user(owner)
        self.group = resolve_group(group)
        self.connections: set[_ConnectionIO] = set()
        self._listener: socket.socket | None = None
        self._inode: int | None = None

    def open(self) -> None:
        """Create, bind and listen (synchronously, so errors surface before serving)."""
        _clear_stale_socket(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            old_umask = os.umask(0o177)  # the file never exists with wider permissions
            try:
                listener.bind(self.path)
            finally:
                os.umask(old_umask)
            os.chmod(self.path, self.mode)
            if self.owner is not None or self.group is not None:
                os.chown(
                    self.path,
                    -1 if self.owner is None else self.owner,
                    -1 if self.group is None else self.group,
                )
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise ServiceError(f"cannot listen on {self.path}: {exc}") from None
        self._listener = listener
        self._inode = os.stat(self.path).st_ino

    def close(self) -> None:
        """Stop listening and remove the socket file (if it is still ours)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        try:
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._inode = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and serve connections until cancelled; then close everything."""
        if self._listener is None:
            self.open()
        listener = self._listener
        assert listener is not None
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.path)
                while True:
                    await trio.lowlevel.wait_readable(listener)
                    while True:
                        try:
                            sock, _ = listener.accept()
                        except BlockingIOError:
                            break
                        except OSError:
                            break  # EMFILE and the like: try again on the next wake-up
                        sock.setblocking(False)
                        nursery.start_soon(self._serve_connection, sock)
        finally:
            self.close()

    async def _serve_connection(self, sock: socket.socket) -> None:
        try:
            creds = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        conn = self.device.connect(creds)
        io = _ConnectionIO(self.device, sock, conn)
        self.connections.add(io)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(io.writer)
                await io.reader()
                nursery.cancel_scope.cancel()
        finally:
            self.connections.discard(io)
            self.device.disconnect(conn)
            conn.on_output = None
            sock.close()


async def serve(
    device: Device,
    path: str,
    *,
    mode: int = 0o660,
    owner: int | str | None = None,
    group: int | str | None = None,
    on_listening: Callable[[str], None] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``device`` on the socket ``path`` until cancelled (``nursery.start``-able)."""
    service = PseudoDevice(device, path, mode=mode, owner=owner, group=group)
    service.open()
    if on_listening is not None:
        on_listening(path)
    await service.run(task_status=task_status)
