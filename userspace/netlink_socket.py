"""Netlink sockets over the pseudo-device, for userspace (the role of OVS's netlink-socket.c).

A socket is one connection to the service: it learns its PID, resolves families through nlctrl,
runs transactions (one request, or many in one record) matched by sequence number, iterates dumps
as it reads them, joins multicast groups, and receives unsolicited messages (upcalls, events).
It turns the service's transaction markers on, so a transaction is complete when its marker
arrives, even for requests that succeed silently (no ACK, no ECHO), which is how dpif-netlink
sends them.

The logic lives in :class:`Session` (sans-I/O: records in, records out); :class:`NetlinkSocket`
drives it with a blocking socket, :class:`AsyncNetlinkSocket` with trio.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ovsdp.netlink.constants import (
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    CtrlCmd,
)
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.families import NLCTRL, OVS_FAMILIES
from ovsdp.netlink.message import (
    AnyMessage,
    DoneMessage,
    ErrorMessage,
    GenlFamily,
    GenlMessage,
    NoopMessage,
    decode_record,
    encode_genl,
)

DEFAULT_SOCKET = "/run/ovsdp/ovsdp.sock"
CONTROL_FAMILY = "ovsdp_control"
VSWITCH_FAMILY = "ovsdp_vswitch"
MAX_RECORD = 1 << 20

# The attribute space of each family a client may resolve, by family name.
KNOWN_FAMILIES: dict[str, GenlFamily] = {
    f.name: f
    for f in (
        NLCTRL,
        *OVS_FAMILIES,
        GenlFamily(CONTROL_FAMILY, 1, 0, "ovsdp_control"),
        GenlFamily(VSWITCH_FAMILY, 1, 0, "ovsdp_vswitch"),
    )
}

# control family commands (docs/pseudodev.md §5)
CTRL_MC_SUBSCRIBE = 2
CTRL_SOCK_PROP = 6
CTRL_GET_PID = 7
CTRL_SET_PID = 8


class ServiceGone(ConnectionError):
    """The service is not there (not started, stopped, or restarted under us)."""


def default_socket_path() -> str:
    """$OVSDP_SOCKET, else /run/ovsdp/ovsdp.sock."""
    return os.environ.get("OVSDP_SOCKET") or DEFAULT_SOCKET


@dataclass(frozen=True)
class ResolvedFamily:
    """A family as nlctrl describes it, with the attribute space the client decodes it with."""

    id: int
    codec: GenlFamily
    groups: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def version(self) -> int:
        return self.codec.version


@dataclass
class Request:
    """One request of a batch (:meth:`NetlinkSocket.transact_many`)."""

    family: str
    cmd: int
    attrs: Any = field(default_factory=dict)
    flags: int = NLM_F_REQUEST
    dp_ifindex: Any = 0


@dataclass
class Result:
    """What one request of a batch got: its replies, or the error it failed with."""

    replies: list[GenlMessage] = field(default_factory=list)
    error: NetlinkError | None = None


def _is_overrun(msg: AnyMessage) -> bool:
    return isinstance(msg, ErrorMessage) and msg.error == -errno.ENOBUFS and msg.seq == 0


# --- the sans-I/O core --------------------------------------------------------------------------


class Transaction:
    """The replies of one request record, collected until its marker arrives.

    While it waits, the session routes it every message carrying one of its sequence numbers,
    whoever reads them (this task, another task's transaction or dump, or recv).
    """

    def __init__(self, session: Session, seqs: list[int]) -> None:
        self.session = session
        self.results = {s: Result() for s in seqs}
        self.order = seqs
        self.done = False

    def feed(self, messages: list[AnyMessage]) -> None:
        """Messages of one record (for drivers that read on their own): routed by the session."""
        self.session.dispatch(messages)

    def take(self, msg: AnyMessage) -> None:
        """One message carrying one of this transaction's sequence numbers."""
        last = self.order[-1]
        if isinstance(msg, NoopMessage):
            if msg.seq == last:
                self.finish()
            return
        result = self.results[msg.seq]
        if isinstance(msg, ErrorMessage):
            if msg.error:
                result.error = NetlinkError(-msg.error, msg.reason or os.strerror(-msg.error))
        elif isinstance(msg, GenlMessage):
            result.replies.append(msg)
        if not self.session.markers and msg.seq == last:
            # Only while the markers are being turned on: that one request always answers.
            self.finish()

    def finish(self) -> None:
        """Complete (or give up: a timeout, a cancellation); late messages are dropped."""
        self.done = True
        pending = self.session.pending
        for seq in self.order:
            if pending.get(seq) is self:
                del pending[seq]

    def outcome(self) -> list[Result]:
        return [self.results[s] for s in self.order]


class Dump:
    """A dump in progress: messages of its sequence number until DONE and the marker.

    Entries wait in ``entries`` until the driver hands them out; whoever reads a record (the
    dump's iterator, or a request made while the dump runs) gives the dump its messages.
    """

    def __init__(self, session: Session, seq: int) -> None:
        self.session = session
        self.seq = seq
        self.finished = False  # DONE seen
        self.done = False  # marker seen
        self.abandoned = False  # nobody reads the entries any more: drop them
        self.error: NetlinkError | None = None
        self.entries: deque[GenlMessage] = deque()

    def feed(self, messages: list[AnyMessage]) -> None:
        """Messages of one record: the dump's are taken, the others go to the session."""
        seq, keep = self.seq, not (self.finished or self.abandoned)
        append = self.entries.append
        for msg in messages:
            if msg.seq != seq:
                self.session.dispatch((msg,))
            elif keep and type(msg) is GenlMessage:  # the common case, inline
                append(msg)
            else:
                self.take(msg)
                keep = not (self.finished or self.abandoned)

    def take(self, msg: AnyMessage) -> None:
        """One message of this dump."""
        if isinstance(msg, NoopMessage):
            self.done = True
            self.session.forget_dump(self)
        elif isinstance(msg, DoneMessage):
            self.finished = True
            if msg.error:
                self.error = NetlinkError(-msg.error, msg.reason or "dump failed")
        elif isinstance(msg, ErrorMessage):
            if msg.error:
                self.error = NetlinkError(-msg.error, msg.reason or "dump refused")
        elif isinstance(msg, GenlMessage) and not self.finished and not self.abandoned:
            self.entries.append(msg)

    def abandon(self) -> None:
        """The consumer left early: drop what is buffered and whatever still comes."""
        self.abandoned = True
        self.entries.clear()


class Session:
    """What a netlink socket knows: families, sequence numbers, unsolicited messages."""

    def __init__(self) -> None:
        self.seq = itertools.count(1)
        self.pid = 0
        self.by_id: dict[int, GenlFamily] = {GENL_ID_CTRL: NLCTRL}
        self.families: dict[str, ResolvedFamily] = {
            NLCTRL.name: ResolvedFamily(GENL_ID_CTRL, NLCTRL, {"notify": GENL_ID_CTRL})
        }
        self.unsolicited: deque[AnyMessage] = deque()
        self.current_dump: Dump | None = None  # one dump at a time per socket
        self.pending: dict[int, Transaction] = {}  # sequence number -> transaction waiting
        self.markers = False  # the service ends each answer with a marker (NLMSG_NOOP)

    def decode(self, record: Any) -> list[AnyMessage]:
        """A received record's messages."""
        return decode_record(record, self.by_id)

    def encode(self, req: Request, seq: int) -> bytes:
        fam = self.families.get(req.family)
        if fam is None:
            raise KeyError(req.family)
        msg = GenlMessage(
            fam.id,
            req.flags | NLM_F_REQUEST,
            seq,
            self.pid,
            req.cmd,
            fam.version,
            req.dp_ifindex if fam.codec.hdrsize else None,
            req.attrs,
        )
        return encode_genl(msg, fam.codec)

    def transaction(self, requests: Sequence[Request]) -> tuple[bytes, Transaction]:
        """The record to send for a batch of requests, and the state that collects replies."""
        seqs = [next(self.seq) for _ in requests]
        record = b"".join(self.encode(r, s) for r, s in zip(requests, seqs, strict=True))
        txn = Transaction(self, seqs)
        for seq in seqs:
            self.pending[seq] = txn
        return record, txn

    def dump(self, family: str, cmd: int, attrs: Any, dp_ifindex: Any) -> tuple[bytes, Dump]:
        """The record that starts a dump, and the state that reads it (EBUSY while another dump
        of this socket runs, as Linux says)."""
        if self.current_dump is not None:
            raise NetlinkError(errno.EBUSY, "a dump is already in progress on this socket")
        seq = next(self.seq)
        req = Request(family, cmd, attrs or {}, NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK, dp_ifindex)
        record = self.encode(req, seq)
        self.current_dump = Dump(self, seq)
        return record, self.current_dump

    def forget_dump(self, state: Dump) -> None:
        """The dump is over (or given up on): its late messages, if any, are dropped."""
        if self.current_dump is state:
            self.current_dump = None

    def learn(self, reply: dict[str, Any], codec: GenlFamily) -> ResolvedFamily:
        """Remember a family from an nlctrl reply."""
        name = reply["family_name"]
        groups = {g["name"]: g["id"] for g in reply.get("mcast_groups", [])}
        codec = GenlFamily(name, reply["version"], reply["hdrsize"], codec.space, tuple(groups))
        resolved = ResolvedFamily(reply["family_id"], codec, groups)
        self.families[name] = resolved
        self.by_id[resolved.id] = codec
        return resolved

    def codec_for(self, name: str, codec: GenlFamily | None) -> GenlFamily:
        codec = codec or KNOWN_FAMILIES.get(name)
        if codec is None:
            raise ValueError(f"no attribute space known for family {name!r}: pass codec=")
        return codec

    def group_id(self, family: str, group: str) -> int:
        fam = self.families[family]
        try:
            return fam.groups[group]
        except KeyError:
            raise NetlinkError(errno.ENOENT, f"family {family} has no group {group!r}") from None

    def dispatch(self, messages: Sequence[AnyMessage]) -> None:
        """The messages of one received record, each to whoever waits for it: a transaction
        (by sequence number), the dump in progress, or recv (unsolicited: upcalls, events,
        overruns, all with sequence number 0).  Anything else is the late answer of a request
        given up on (a timeout, a cancellation): dropped."""
        pending, dump = self.pending, self.current_dump
        for msg in messages:
            seq = msg.seq
            if seq == 0:
                self.unsolicited.append(msg)
            elif (txn := pending.get(seq)) is not None:
                txn.take(msg)
            elif dump is not None and seq == dump.seq:
                dump.take(msg)
                dump = self.current_dump

    def stash(self, msg: AnyMessage) -> None:
        """One message nobody in particular waited for (see :meth:`dispatch`)."""
        self.dispatch((msg,))

    def take_unsolicited(self) -> list[AnyMessage]:
        """What recv returns: queued messages up to an overrun, which is raised on its own."""
        out: list[AnyMessage] = []
        while self.unsolicited:
            msg = self.unsolicited.popleft()
            if _is_overrun(msg):
                if out:
                    self.unsolicited.appendleft(msg)
                    return out
                assert isinstance(msg, ErrorMessage)
                raise NetlinkError(errno.ENOBUFS, msg.reason or "receive queue overrun")
            out.append(msg)
        return out


def _result(results: list[Result]) -> list[GenlMessage]:
    (result,) = results
    if result.error is not None:
        raise result.error
    return result.replies


# --- the blocking driver ----------------------------------------------------------------------


class NetlinkSocket:
    """One netlink socket instance on the pseudo-device (blocking API)."""

    def __init__(self, path: str | None = None, *, timeout: float | None = 30.0) -> None:
        self.path = path or default_socket_path()
        self.timeout = timeout
        self.session = Session()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ServiceGone(
                f"no ovsdp service on {self.path} ({os.strerror(exc.errno or 0)})"
            ) from None
        except PermissionError:
            sock.close()
            raise
        self.sock = sock
        self._buffer = bytearray(MAX_RECORD)
        control = self.family(CONTROL_FAMILY)
        props = self.transact(control.name, CTRL_SOCK_PROP, {"txn_markers": 1})[0].attrs
        self.session.pid = props["sock_pid"]
        self.session.markers = True
        # Learn every family the service has that this client can decode, so unsolicited
        # messages (upcalls, events) of any of them can be read.
        for reply in self.dump(NLCTRL.name, CtrlCmd.GETFAMILY):
            codec = KNOWN_FAMILIES.get(reply.attrs.get("family_name", ""))
            if codec is not None and codec.name not in self.session.families:
                self.session.learn(reply.attrs, codec)

    # state kept in the session, under the names tests and older callers use
    @property
    def pid(self) -> int:
        return self.session.pid

    @pid.setter
    def pid(self, value: int) -> None:
        self.session.pid = value

    @property
    def _families(self) -> dict[str, ResolvedFamily]:
        return self.session.families

    @property
    def _unsolicited(self) -> deque[AnyMessage]:
        return self.session.unsolicited

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (the service frees the PID and everything queued)."""
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The socket's file descriptor (for select/poll)."""
        return self.sock.fileno()

    # -- I/O ----------------------------------------------------------------------------------

    def _send(self, record: bytes) -> None:
        try:
            self.sock.sendall(record)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ServiceGone(f"the ovsdp service on {self.path} went away ({exc})") from None
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise NetlinkError(
                    errno.EMSGSIZE, f"request of {len(record)} bytes is too big"
                ) from None
            raise

    def _read_record(self, timeout: float | None) -> list[AnyMessage]:
        """Block for one record (TimeoutError after ``timeout`` seconds) and decode it."""
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
            if not ready:
                raise TimeoutError("no message from the service in time")
        try:
            nbytes = self.sock.recv_into(self._buffer)
        except ConnectionResetError:
            nbytes = 0
        if nbytes == 0:
            raise ServiceGone(f"the ovsdp service on {self.path} closed the connection")
        return self.session.decode(memoryview(self._buffer)[:nbytes])

    def _deadline_left(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    # -- families ---------------------------------------------------------------------------

    def family(self, name: str, codec: GenlFamily | None = None) -> ResolvedFamily:
        """Resolve a family by name through nlctrl (cached); ENOENT if the service has none."""
        known = self.session.families.get(name)
        if known is not None:
            return known
        codec = self.session.codec_for(name, codec)
        reply = self.transact(NLCTRL.name, CtrlCmd.GETFAMILY, {"family_name": name})[0].attrs
        return self.session.learn(reply, codec)

    # -- transactions -------------------------------------------------------------------------

    def transact(
        self, family: str, cmd: int, attrs: Any = None, *, flags: int = 0, dp_ifindex: Any = 0
    ) -> list[GenlMessage]:
        """Send one request and return its replies; raise NetlinkError if it failed."""
        return _result(self.transact_many([Request(family, cmd, attrs or {}, flags, dp_ifindex)]))

    def transact_many(self, requests: Sequence[Request]) -> list[Result]:
        """Send several requests in one record; each gets its replies or its error.

        Requests are handled in order; one failing does not stop the others (as Linux handles
        the messages of one datagram).
        """
        for req in requests:
            self.family(req.family)
        record, txn = self.session.transaction(requests)
        try:
            self._send(record)
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            while not txn.done:
                self.session.dispatch(self._read_record(self._deadline_left(deadline)))
        finally:
            txn.finish()
        return txn.outcome()

    def dump(
        self, family: str, cmd: int, attrs: Any = None, *, dp_ifindex: Any = 0
    ) -> Iterator[GenlMessage]:
        """Iterate a dump, reading records as it goes.  Leaving the loop early drains the rest
        (a socket can run one dump at a time, and its remains would confuse later requests).
        Requests made while the dump runs are fine: their reads hand the dump its messages."""
        self.family(family)
        record, state = self.session.dump(family, cmd, attrs, dp_ifindex)
        try:
            self._send(record)
        except BaseException:
            self.session.forget_dump(state)
            raise
        try:
            while True:
                while state.entries:
                    yield state.entries.popleft()
                if state.done:
                    break
                state.feed(self._read_record(self.timeout))
            if state.error is not None:
                raise state.error
        finally:
            state.abandon()
            try:
                while not state.done:  # the consumer stopped early: read the dump to its end
                    state.feed(self._read_record(self.timeout))
            finally:
                self.session.forget_dump(state)

    # -- socket properties and groups -------------------------------------------------------

    def properties(self, **changes: int) -> dict[str, Any]:
        """Read (and optionally change: txn_markers, rxq_limit) the socket's properties."""
        attrs: dict[str, Any] = self.transact(CONTROL_FAMILY, CTRL_SOCK_PROP, changes)[0].attrs
        return attrs

    def claim_pid(self, pid: int) -> None:
        """Take a specific PID, as bind() does (EADDRINUSE if another socket holds it)."""
        reply = self.transact(CONTROL_FAMILY, CTRL_SET_PID, {"sock_pid": pid})[0]
        self.session.pid = reply.attrs["sock_pid"]

    def group_id(self, family: str, group: str) -> int:
        """The id of a family's multicast group."""
        self.family(family)
        return self.session.group_id(family, group)

    def join(self, family: str, group: str) -> None:
        """Join a multicast group."""
        gid = self.group_id(family, group)
        self.transact(
            CONTROL_FAMILY, CTRL_MC_SUBSCRIBE, {"mcast_grp": gid, "mcast_join": 1}, flags=NLM_F_ACK
        )

    def leave(self, family: str, group: str) -> None:
        """Leave a multicast group."""
        gid = self.group_id(family, group)
        self.transact(
            CONTROL_FAMILY, CTRL_MC_SUBSCRIBE, {"mcast_grp": gid, "mcast_join": 0}, flags=NLM_F_ACK
        )

    # -- unsolicited messages -----------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> list[AnyMessage]:
        """Unsolicited messages (upcalls, events): what is queued, else wait up to ``timeout``.

        Raises NetlinkError(ENOBUFS) when the service dropped messages for this socket (its
        queue overflowed): what arrived before the overrun has been returned by earlier calls;
        the caller should resynchronise (re-read state) and call again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.session.unsolicited:
            try:
                self.session.dispatch(self._read_record(self._deadline_left(deadline)))
            except TimeoutError:
                return []
            self._drain_nonblocking()
        return self.session.take_unsolicited()

    def _drain_nonblocking(self) -> None:
        while True:
            try:
                messages = self._read_record(0)
            except TimeoutError:
                return
            self.session.dispatch(messages)


# --- the trio driver --------------------------------------------------------------------------


class AsyncNetlinkSocket:
    """The same socket for trio code: ``sock = await AsyncNetlinkSocket.connect(path)``.

    Several tasks may use one socket at once (a task waiting in :meth:`recv` while others run
    transactions and dumps): one of them at a time reads a record and the session routes its
    messages to whoever waits for them; the others wait for that read to finish.
    """

    def __init__(self, path: str, sock: trio.socket.SocketType) -> None:
        self.path = path
        self.sock = sock
        self.session = Session()
        self._send_lock = trio.Lock()  # trio refuses two tasks sending on one socket at once
        self._reading = False  # a task is reading a record
        self._read_done = trio.Event()  # set (and replaced) when that read ends
        self._dump_owner: weakref.ref[AsyncDump] | None = None  # the iterator of the dump

    @classmethod
    async def connect(cls, path: str | None = None) -> AsyncNetlinkSocket:
        """Connect, learn the PID, turn the markers on, learn the service's families."""
        path = path or default_socket_path()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            await sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ServiceGone(
                f"no ovsdp service on {path} ({os.strerror(exc.errno or 0)})"
            ) from None
        self = cls(path, sock)
        await self.family(CONTROL_FAMILY)
        props = (await self.transact(CONTROL_FAMILY, CTRL_SOCK_PROP, {"txn_markers": 1}))[0].attrs
        self.session.pid = props["sock_pid"]
        self.session.markers = True
        async for reply in self.dump(NLCTRL.name, CtrlCmd.GETFAMILY):
            codec = KNOWN_FAMILIES.get(reply.attrs.get("family_name", ""))
            if codec is not None and codec.name not in self.session.families:
                self.session.learn(reply.attrs, codec)
        return self

    @property
    def pid(self) -> int:
        return self.session.pid

    @property
    def markers(self) -> bool:
        return self.session.markers

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    async def __aenter__(self) -> AsyncNetlinkSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _send(self, record: bytes) -> None:
        try:
            async with self._send_lock:
                await self.sock.send(record)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ServiceGone(f"the ovsdp service on {self.path} went away ({exc})") from None
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise NetlinkError(
                    errno.EMSGSIZE, f"request of {len(record)} bytes is too big"
                ) from None
            raise

    async def _pump(self) -> None:
        """Read one record and route its messages; if another task is reading, wait until its
        read ends instead (its record may hold what the caller waits for)."""
        if self._reading:
            await self._read_done.wait()
            return
        self._reading = True
        try:
            data = await self.sock.recv(MAX_RECORD)
        except ConnectionResetError:
            data = b""
        finally:
            self._reading = False
            done, self._read_done = self._read_done, trio.Event()
            done.set()
        if not data:
            raise ServiceGone(f"the ovsdp service on {self.path} closed the connection")
        self.session.dispatch(self.session.decode(data))

    async def _settle(self) -> None:
        """Read to its end a dump whose iterator was dropped unfinished (a ``break`` out of
        ``async for`` without ``aclosing``), so the socket can dump again."""
        state = self.session.current_dump
        owner = self._dump_owner
        if state is None or owner is None or owner() is not None:
            return
        state.abandon()
        while not state.done:
            await self._pump()

    async def family(self, name: str, codec: GenlFamily | None = None) -> ResolvedFamily:
        """Resolve a family by name through nlctrl (cached)."""
        known = self.session.families.get(name)
        if known is not None:
            return known
        codec = self.session.codec_for(name, codec)
        reply = (await self.transact(NLCTRL.name, CtrlCmd.GETFAMILY, {"family_name": name}))[0]
        return self.session.learn(reply.attrs, codec)

    async def transact(
        self, family: str, cmd: int, attrs: Any = None, *, flags: int = 0, dp_ifindex: Any = 0
    ) -> list[GenlMessage]:
        """Send one request and return its replies; raise NetlinkError if it failed."""
        return _result(
            await self.transact_many([Request(family, cmd, attrs or {}, flags, dp_ifindex)])
        )

    async def transact_many(self, requests: Sequence[Request]) -> list[Result]:
        """Several requests in one record; each gets its replies or its error."""
        for req in requests:
            await self.family(req.family)
        await self._settle()
        record, txn = self.session.transaction(requests)
        try:
            await self._send(record)
            while not txn.done:
                await self._pump()
        finally:
            txn.finish()
        return txn.outcome()

    def dump(self, family: str, cmd: int, attrs: Any = None, *, dp_ifindex: Any = 0) -> AsyncDump:
        """Iterate a dump as it is read: ``async for entry in sock.dump(...)``.

        Leaving early drains the rest: at once with ``async with aclosing(sock.dump(...))`` (or
        ``async with sock.dump(...) as entries``), else when the socket is next used.
        One dump at a time per socket: another task's dump meanwhile is EBUSY, as on Linux.
        """
        return AsyncDump(self, family, cmd, attrs, dp_ifindex)

    async def _start_dump(self, owner: AsyncDump) -> Dump:
        await self.family(owner.family)
        await self._settle()
        record, state = self.session.dump(owner.family, owner.cmd, owner.attrs, owner.dp_ifindex)
        self._dump_owner = weakref.ref(owner)
        try:
            await self._send(record)
        except BaseException:
            self.session.forget_dump(state)
            raise
        return state

    async def properties(self, **changes: int) -> dict[str, Any]:
        """Read (and optionally change: txn_markers, rxq_limit) the socket's properties."""
        replies = await self.transact(CONTROL_FAMILY, CTRL_SOCK_PROP, changes)
        attrs: dict[str, Any] = replies[0].attrs
        return attrs

    async def claim_pid(self, pid: int) -> None:
        """Take a specific PID, as bind() does (EADDRINUSE if another socket holds it)."""
        reply = (await self.transact(CONTROL_FAMILY, CTRL_SET_PID, {"sock_pid": pid}))[0]
        self.session.pid = reply.attrs["sock_pid"]

    async def join(self, family: str, group: str) -> None:
        """Join a multicast group."""
        await self.family(family)
        gid = self.session.group_id(family, group)
        await self.transact(
            CONTROL_FAMILY, CTRL_MC_SUBSCRIBE, {"mcast_grp": gid, "mcast_join": 1}, flags=NLM_F_ACK
        )

    async def leave(self, family: str, group: str) -> None:
        """Leave a multicast group."""
        await self.family(family)
        gid = self.session.group_id(family, group)
        await self.transact(
            CONTROL_FAMILY, CTRL_MC_SUBSCRIBE, {"mcast_grp": gid, "mcast_join": 0}, flags=NLM_F_ACK
        )

    async def recv(self) -> list[AnyMessage]:
        """Wait for unsolicited messages (wrap in trio.move_on_after for a timeout); raises
        NetlinkError(ENOBUFS) after an overrun, as the blocking recv does.  Other tasks may
        use the socket meanwhile."""
        await self._settle()
        while not self.session.unsolicited:
            await self._pump()
        return self.session.take_unsolicited()


class AsyncDump:
    """A dump of an :class:`AsyncNetlinkSocket`: an async iterator of its entries, and an async
    context manager (or ``aclose``) that reads the rest when the consumer leaves early."""

    def __init__(
        self, sock: AsyncNetlinkSocket, family: str, cmd: int, attrs: Any, dp_ifindex: Any
    ) -> None:
        self.sock = sock
        self.family = family
        self.cmd = cmd
        self.attrs = attrs
        self.dp_ifindex = dp_ifindex
        self._state: Dump | None = None
        self._closed = False

    def __aiter__(self) -> AsyncDump:
        return self

    async def __anext__(self) -> GenlMessage:
        if self._closed:
            raise StopAsyncIteration
        if self._state is None:
            self._state = await self.sock._start_dump(self)
        state = self._state
        while not state.entries:
            if state.done:
                self._closed = True
                if state.error is not None:
                    raise state.error
                raise StopAsyncIteration
            await self.sock._pump()
        return state.entries.popleft()

    async def aclose(self) -> None:
        """Stop: read what is left of the dump (shielded from cancellation)."""
        self._closed = True
        state = self._state
        if state is None or state.done:
            return
        state.abandon()
        with trio.CancelScope(shield=True):
            while not state.done:
                await self.sock._pump()

    async def __aenter__(self) -> AsyncDump:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
