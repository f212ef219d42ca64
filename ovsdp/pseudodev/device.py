"""The pseudo-device, sans I/O: netlink socket instances, dispatch, dumps, queues.

One :class:`Connection` is one emulated netlink socket (one open handle on the Windows device):
it has a PID, multicast memberships, socket properties, an output queue and at most one dump in
progress.  :meth:`Device.handle_record` takes one request record (one datagram) and queues what it
answers; the I/O shell (:mod:`.server`) moves records between the connection and its socket with
:meth:`Connection.pop_output`.  Nothing here imports trio or socket.

Output order on a connection: replies and unsolicited messages leave in the order they were
queued; a dump's next record is produced only when that queue is empty and the socket can take
it, so a dump of any size costs the service one record of memory (back-pressure through the
socket buffer).
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..netlink.constants import (
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_ECHO,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_HDRLEN,
    NLMSG_MIN_TYPE,
)
from ..netlink.errors import NetlinkError, einval
from ..netlink.message import (
    NLMSGHDR,
    GenlMessage,
    decode_genl,
    encode_done,
    encode_error,
    encode_genl,
    encode_noop,
)
from .registry import Family

log = logging.getLogger("ovsdp.pseudodev")

DEFAULT_RXQ_LIMIT = 4 << 20
"""Bytes of unsolicited messages a connection may have queued in the service (dpif-netlink
asks the kernel for a 4 MiB receive buffer; this is the same budget)."""

DUMP_RECORD_BYTES = 32 << 10
"""A dump packs messages into records up to this size."""

DRAIN_BUDGET = 64 << 10
"""Bytes :meth:`Connection.drain` sends per call at most (then the service serves others)."""

MAX_PID = 0xFFFFFFFF
EINVAL = errno.EINVAL
_unpack_nlhdr = NLMSGHDR.unpack_from

# kinds of queued records
_REPLY = 0
_UNSOLICITED = 1
_OVERRUN = 2
# where the connection's overrun report (one ENOBUFS) stands
_OVERRUN_NONE = 0
_OVERRUN_QUEUED = 1
_OVERRUN_SENT = 2


@dataclass(frozen=True)
class Credentials:
    """The peer of a connection, as SO_PEERCRED (and SO_PEERGROUPS) report it."""

    pid: int = 0
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()


@dataclass
class _Dump:
    family: Family
    seq: int
    iterator: Iterator[GenlMessage]
    marker_seq: int | None = None  # transaction marker owed once the dump is done


class Connection:
    """One netlink socket instance on the pseudo-device."""

    def __init__(self, device: Device, pid: int, creds: Credentials, privileged: bool) -> None:
        self.device = device
        self.pid = pid
        self.creds = creds
        self.privileged = privileged
        self.groups: set[int] = set()
        self.txn_markers = False
        self.rxq_limit = device.rxq_limit
        self.rxq_bytes = 0  # unsolicited bytes queued
        self.rxq_dropped = 0
        self.closed = False
        self._out: deque[tuple[bytes, int]] = deque()
        self._pushed_back: bytes | None = None
        self._overrun = _OVERRUN_NONE
        # set by the I/O shell: bytes sent to the peer that it has not read yet
        self.peer_unread: Callable[[], int] | None = None
        self._dump: _Dump | None = None
        self._started_dump = False  # set while handling a record that started a dump
        self.on_output: Callable[[], None] | None = None  # set by the I/O shell

    def __repr__(self) -> str:
        return f"<Connection pid={self.pid} uid={self.creds.uid}>"

    # -- what the I/O shell uses ----------------------------------------------------------------

    def has_output(self) -> bool:
        """Whether :meth:`pop_output` would return a record."""
        return bool(self._pushed_back is not None or self._out or self._dump is not None)

    def pop_output(self) -> bytes | None:
        """The next record to send, or None.  Call :meth:`push_back` if it could not be sent."""
        if self._pushed_back is not None:
            record, self._pushed_back = self._pushed_back, None
            return record
        if self._out:
            record, kind = self._out.popleft()
            if kind == _UNSOLICITED:
                self.rxq_bytes -= len(record)
            elif kind == _OVERRUN:
                self._overrun = _OVERRUN_SENT
            return record
        if self._dump is not None:
            return self.device._next_dump_record(self)
        return None

    def drain(self, send: Callable[[bytes], object], budget: int = DRAIN_BUDGET) -> bool:
        """Hand records to ``send`` until it raises BlockingIOError or ``budget`` bytes have
        gone; True when nothing is left.

        This is :meth:`pop_output` in a loop without a call per record (the flood path).  A
        record ``send`` refused is kept for the next call.  Other exceptions propagate.  The
        budget keeps a client that reads as fast as the service writes (a dump, a flood) from
        holding the service: past it the shell lets other tasks run before the next call.
        """
        out = self._out
        while budget > 0:
            record = self._pushed_back
            if record is not None:
                self._pushed_back = None
            elif out:
                record, kind = out.popleft()
                if kind == _UNSOLICITED:
                    self.rxq_bytes -= len(record)
                elif kind == _OVERRUN:
                    self._overrun = _OVERRUN_SENT
            elif self._dump is not None:
                record = self.device._next_dump_record(self)
            else:
                return True
            try:
                send(record)
            except BlockingIOError:
                self._pushed_back = record
                return False
            budget -= len(record)
        return not self.has_output()

    def push_back(self, record: bytes) -> None:
        """Return a record :meth:`pop_output` gave out but the socket would not take."""
        self._pushed_back = record

    @property
    def dumping(self) -> bool:
        """Whether a dump is in progress on this connection."""
        return self._dump is not None

    @property
    def queued_replies(self) -> int:
        """Records queued that are not unsolicited (the shell stops reading past a limit)."""
        return len(self._out)

    # -- queueing ---------------------------------------------------------------------------

    def queue_reply(self, record: bytes) -> None:
        """Queue an answer to a request (never dropped)."""
        self._out.append((record, _REPLY))

    def queue_unsolicited(self, record: bytes) -> bool:
        """Queue an upcall or event; False if the queue is full and it was dropped.

        The first drop after the client last caught up queues one NLMSG_ERROR with ENOBUFS, as
        Linux reports a receive-buffer overrun, so the client knows it must resync.
        """
        return self.queue_unsolicited_batch((record,)) == 1

    def queue_unsolicited_batch(self, records: Sequence[bytes]) -> int:
        """Queue several upcalls or events (an ingress batch's); returns how many fit."""
        if self.closed:
            return 0
        out = self._out
        was_empty = not out
        limit = self.rxq_limit
        queued = self.rxq_bytes
        taken = 0
        dropped = 0
        for record in records:
            size = len(record)
            if queued + size > limit:
                dropped += 1
                continue
            queued += size
            out.append((record, _UNSOLICITED))
            taken += 1
        self.rxq_bytes = queued
        if dropped:
            self._dropped(dropped)
        if was_empty and out:
            # The I/O shell's writer sleeps only when there is nothing to send, so it needs
            # waking only when the queue stops being empty.
            self._notify()
        return taken

    def _dropped(self, count: int) -> None:
        # One ENOBUFS per overrun: none while one is queued, and once it has been sent, none
        # until the client has read it (the shell knows: peer_unread, SIOCOUTQ, reaches 0).
        self.rxq_dropped += count
        state = self._overrun
        if state == _OVERRUN_QUEUED:
            return
        if state == _OVERRUN_SENT:
            unread = self.peer_unread
            if unread is not None and unread() > 0:
                return
        self._overrun = _OVERRUN_QUEUED
        overrun = encode_error(
            -errno.ENOBUFS,
            (NLMSG_HDRLEN, 0, 0, 0, self.pid),
            self.pid,
            "receive queue overrun: messages were dropped",
        )
        self._out.append((overrun, _OVERRUN))

    def _notify(self) -> None:
        if self.on_output is not None:
            self.on_output()

    def _drop_everything(self) -> None:
        self.closed = True
        self._out.clear()
        self._pushed_back = None
        self._dump = None
        self.rxq_bytes = 0


class Request:
    """One decoded request, as a handler sees it."""

    __slots__ = ("command_name", "conn", "device", "family", "flags", "msg")

    def __init__(
        self, device: Device, conn: Connection, family: Family, msg: GenlMessage, name: str
    ) -> None:
        self.device = device
        self.conn = conn
        self.family = family
        self.msg = msg
        self.flags = msg.flags
        self.command_name = name

    @property
    def attrs(self) -> Any:
        return self.msg.attrs

    @property
    def pid(self) -> int:
        """The requesting socket's PID."""
        return self.conn.pid

    @property
    def echo(self) -> bool:
        """Whether the client asked for the object back (NLM_F_ECHO)."""
        return bool(self.flags & NLM_F_ECHO)

    def reply(self, cmd: int, attrs: Any, dp_ifindex: Any = None) -> GenlMessage:
        """A reply message of the request's family."""
        return GenlMessage(
            self.family.id,
            0,
            self.msg.seq,
            self.conn.pid,
            cmd,
            self.family.version,
            dp_ifindex,
            attrs,
        )


def _internal_error(exc: Exception) -> str:
    log.error("internal error while handling a request", exc_info=exc)
    return f"internal error: {type(exc).__name__}: {exc}"


class Device:
    """The pseudo-device: families, connections, multicast groups."""

    def __init__(
        self,
        *,
        admin_gid: int | None = None,
        rxq_limit: int = DEFAULT_RXQ_LIMIT,
        dump_record_bytes: int = DUMP_RECORD_BYTES,
    ) -> None:
        self.admin_gid = admin_gid
        self.rxq_limit = rxq_limit
        self.dump_record_bytes = dump_record_bytes
        self.families: dict[int, Family] = {}
        self.families_by_name: dict[str, Family] = {}
        self.groups: dict[int, set[Connection]] = {}
        self.group_names: dict[int, tuple[str, str]] = {}  # id -> (family, group)
        self.connections: dict[int, Connection] = {}  # by PID
        self._next_pid = 1
        self._claimed_ahead: set[int] = set()  # PIDs claimed beyond the counter: never handed out
        self._next_family_id = GENL_ID_CTRL + 1
        self._next_group_id = GENL_ID_CTRL + 1
        # imported here: these modules register families into a device
        from . import control, nlctrl

        nlctrl.register(self)
        control.register(self)

    # -- families ---------------------------------------------------------------------------

    def register(self, family: Family, family_id: int | None = None) -> Family:
        """Give a family its id and multicast group ids and start dispatching to it."""
        if family.name in self.families_by_name:
            raise ValueError(f"family {family.name} is already registered")
        if family_id is None:
            family_id = self._next_family_id
            self._next_family_id += 1
        if family_id in self.families:
            raise ValueError(f"family id {family_id} is taken")
        family.id = family_id
        for group in family.mcast_groups:
            if family_id == GENL_ID_CTRL:
                gid = GENL_ID_CTRL  # nlctrl's "notify" group has id 16 on Linux too
            else:
                gid = self._next_group_id
                self._next_group_id += 1
            family.group_ids[group] = gid
            self.groups[gid] = set()
            self.group_names[gid] = (family.name, group)
        self.families[family_id] = family
        self.families_by_name[family.name] = family
        return family

    # -- connections ------------------------------------------------------------------------

    def is_privileged(self, creds: Credentials) -> bool:
        """uid 0, or a member of the configured admin group (the CAP_NET_ADMIN rule)."""
        if creds.uid == 0:
            return True
        gid = self.admin_gid
        return gid is not None and (creds.gid == gid or gid in creds.groups)

    def connect(self, creds: Credentials) -> Connection:
        """A new netlink socket instance with a fresh PID (a counter, never reused)."""
        # skip PIDs a client claimed, held now or not (a PID is never handed out twice)
        while self._next_pid in self.connections or self._next_pid in self._claimed_ahead:
            self._claimed_ahead.discard(self._next_pid)
            self._next_pid += 1
        pid = self._next_pid
        self._next_pid += 1
        conn = Connection(self, pid, creds, self.is_privileged(creds))
        self.connections[pid] = conn
        return conn

    def disconnect(self, conn: Connection) -> None:
        """Forget a connection: its PID, memberships, queues and dump."""
        if self.connections.get(conn.pid) is conn:
            del self.connections[conn.pid]
        for gid in conn.groups:
            self.groups[gid].discard(conn)
        conn.groups.clear()
        conn._drop_everything()

    def claim_pid(self, conn: Connection, pid: int) -> None:
        """Give ``conn`` the PID it asks for, as bind() does (EADDRINUSE if held)."""
        if pid == conn.pid:
            return
        if not 0 < pid <= MAX_PID:
            raise einval(f"PID {pid} is out of range")
        if pid in self.connections:
            raise NetlinkError(errno.EADDRINUSE, f"PID {pid} is held by another socket")
        del self.connections[conn.pid]
        conn.pid = pid
        self.connections[pid] = conn
        if pid >= self._next_pid:
            self._claimed_ahead.add(pid)

    def join(self, conn: Connection, group_id: int) -> None:
        """Add a connection to a multicast group (EINVAL for an unknown group)."""
        members = self.groups.get(group_id)
        if members is None:
            raise einval(f"no multicast group {group_id}")
        members.add(conn)
        conn.groups.add(group_id)

    def leave(self, conn: Connection, group_id: int) -> None:
        """Remove a connection from a multicast group."""
        members = self.groups.get(group_id)
        if members is None:
            raise einval(f"no multicast group {group_id}")
        members.discard(conn)
        conn.groups.discard(group_id)

    # -- unsolicited messages ---------------------------------------------------------------

    def unicast(self, pid: int, record: bytes) -> bool:
        """Queue a record for the socket with ``pid``; False if there is none or it is full."""
        conn = self.connections.get(pid)
        if conn is None:
            return False
        return conn.queue_unsolicited(record)

    def unicast_batch(self, pid: int, records: Sequence[bytes]) -> int:
        """Queue several records for one socket; returns how many it took."""
        conn = self.connections.get(pid)
        if conn is None:
            return 0
        return conn.queue_unsolicited_batch(records)

    def multicast(self, group_id: int, record: bytes, exclude_pid: int | None = None) -> int:
        """Queue a record for every member of a group; returns how many took it."""
        delivered = 0
        for conn in self.groups.get(group_id, ()):
            if conn.pid != exclude_pid and conn.queue_unsolicited(record):
                delivered += 1
        return delivered

    def group_id(self, family: str, group: str) -> int:
        """The id of a family's multicast group."""
        return self.families_by_name[family].group_ids[group]

    # -- requests ---------------------------------------------------------------------------

    def handle_record(self, conn: Connection, record: bytes) -> None:
        """Process one request record: every message in it, in order; queue what they answer."""
        last_seq = 0
        conn._started_dump = False
        markers = conn.txn_markers  # the setting when the record arrives decides
        off = 0
        size = len(record)
        # Framing inline (this runs for every request): iter_frames' checks, without a generator.
        while off < size:
            left = size - off
            if left < NLMSG_HDRLEN:
                self._framing_error(
                    conn,
                    record,
                    off,
                    errno.EINVAL,
                    f"truncated netlink header: {left} bytes at offset {off}",
                )
                break
            hdr = _unpack_nlhdr(record, off)
            length = hdr[0]
            if length < NLMSG_HDRLEN or length > left:
                if length < NLMSG_HDRLEN:
                    why, code = f"nlmsg_len {length} is shorter than the netlink header", EINVAL
                else:
                    why = f"nlmsg_len {length} runs past the end of the record ({left} bytes left)"
                    code = errno.EMSGSIZE
                last_seq = hdr[3]
                self._framing_error(conn, record, off, code, why)
                break
            last_seq = hdr[3]
            self._handle_message(conn, record, off, off + length, hdr)
            off += (length + 3) & ~3
        if markers:
            if conn._started_dump and conn._dump is not None:
                conn._dump.marker_seq = last_seq
            else:
                conn.queue_reply(encode_noop(last_seq, conn.pid))

    @staticmethod
    def _framing_error(conn: Connection, record: Any, at: int, code: int, reason: str) -> None:
        # The rest of the record cannot be delimited.  Echo whatever header bytes there are
        # (zero-filled) so the client can see what was refused.
        header = bytes(record[at : at + NLMSG_HDRLEN]).ljust(NLMSG_HDRLEN, b"\0")
        conn.queue_reply(encode_error(-code, header, conn.pid, reason, at))

    def _handle_message(
        self, conn: Connection, record: Any, off: int, end: int, hdr: tuple[int, int, int, int, int]
    ) -> None:
        flags = hdr[2]
        mtype = hdr[1]
        if not flags & NLM_F_REQUEST or mtype < NLMSG_MIN_TYPE:
            # Linux ignores what is not a request (and control messages), acking if asked.
            if flags & NLM_F_ACK:
                conn.queue_reply(encode_error(0, record[off : off + NLMSG_HDRLEN], conn.pid))
            return
        try:
            family = self.families.get(mtype)
            if family is None:
                raise NetlinkError(errno.ENOENT, f"no generic netlink family with id {mtype}")
            msg = decode_genl(record, off, end, hdr, family.codec_family)
            command = family.commands.get(msg.cmd)
            if command is None:
                raise NetlinkError(errno.EOPNOTSUPP, f"{family.name}: no command {msg.cmd}")
            is_dump = flags & NLM_F_DUMP == NLM_F_DUMP
            if command.mutating and not conn.privileged:
                raise NetlinkError(
                    errno.EPERM,
                    f"{family.name} {command.name} changes state: needs uid 0 or the admin group",
                )
            if is_dump:
                if command.dump is None:
                    raise NetlinkError(
                        errno.EOPNOTSUPP, f"{family.name} {command.name} cannot be dumped"
                    )
                if conn._dump is not None:
                    raise NetlinkError(errno.EBUSY, "a dump is already in progress on this socket")
                request = Request(self, conn, family, msg, command.name)
                conn._dump = _Dump(family, msg.seq, command.dump(request))
                conn._started_dump = True
                return
            if command.do is None:
                raise NetlinkError(
                    errno.EOPNOTSUPP, f"{family.name} {command.name} needs NLM_F_DUMP"
                )
            if command.required:
                for name in command.required:
                    if name not in msg.attrs:
                        raise einval(f"{family.name} {command.name}: missing attribute {name}")
            request = Request(self, conn, family, msg, command.name)
            replies = command.do(request)
            if replies and (command.always_replies or flags & NLM_F_ECHO):
                genl = family.codec_family
                for reply in replies:
                    reply.type = family.id
                    reply.seq = msg.seq
                    reply.pid = conn.pid
                    conn.queue_reply(encode_genl(reply, genl))
        except NetlinkError as exc:
            conn.queue_reply(
                encode_error(
                    -exc.errno,
                    record[off : off + NLMSG_HDRLEN],
                    conn.pid,
                    exc.reason,
                    None if exc.offset is None else exc.offset - off,
                )
            )
            return
        except Exception as exc:
            # A bug in a handler answers that request with EIO; it never takes the service
            # (and every other client) down with it.
            conn.queue_reply(
                encode_error(
                    -errno.EIO, record[off : off + NLMSG_HDRLEN], conn.pid, _internal_error(exc)
                )
            )
            return
        if flags & NLM_F_ACK:
            conn.queue_reply(encode_error(0, record[off : off + NLMSG_HDRLEN], conn.pid))

    def _next_dump_record(self, conn: Connection) -> bytes:
        """Pack the dump's next messages into one record (its last one ends with DONE)."""
        dump = conn._dump
        assert dump is not None
        genl = dump.family.genl
        parts: list[bytes] = []
        size = 0
        limit = self.dump_record_bytes
        finished = False
        error = 0
        reason = None
        try:
            for msg in dump.iterator:
                msg.type = dump.family.id
                msg.flags |= NLM_F_MULTI
                msg.seq = dump.seq
                msg.pid = conn.pid
                data = encode_genl(msg, genl)
                parts.append(data)
                size += len(data)
                if size >= limit:
                    break
            else:
                finished = True
        except NetlinkError as exc:
            finished, error, reason = True, -exc.errno, exc.reason
        except Exception as exc:
            finished, error, reason = True, -errno.EIO, _internal_error(exc)
        if finished:
            parts.append(encode_done(dump.seq, conn.pid, error, reason))
            conn._dump = None
            if dump.marker_seq is not None:
                conn.queue_reply(encode_noop(dump.marker_seq, conn.pid))
        return b"".join(parts)
